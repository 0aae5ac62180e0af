"""The executor's kernels (netdsl/exec/kernels/) against finite differences
(float64) and PyTorch (float32): the pure functions the registered kernels run.

Every op gets (a) a central-difference gradient check in float64 of
L = sum(forward(...) * R) for a fixed random R, and (b) a comparison of its
output and gradients with the same computation in real PyTorch.
"""

import os
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from netdsl.exec import init, losses  # noqa: E402
from netdsl.exec.kernels import (activation, conv, cosine, dense, dropout, elementwise, embedding,  # noqa: E402
                                 lstm, lstm_peephole, norm, pool, shape, stabilizer)

FD_STEP = 1e-6
FD_TOL = 1e-6
TORCH_TOL = 1e-5


# ---------------------------------------------------------------- helpers

def rng_for(*key):
    # crc32 of the repr, not hash(): str hashes change between runs.
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def assert_close(ours, ref, tol=TORCH_TOL, what=""):
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
    scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
    err = float(np.abs(ours - ref).max()) if ref.size else 0.0
    assert err <= tol * scale, f"{what}: max abs error {err:.3g} > {tol * scale:.3g}"


def fd_check(forward, args, wrt, analytic, R):
    """Central differences of sum(forward(*args)[0] * R) w.r.t. args[i] for i in wrt.

    args entries in wrt are float64 arrays perturbed in place.
    """
    def loss():
        return float(np.sum(forward(*args)[0] * R))

    for i, g in zip(wrt, analytic):
        a = args[i]
        num = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            old = a[idx]
            a[idx] = old + FD_STEP
            lp = loss()
            a[idx] = old - FD_STEP
            lm = loss()
            a[idx] = old
            num[idx] = (lp - lm) / (2 * FD_STEP)
        assert_close(g, num, FD_TOL, what=f"gradient of argument {i}")


def T(a, grad=True):
    return torch.tensor(np.asarray(a), requires_grad=grad)


def grads_of(*tensors):
    return [t.grad.numpy() for t in tensors]


def normal(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


def away_from_zero(rng, shape, dtype=np.float64):
    """Values with |v| >= 0.1, so ReLU kinks stay far from the FD step."""
    return (rng.uniform(0.1, 1.0, shape) * rng.choice([-1, 1], shape)).astype(dtype)


def torch_act(z, kind, feature_dim):
    if kind is None:
        return z
    if kind == "softmax":
        return F.softmax(z, dim=feature_dim)
    return {"relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[kind](z)


KINDS = [None, "relu", "sigmoid", "tanh", "softmax"]


# ------------------------------------------------------------ activations

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4), (2, 3, 2, 2)])
def test_activation(kind, shape):
    rng = rng_for("act", kind, shape)
    x = away_from_zero(rng, shape)
    R = normal(rng, shape)
    y, cache = activation.activation_forward(x, kind)
    fd_check(activation.activation_forward, [x, kind], [0], [activation.activation_backward(R, cache)], R)

    x32, R32 = x.astype(np.float32), R.astype(np.float32)
    y, cache = activation.activation_forward(x32, kind)
    assert y.dtype == np.float32
    xt = T(x32)
    yt = torch_act(xt, kind, 1 if len(shape) == 4 else -1)
    (yt * T(R32, False)).sum().backward()
    assert_close(y, yt.detach(), what="y")
    assert_close(activation.activation_backward(R32, cache), xt.grad, what="dx")


def test_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation"):
        activation.activation_forward(np.zeros(3), "selu")


# ------------------------------------------------------------------ dense

@pytest.mark.parametrize("activation", [None, "relu", "softmax"])
@pytest.mark.parametrize("xshape", [(3, 4), (2, 3, 4)])
@pytest.mark.parametrize("bias", [True, False])
def test_dense(xshape, activation, bias):
    rng = rng_for("dense", xshape, activation, bias)
    x = normal(rng, xshape)
    W = normal(rng, (5, 4))
    b = normal(rng, (5,)) if bias else None
    lead = len(xshape) - 1  # samples, or samples and time steps
    y, cache = dense.dense_forward(x, W, b, activation, lead)
    assert y.shape == xshape[:-1] + (5,)
    R = normal(rng, y.shape)
    dx, dW, db = dense.dense_backward(R, cache)
    args = [x, W, b, activation, lead]
    fd_check(dense.dense_forward, args, [0, 1, 2] if bias else [0, 1],
             [dx, dW, db] if bias else [dx, dW], R)
    if not bias:
        assert db is None

    x32, W32, R32 = (a.astype(np.float32) for a in (x, W, R))
    b32 = b.astype(np.float32) if bias else None
    y, cache = dense.dense_forward(x32, W32, b32, activation, lead)
    dx, dW, db = dense.dense_backward(R32, cache)
    xt, Wt = T(x32), T(W32)
    bt = T(b32) if bias else None
    yt = torch_act(F.linear(xt, Wt, bt), activation, -1)
    (yt * T(R32, False)).sum().backward()
    assert y.dtype == np.float32
    assert_close(y, yt.detach(), what="y")
    assert_close(dx, xt.grad, what="dx")
    assert_close(dW, Wt.grad, what="dW")
    if bias:
        assert_close(db, bt.grad, what="db")


@pytest.mark.parametrize("lead,xshape", [(1, (3, 2, 3)), (2, (2, 3, 2, 3))])
def test_dense_tensor_shape(lead, xshape):
    """Dense((2, 3)) on a (2, 3) tensor: flattened in, W (6, 6), each output row reshaped row-major to (2, 3)."""
    rng = rng_for("dense_tensor", xshape)
    x, W, b = normal(rng, xshape), normal(rng, (6, 6)), normal(rng, (6,))
    y, cache = dense.dense_forward(x, W, b, "tanh", lead, (2, 3))
    assert y.shape == xshape[:lead] + (2, 3)
    R = normal(rng, y.shape)
    dx, dW, db = dense.dense_backward(R, cache)
    fd_check(dense.dense_forward, [x, W, b, "tanh", lead, (2, 3)], [0, 1, 2], [dx, dW, db], R)
    xt, Wt, bt = T(x), T(W), T(b)
    yt = torch.tanh(F.linear(xt.flatten(lead), Wt, bt)).unflatten(-1, (2, 3))
    (yt * T(R, False)).sum().backward()
    assert_close(y, yt.detach(), what="y")
    for got, want, what in ((dx, xt.grad, "dx"), (dW, Wt.grad, "dW"), (db, bt.grad, "db")):
        assert_close(got, want, what=what)


# ------------------------------------------------------------------- conv

CONV_CASES = [
    ((1, 1), ((0, 0), (0, 0))),
    ((1, 1), ((1, 1), (1, 1))),
    ((2, 2), ((0, 0), (0, 0))),
    ((2, 2), ((0, 1), (0, 1))),
    ((1, 1), ((1, 1), (2, 0))),
    ((2, 1), ((1, 1), (2, 0))),
    ((1, 2), ((0, 1), (0, 1))),
]


def torch_pad(x, pads, value=0.0):
    (t, b), (l, r) = pads
    return F.pad(x, (l, r, t, b), value=value)


@pytest.mark.parametrize("strides,pads", CONV_CASES)
@pytest.mark.parametrize("activation,bias", [(None, True), ("relu", True), ("relu", False), (None, False), ("tanh", True)])
def test_conv2d(strides, pads, activation, bias):
    rng = rng_for("conv", strides, pads, activation, bias)
    # Non-square kernel and input catch transposed axes.
    x = normal(rng, (2, 2, 5, 6))
    W = normal(rng, (3, 2, 3, 2))
    b = normal(rng, (3,)) if bias else None
    check_conv2d(rng, x, W, b, strides, pads, activation)


@pytest.mark.parametrize("strides,pads", CONV_CASES[:2])
def test_conv2d_more_channels_than_patch_values(strides, pads):
    """A one-channel first layer: fewer patch values (9) than output channels (12) takes the weight
    gradient's other GEMM orientation."""
    rng = rng_for("conv-wide", strides, pads)
    x, W, b = normal(rng, (2, 1, 6, 5)), normal(rng, (12, 1, 3, 3)), normal(rng, (12,))
    check_conv2d(rng, x, W, b, strides, pads, "relu")


def check_conv2d(rng, x, W, b, strides, pads, activation):
    """Finite differences in float64, then float32 against torch."""
    bias = b is not None
    y, cache = conv.conv2d_forward(x, W, b, strides, pads, activation)
    (pt, pb), (pl, pr) = pads
    kh, kw = W.shape[2:]
    assert y.shape == (x.shape[0], W.shape[0], (x.shape[2] + pt + pb - kh) // strides[0] + 1,
                       (x.shape[3] + pl + pr - kw) // strides[1] + 1)
    R = normal(rng, y.shape)
    dx, dW, db = conv.conv2d_backward(R, cache)
    wrt, grads = ([0, 1, 2], [dx, dW, db]) if bias else ([0, 1], [dx, dW])
    fd_check(conv.conv2d_forward, [x, W, b, strides, pads, activation], wrt, grads, R)

    x32, W32, R32 = (a.astype(np.float32) for a in (x, W, R))
    b32 = b.astype(np.float32) if bias else None
    y, cache = conv.conv2d_forward(x32, W32, b32, strides, pads, activation)
    dx, dW, db = conv.conv2d_backward(R32, cache)
    xt, Wt = T(x32), T(W32)
    bt = T(b32) if bias else None
    yt = torch_act(F.conv2d(torch_pad(xt, pads), Wt, bt, stride=strides), activation, 1)
    (yt * T(R32, False)).sum().backward()
    assert y.dtype == dx.dtype == dW.dtype == np.float32
    assert_close(y, yt.detach(), what="y")
    assert_close(dx, xt.grad, what="dx")
    assert_close(dW, Wt.grad, what="dW")
    if bias:
        assert_close(db, bt.grad, what="db")


@pytest.mark.parametrize("strides,pads", CONV_CASES[4:6])
def test_conv2d_in_chunks_of_samples(strides, pads, monkeypatch):
    """One sample per chunk (CHUNK_BYTES = 1) gives what one chunk for the whole batch gives."""
    monkeypatch.setattr(conv, "_blas_threads", lambda: 1)  # chunks are for one BLAS thread only
    rng = rng_for("conv-chunks", strides, pads)
    x, W, b = normal(rng, (3, 2, 5, 6)), normal(rng, (4, 2, 3, 2)), normal(rng, (4,))
    results = []
    for chunk in (1, 1 << 30):
        monkeypatch.setattr(conv, "CHUNK_BYTES", chunk)
        y, cache = conv.conv2d_forward(x, W, b, strides, pads, "relu")
        results.append((y, *conv.conv2d_backward(np.cos(y), cache)))
    for one, whole in zip(*results):
        np.testing.assert_allclose(one, whole, rtol=1e-12, atol=1e-14)


def test_conv2d_fused_relu_matches_unfused():
    rng = rng_for("fused")
    x = normal(rng, (2, 3, 7, 7), np.float32)
    W = normal(rng, (4, 3, 3, 3), np.float32)
    b = normal(rng, (4,), np.float32)
    fused, _ = conv.conv2d_forward(x, W, b, (1, 1), ((1, 1), (1, 1)), "relu")
    z, _ = conv.conv2d_forward(x, W, b, (1, 1), ((1, 1), (1, 1)), None)
    np.testing.assert_array_equal(fused, np.maximum(z, 0))


def test_conv2d_channel_mismatch():
    with pytest.raises(ValueError, match="channels"):
        conv.conv2d_forward(np.zeros((1, 2, 4, 4)), np.zeros((3, 1, 2, 2)))


# ---------------------------------------------------------------- pooling

# (window, strides, pads): plain, overlapping with padding, asymmetric pads.
POOL_CASES = [
    ((2, 2), (2, 2), ((0, 0), (0, 0))),
    ((3, 3), (1, 1), ((1, 1), (1, 1))),
    ((3, 3), (2, 2), ((1, 1), (1, 1))),
    ((2, 3), (1, 2), ((0, 0), (0, 0))),
    ((3, 3), (2, 2), ((0, 1), (1, 0))),
    ((2, 2), (1, 1), ((0, 1), (0, 1))),
]


def torch_max_pool(xt, window, strides, pads):
    (t, b), (l, r) = pads
    if t == b and l == r:
        return F.max_pool2d(xt, window, strides, padding=(t, l))
    return F.max_pool2d(torch_pad(xt, pads, -np.inf), window, strides)


def torch_avg_pool(xt, window, strides, pads):
    (t, b), (l, r) = pads
    if t == b and l == r:
        return F.avg_pool2d(xt, window, strides, padding=(t, l), count_include_pad=False)
    # Asymmetric: window sums of the zero-padded input over counts of real cells.
    sums = F.avg_pool2d(torch_pad(xt, pads), window, strides)
    counts = F.avg_pool2d(torch_pad(torch.ones_like(xt), pads), window, strides)
    return sums / counts


@pytest.mark.parametrize("window,strides,pads", POOL_CASES)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool(kind, window, strides, pads):
    fwd, bwd, ref = {
        "max": (pool.max_pool2d_forward, pool.max_pool2d_backward, torch_max_pool),
        "avg": (pool.avg_pool2d_forward, pool.avg_pool2d_backward, torch_avg_pool),
    }[kind]
    rng = rng_for("pool", kind, window, strides, pads)
    # A permutation keeps all values distinct (>= 0.1 apart), so the FD step never flips a max.
    x = (rng.permutation(2 * 2 * 6 * 7).reshape(2, 2, 6, 7) * 0.1).astype(np.float64)
    y, cache = fwd(x, window, strides, pads)
    R = normal(rng, y.shape)
    fd_check(fwd, [x, window, strides, pads], [0], [bwd(R, cache)], R)

    x32, R32 = x.astype(np.float32), R.astype(np.float32)
    y, cache = fwd(x32, window, strides, pads)
    dx = bwd(R32, cache)
    xt = T(x32)
    yt = ref(xt, window, strides, pads)
    (yt * T(R32, False)).sum().backward()
    assert y.dtype == dx.dtype == np.float32
    assert_close(y, yt.detach(), what="y")
    assert_close(dx, xt.grad, what="dx")


@pytest.mark.parametrize("window,strides,pads", POOL_CASES)
@pytest.mark.parametrize("data", ["zeros", "repeated"])
def test_max_pool_ties_go_to_first_max(data, window, strides, pads):
    rng = rng_for("ties", data, window, strides, pads)
    if data == "zeros":
        x = np.zeros((2, 2, 6, 7), np.float32)
    else:
        x = rng.integers(0, 3, (2, 2, 6, 7)).astype(np.float32)
    y, cache = pool.max_pool2d_forward(x, window, strides, pads)
    R = rng.uniform(0.5, 1.5, y.shape).astype(np.float32)
    dx = pool.max_pool2d_backward(R, cache)
    xt = T(x)
    yt = torch_max_pool(xt, window, strides, pads)
    (yt * T(R, False)).sum().backward()
    assert_close(y, yt.detach(), what="y")
    assert_close(dx, xt.grad, what="dx")
    # Each window hands its whole gradient to exactly one cell.
    np.testing.assert_allclose(dx.sum(), R.sum(), rtol=1e-5)


def test_max_pool_all_zero_window_picks_first_cell():
    x = np.zeros((1, 1, 2, 2), np.float32)
    y, cache = pool.max_pool2d_forward(x, (2, 2), (2, 2))
    dx = pool.max_pool2d_backward(np.ones_like(y), cache)
    np.testing.assert_array_equal(dx[0, 0], [[1, 0], [0, 0]])


def test_max_pool_never_selects_padding():
    x = -np.ones((1, 1, 3, 3), np.float32)  # all below the 0 a zero pad would hold
    y, _ = pool.max_pool2d_forward(x, (3, 3), (1, 1), ((1, 1), (1, 1)))
    np.testing.assert_array_equal(y, -np.ones((1, 1, 3, 3)))


def test_avg_pool_counts_only_real_cells():
    x = np.ones((1, 1, 3, 3), np.float32)
    y, _ = pool.avg_pool2d_forward(x, (3, 3), (1, 1), ((1, 1), (1, 1)))
    np.testing.assert_array_equal(y, np.ones((1, 1, 3, 3)))


# ---------------------------------------------------------------- dropout

def test_dropout_eval_is_identity():
    x = normal(rng_for("do-eval"), (4, 5), np.float32)
    y, cache = dropout.dropout_forward(x, 0.5, False, np.random.default_rng(0))
    np.testing.assert_array_equal(y, x)
    dy = np.ones_like(x)
    np.testing.assert_array_equal(dropout.dropout_backward(dy, cache), dy)


def test_dropout_training_scale():
    rate = 0.3
    x = np.ones((400, 250), np.float32)
    y, cache = dropout.dropout_forward(x, rate, True, np.random.default_rng(1))
    assert y.dtype == np.float32
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / (1 - rate), rtol=1e-6)
    assert abs(1 - kept.mean() - rate) < 0.01  # drop fraction is the rate
    assert abs(y.mean() - 1) < 0.02  # inverted dropout keeps the expectation
    dy = normal(rng_for("do-dy"), x.shape, np.float32)
    np.testing.assert_allclose(dropout.dropout_backward(dy, cache), dy * y, rtol=1e-6)

    # torch uses the same convention: survivors scaled by 1/(1 - p).
    yt = F.dropout(torch.ones(400, 250), rate, training=True).numpy()
    np.testing.assert_allclose(yt[yt != 0], 1 / (1 - rate), rtol=1e-6)
    assert abs((yt == 0).mean() - rate) < 0.01


def test_dropout_gradient_fd():
    rng = rng_for("do-fd")
    x = normal(rng, (3, 4))

    def fwd(x):  # a fresh generator per call keeps the mask fixed
        return dropout.dropout_forward(x, 0.4, True, np.random.default_rng(7))

    y, cache = fwd(x)
    R = normal(rng, y.shape)
    fd_check(fwd, [x], [0], [dropout.dropout_backward(R, cache)], R)


def test_dropout_edge_rates():
    x = np.ones((3, 3), np.float32)
    y, _ = dropout.dropout_forward(x, 0.0, True, np.random.default_rng(0))
    np.testing.assert_array_equal(y, x)
    y, _ = dropout.dropout_forward(x, 1.0, True, np.random.default_rng(0))
    np.testing.assert_array_equal(y, 0)
    with pytest.raises(ValueError):
        dropout.dropout_forward(x, 1.5, True, np.random.default_rng(0))


# ------------------------------------------------------------- batch norm

BN_SHAPES = [(4, 3, 2, 3), (6, 3), (3, 4, 3)]


def torch_bn_layout(t):
    # torch wants channels on axis 1; our sequences keep features last.
    return t.transpose(1, 2) if t.dim() == 3 else t


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm(shape, training):
    rng = rng_for("bn", shape, training)
    c = shape[1] if len(shape) == 4 else shape[-1]
    x = normal(rng, shape) * 2 + 0.5
    scale = rng.uniform(0.5, 1.5, c)
    bias = normal(rng, (c,))
    rm = normal(rng, (c,)) * 0.1
    rv = rng.uniform(0.5, 2.0, c)
    y, cache, nm, nv = norm.batch_norm_forward(x, scale, bias, rm, rv, 0.1, 1e-5, training)
    R = normal(rng, y.shape)
    dx, dscale, dbias = norm.batch_norm_backward(R, cache)
    fwd = lambda x, s, b: norm.batch_norm_forward(x, s, b, rm, rv, 0.1, 1e-5, training)  # noqa: E731
    fd_check(fwd, [x, scale, bias], [0, 1, 2], [dx, dscale, dbias], R)

    f32 = [a.astype(np.float32) for a in (x, scale, bias, rm, rv, R)]
    x32, s32, b32, rm32, rv32, R32 = f32
    rm_before, rv_before = rm32.copy(), rv32.copy()
    y, cache, nm, nv = norm.batch_norm_forward(x32, s32, b32, rm32, rv32, 0.1, 1e-5, training)
    dx, dscale, dbias = norm.batch_norm_backward(R32, cache)
    np.testing.assert_array_equal(rm32, rm_before)  # inputs are not mutated
    np.testing.assert_array_equal(rv32, rv_before)
    xt, st, bt = T(x32), T(s32), T(b32)
    rmt, rvt = torch.tensor(rm32), torch.tensor(rv32)
    yt = F.batch_norm(torch_bn_layout(xt), rmt, rvt, st, bt, training=training, momentum=0.1, eps=1e-5)
    yt = torch_bn_layout(yt)
    (yt * T(R32, False)).sum().backward()
    assert y.dtype == dx.dtype == nm.dtype == np.float32
    assert_close(y, yt.detach(), what="y")
    assert_close(nm, rmt, what="running_mean")
    assert_close(nv, rvt, what="running_var")
    assert_close(dx, xt.grad, what="dx")
    assert_close(dscale, st.grad, what="dscale")
    assert_close(dbias, bt.grad, what="dbias")


def test_batch_norm_running_update_formula():
    x = np.array([[1.0], [2.0], [6.0]])
    _, _, nm, nv = norm.batch_norm_forward(x, None, None, np.zeros(1), np.ones(1), momentum=0.1)
    np.testing.assert_allclose(nm, [0.1 * 3.0])
    np.testing.assert_allclose(nv, [0.9 + 0.1 * 7.0])  # unbiased variance of 1,2,6 is 7


# ------------------------------------------------------------- layer norm

@pytest.mark.parametrize("shape", [(3, 2, 2, 3), (4, 5), (2, 3, 4)])
def test_layer_norm(shape):
    rng = rng_for("ln", shape)
    norm_shape = (shape[-1],) if len(shape) == 3 else shape[1:]
    x = normal(rng, shape) * 3 + 1
    scale = rng.uniform(0.5, 1.5, norm_shape)
    bias = normal(rng, norm_shape)
    y, cache = norm.layer_norm_forward(x, scale, bias)
    R = normal(rng, y.shape)
    dx, dscale, dbias = norm.layer_norm_backward(R, cache)
    fd_check(norm.layer_norm_forward, [x, scale, bias], [0, 1, 2], [dx, dscale, dbias], R)

    x32, s32, b32, R32 = (a.astype(np.float32) for a in (x, scale, bias, R))
    y, cache = norm.layer_norm_forward(x32, s32, b32)
    dx, dscale, dbias = norm.layer_norm_backward(R32, cache)
    xt, st, bt = T(x32), T(s32), T(b32)
    yt = F.layer_norm(xt, norm_shape, st, bt, eps=1e-5)
    (yt * T(R32, False)).sum().backward()
    assert y.dtype == np.float32
    assert_close(y, yt.detach(), what="y")
    assert_close(dx, xt.grad, what="dx")
    assert_close(dscale, st.grad, what="dscale")
    assert_close(dbias, bt.grad, what="dbias")


# ------------------------------------------------------------- stabilizer

@pytest.mark.parametrize("steepness", [4.0, 0.5, 30.0])
@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4), (2, 3, 2, 2)])
def test_stabilizer(shape, steepness):
    rng = rng_for("stabilizer", shape, steepness)
    x = normal(rng, shape)
    alpha = np.array(rng.uniform(-1.0, 1.5))
    y, cache = stabilizer.stabilizer_forward(x, alpha, steepness)
    R = normal(rng, y.shape)
    dx, dalpha = stabilizer.stabilizer_backward(R, cache)
    assert dalpha.shape == ()
    fd_check(lambda x, a: stabilizer.stabilizer_forward(x, a, steepness), [x, alpha], [0, 1], [dx, dalpha], R)

    x32, a32, R32 = (a.astype(np.float32) for a in (x, alpha, R))
    y, cache = stabilizer.stabilizer_forward(x32, a32, steepness)
    dx, dalpha = stabilizer.stabilizer_backward(R32, cache)
    xt, at = T(x32), T(a32)
    # torch's softplus(beta=s) returns its input where s * alpha > 20 (threshold): the same to float32
    yt = xt * F.softplus(at, beta=steepness)
    (yt * T(R32, False)).sum().backward()
    assert y.dtype == np.float32 and dalpha.dtype == np.float32
    assert_close(y, yt.detach(), what="y")
    assert_close(dx, xt.grad, what="dx")
    assert_close(dalpha, at.grad, what="dalpha")


def test_stabilizer_starts_at_one_and_is_stable():
    from netdsl.layers.stabilizer import initial_alpha

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    for s in (1e-6, 0.1, 4.0, 100.0, 1e6):
        y, _ = stabilizer.stabilizer_forward(x, np.array(initial_alpha(s), np.float32), s)
        assert_close(y, x, what=f"steepness {s}")
    y, cache = stabilizer.stabilizer_forward(x, np.array(1e4, np.float32), 4.0)  # exp(4e4) would overflow
    assert np.isfinite(y).all() and np.isfinite(stabilizer.stabilizer_backward(x, cache)[1])
    y, _ = stabilizer.stabilizer_forward(x, np.array(-1e4, np.float32), 4.0)
    assert np.isfinite(y).all() and np.abs(y).max() == 0


# -------------------------------------------------------------- embedding

@pytest.mark.parametrize("ids_shape", [(3, 4), (5,)])
def test_embedding(ids_shape):
    rng = rng_for("emb", ids_shape)
    E = normal(rng, (6, 3))
    ids = rng.integers(0, 6, ids_shape)
    ids.flat[0] = ids.flat[1] = 2  # repeated ids must accumulate
    y, cache = embedding.embedding_forward(ids, E)
    assert y.shape == ids_shape + (3,)
    R = normal(rng, y.shape)
    dE = embedding.embedding_backward(R, cache)
    fd_check(lambda E: embedding.embedding_forward(ids, E), [E], [0], [dE], R)

    E32, R32 = E.astype(np.float32), R.astype(np.float32)
    y, cache = embedding.embedding_forward(ids, E32)
    dE = embedding.embedding_backward(R32, cache)
    Et = T(E32)
    yt = F.embedding(torch.tensor(ids), Et)
    (yt * T(R32, False)).sum().backward()
    assert y.dtype == dE.dtype == np.float32
    assert_close(y, yt.detach(), what="y")
    assert_close(dE, Et.grad, what="dE")


@pytest.mark.parametrize("bad", [7, -1])
def test_embedding_out_of_range(bad):
    ids = np.array([[0, 1], [bad, 2]])
    with pytest.raises(ValueError, match=rf"id {bad}\b.*size 7"):
        embedding.embedding_forward(ids, np.zeros((7, 2)))


# ------------------------------------------------------------------- lstm

def torch_lstm(x, W, H, b, go_backwards, P=None, init=0.0):
    """Returns (output, module) for canonical weights via nn.LSTM (proj_size with a projection P), with
    h0 = c0 = init (Recurrence's initial_state; h0 at the projected size)."""
    n, T_, f = x.shape
    proj = {} if P is None else {"proj_size": P.shape[0]}
    m = torch.nn.LSTM(f, W.shape[0] // 4, batch_first=True, **proj).to(x.dtype)
    with torch.no_grad():
        m.weight_ih_l0.copy_(W)
        m.weight_hh_l0.copy_(H)
        m.bias_ih_l0.copy_(b)
        m.bias_hh_l0.zero_()
        if P is not None:
            m.weight_hr_l0.copy_(P)
    xin = torch.flip(x, [1]) if go_backwards else x
    h0 = torch.full((1, n, H.shape[1]), init, dtype=x.dtype)  # Recurrence's initial_state: h0 = c0 = init
    c0 = torch.full((1, n, W.shape[0] // 4), init, dtype=x.dtype)
    out, _ = m(xin, (h0, c0))
    return (torch.flip(out, [1]) if go_backwards else out), m


# cell 5: a projected LSTM (cell_shape=5), P (3, 5); init: Recurrence's initial_state, a constant h0 = c0
# (no gradient of its own)
@pytest.mark.parametrize("go_backwards, init, cell", [(False, 0.0, None), (True, 0.0, None), (False, 0.3, None),
                                                      (True, -0.7, None), (False, 0.0, 5), (True, 0.0, 5),
                                                      (False, 0.4, 5)])
def test_lstm(go_backwards, init, cell):
    rng = rng_for("lstm", go_backwards, *([init] if init else []), cell)
    n, T_, f, hs = 2, 4, 3, 3
    cs = hs if cell is None else cell
    x = normal(rng, (n, T_, f))
    W = normal(rng, (4 * cs, f)) * 0.5
    H = normal(rng, (4 * cs, hs)) * 0.5
    b = normal(rng, (4 * cs,)) * 0.5
    P = None if cell is None else normal(rng, (hs, cs)) * 0.5
    ps = [] if P is None else [P]
    y, cache = lstm.lstm_forward(x, W, H, b, go_backwards, P, init)
    assert y.shape == (n, T_, hs)
    R = normal(rng, y.shape)
    grads = lstm.lstm_backward(R, cache)
    assert len(grads) == 4 + len(ps)
    fd_check(lambda x, W, H, b, *ps: lstm.lstm_forward(x, W, H, b, go_backwards, *(ps or [None]), init),
             [x, W, H, b, *ps], range(4 + len(ps)), list(grads), R)

    x32, W32, H32, b32, R32, *P32 = (a.astype(np.float32) for a in (x, W, H, b, R, *ps))
    y, cache = lstm.lstm_forward(x32, W32, H32, b32, go_backwards, *(P32 or [None]), init)
    dx, dW, dH, db, *dP = lstm.lstm_backward(R32, cache)
    xt = T(x32)
    yt, m = torch_lstm(xt, torch.tensor(W32), torch.tensor(H32), torch.tensor(b32), go_backwards,
                       P=torch.tensor(P32[0]) if P32 else None, init=init)
    (yt * T(R32, False)).sum().backward()
    assert y.dtype == dx.dtype == dW.dtype == np.float32
    assert_close(y, yt.detach(), what="y")
    assert_close(dx, xt.grad, what="dx")
    assert_close(dW, m.weight_ih_l0.grad, what="dW")
    assert_close(dH, m.weight_hh_l0.grad, what="dH")
    assert_close(db, m.bias_ih_l0.grad, what="db")
    if P32:
        assert_close(dP[0], m.weight_hr_l0.grad, what="dP")


@pytest.mark.parametrize("go_backwards, init, cell", [(False, 0.0, None), (True, -0.7, None), (False, 0.4, 5)])
def test_lstm_in_parts_is_one_group(go_backwards, init, cell, monkeypatch):
    """At 2 BLAS threads the recurrences run as groups of samples on two threads (lstm.in_parts): the
    result, the gradients and the BLAS thread count afterwards are those of one group at 1 thread."""
    from netdsl.exec import runtime

    if runtime.blas_threads() is None:
        pytest.skip("OpenBLAS's thread count cannot be set here")
    rng = rng_for("lstm parts", go_backwards, init, cell)
    n, T_, f, hs = 7, 5, 3, 4  # 7 samples: groups of 3 and 4
    cs = hs if cell is None else cell
    x, W, H, b = (normal(rng, s).astype(np.float32) * 0.5 for s in ((n, T_, f), (4 * cs, f), (4 * cs, hs), (4 * cs,)))
    P = None if cell is None else normal(rng, (hs, cs)).astype(np.float32) * 0.5
    R = normal(rng, (n, T_, hs)).astype(np.float32)
    monkeypatch.setattr(lstm, "MIN_ROWS", 2)
    before = runtime.blas_threads()
    out = {}
    try:
        for threads in (1, 2):
            runtime.set_blas_threads(threads)
            y, cache = lstm.lstm_forward(x, W, H, b, go_backwards, P, init)
            out[threads] = (y, *(g for g in lstm.lstm_backward(R, cache) if g is not None))
            assert runtime.blas_threads() == threads
    finally:
        runtime.set_blas_threads(before)
    for one, two in zip(out[1], out[2]):
        np.testing.assert_allclose(two, one, rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_lstm_in_parts_in_a_forked_child(monkeypatch):
    """A child forked after the LSTM's thread pool exists runs the LSTM in parts too (the child's copy
    of the pool has no threads: it used to wait for them forever)."""
    import time

    from netdsl.exec import runtime

    if runtime.blas_threads() is None:
        pytest.skip("OpenBLAS's thread count cannot be set here")
    monkeypatch.setattr(lstm, "MIN_ROWS", 2)
    rng = rng_for("lstm fork")
    x, W, H, b = (normal(rng, s).astype(np.float32) for s in ((6, 3, 2), (8, 2), (8, 2), (8,)))
    before = runtime.blas_threads()
    runtime.set_blas_threads(2)
    try:
        y, _ = lstm.lstm_forward(x, W, H, b)
        pid = os.fork()
        if pid == 0:
            y1, _ = lstm.lstm_forward(x, W, H, b)
            os._exit(0 if np.array_equal(y, y1) else 3)
    finally:
        runtime.set_blas_threads(before)
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child's LSTM hung")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0


def torch_peephole_lstm(x, W, H, b, C=None, P=None, alphas=None):
    """CNTK's LSTM step (blocks.py, _RecurrentBlock) written out in torch, forward in time: peepholes
    C = (Ci, Cf, Co), self-stabilizers {name: alpha}, beta = softplus(4 alpha) / 4."""
    hs = W.shape[0] // 4
    one = torch.ones((), dtype=x.dtype)
    beta = {k: F.softplus(a, beta=4) for k, a in (alphas or {}).items()}
    sdh, sdc, sct, sht = (beta.get(k, one) for k in ("Sdh", "Sdc", "Sct", "Sht"))
    Ci, Cf, Co = C if C is not None else (torch.zeros(hs, dtype=x.dtype),) * 3
    h = x.new_zeros(x.shape[0], H.shape[1])
    c = x.new_zeros(x.shape[0], hs)
    out = []
    for t in range(x.shape[1]):
        z = x[:, t] @ W.T + b + (sdh * h) @ H.T
        i = torch.sigmoid(z[:, :hs] + Ci * (sdc * c))
        f = torch.sigmoid(z[:, hs:2 * hs] + Cf * (sdc * c))
        c = f * c + i * torch.tanh(z[:, 2 * hs:3 * hs])
        h = torch.sigmoid(z[:, 3 * hs:] + Co * (sct * c)) * torch.tanh(c)
        h = h if P is None else (sht * h) @ P.T
        out.append(h)
    return torch.stack(out, 1)


# use_peepholes=True and enable_self_stabilization=True (lstm_peephole.py): float64 against finite
# differences, float32 against torch autograd
@pytest.mark.parametrize("cell, peep, stab", [(None, True, False), (5, True, False), (None, True, True),
                                              (5, True, True), (5, False, True), (None, False, True)])
def test_lstm_peephole(cell, peep, stab):
    rng = rng_for("lstm-peephole", cell, peep, stab)
    n, T_, f, hs = 2, 4, 3, 3
    cs = hs if cell is None else cell
    x = normal(rng, (n, T_, f))
    W, H, b = normal(rng, (4 * cs, f)) * 0.5, normal(rng, (4 * cs, hs)) * 0.5, normal(rng, (4 * cs,)) * 0.5
    C3 = [normal(rng, (cs,)) * 0.5 for _ in range(3)] if peep else []
    ps = [] if cell is None else [normal(rng, (hs, cs)) * 0.5]
    names = [k for k in lstm_peephole.STABILIZERS if stab and (k == "Sdh" or (peep and k in ("Sdc", "Sct"))
                                                                or (cell and k == "Sht"))]
    alphas = [np.asarray(rng.uniform(-0.5, 1.0)) for _ in names]

    def fwd(x, W, H, b, *rest):
        C = tuple(rest[:3]) if peep else None
        P = rest[len(C3)] if ps else None
        return lstm_peephole.peephole_forward(x, W, H, b, C, P, dict(zip(names, rest[len(C3) + len(ps):])))

    args = [x, W, H, b, *C3, *ps, *alphas]
    y, cache = fwd(*args)
    R = normal(rng, y.shape)
    *grads, dalpha = lstm_peephole.peephole_backward(R, cache)
    grads += [dalpha[k] for k in names]
    assert len(grads) == len(args) and sorted(dalpha) == sorted(names)  # dx first, as x
    fd_check(fwd, args, range(len(args)), grads, R)

    args32 = [np.asarray(a, np.float32) for a in args]
    y, cache = fwd(*args32)
    *grads, dalpha = lstm_peephole.peephole_backward(R.astype(np.float32), cache)
    grads += [dalpha[k] for k in names]
    ts = [T(a) for a in args32]
    C = tuple(ts[4:7]) if peep else None
    yt = torch_peephole_lstm(*ts[:4], C, ts[4 + len(C3)] if ps else None, dict(zip(names, ts[4 + len(C3) + len(ps):])))
    (yt * T(R.astype(np.float32), False)).sum().backward()
    assert y.dtype == grads[0].dtype == np.float32
    assert_close(y, yt.detach(), what="y")
    for k, (g, t) in enumerate(zip(grads, ts)):
        assert_close(g, t.grad, what=f"gradient of argument {k}")


def test_lstm_go_backwards_output_alignment():
    """output[:, 0] of a backward pass is its final state, output[:, -1] its first step."""
    rng = rng_for("lstm-align")
    x = normal(rng, (2, 5, 3), np.float32)
    W, H, b = normal(rng, (8, 3), np.float32), normal(rng, (8, 2), np.float32), normal(rng, (8,), np.float32)
    y, _ = lstm.lstm_forward(x, W, H, b, go_backwards=True)
    first_step, _ = lstm.lstm_forward(x[:, -1:], W, H, b)
    np.testing.assert_allclose(y[:, -1], first_step[:, 0], rtol=1e-6)
    reversed_fwd, _ = lstm.lstm_forward(x[:, ::-1].copy(), W, H, b)
    np.testing.assert_allclose(y[:, 0], reversed_fwd[:, -1], rtol=1e-6)


# ------------------------------------------------------- shape and plumbing

@pytest.mark.parametrize("shapes,dim", [
    ([(2, 1, 3, 3), (2, 2, 3, 3)], 1),
    ([(3, 2), (3, 4), (3, 1)], 1),
    ([(2, 3, 2), (2, 3, 3)], 2),
])
def test_splice(shapes, dim):
    rng = rng_for("splice", tuple(shapes))
    xs = [normal(rng, s) for s in shapes]
    y, cache = shape.splice_forward(xs)
    R = normal(rng, y.shape)
    dxs = shape.splice_backward(R, cache)
    fd_check(lambda *xs: shape.splice_forward(list(xs)), xs, range(len(xs)), dxs, R)

    xts = [T(a.astype(np.float32)) for a in xs]
    y, cache = shape.splice_forward([a.astype(np.float32) for a in xs])
    dxs = shape.splice_backward(R.astype(np.float32), cache)
    yt = torch.cat(xts, dim=dim)
    (yt * T(R.astype(np.float32), False)).sum().backward()
    assert_close(y, yt.detach(), what="y")
    for d, t in zip(dxs, xts):
        assert_close(d, t.grad, what="dx")


@pytest.mark.parametrize("which", ["last", "first"])
def test_select(which):
    fwd = shape.select_last_forward if which == "last" else shape.select_first_forward
    bwd = shape.select_last_backward if which == "last" else shape.select_first_backward
    rng = rng_for("select", which)
    x = normal(rng, (2, 4, 3))
    y, cache = fwd(x)
    R = normal(rng, y.shape)
    fd_check(fwd, [x], [0], [bwd(R, cache)], R)

    xt = T(x.astype(np.float32))
    y, cache = fwd(x.astype(np.float32))
    yt = xt[:, -1] if which == "last" else xt[:, 0]
    (yt * T(R.astype(np.float32), False)).sum().backward()
    assert_close(y, yt.detach(), what="y")
    assert_close(bwd(R.astype(np.float32), cache), xt.grad, what="dx")


def test_flatten():
    rng = rng_for("flatten")
    x = normal(rng, (2, 3, 2, 2))
    y, cache = shape.flatten_forward(x)
    R = normal(rng, y.shape)
    fd_check(shape.flatten_forward, [x], [0], [shape.flatten_backward(R, cache)], R)
    xt = T(x.astype(np.float32))
    y, cache = shape.flatten_forward(x.astype(np.float32))
    yt = torch.flatten(xt, 1)
    (yt * T(R.astype(np.float32), False)).sum().backward()
    assert_close(y, yt.detach(), what="y")
    assert_close(shape.flatten_backward(R.astype(np.float32), cache), xt.grad, what="dx")


def test_rescale():
    rng = rng_for("rescale")
    x = normal(rng, (2, 1, 3, 3))
    args = [x, 1 / 255, 0.1307, 0.3081]
    y, cache = activation.rescale_forward(*args)
    R = normal(rng, y.shape)
    fd_check(activation.rescale_forward, args, [0], [activation.rescale_backward(R, cache)], R)

    x32, R32 = x.astype(np.float32), R.astype(np.float32)
    y, cache = activation.rescale_forward(x32, np.float64(1 / 255), 0.1307, 0.3081)
    assert y.dtype == np.float32  # numpy scalar constants must not upcast
    xt = T(x32)
    yt = (xt * (1 / 255) - 0.1307) / 0.3081
    (yt * T(R32, False)).sum().backward()
    assert_close(y, yt.detach(), what="y")
    assert_close(activation.rescale_backward(R32, cache), xt.grad, what="dx")
    pixels, _ = activation.rescale_forward(np.array([[0, 255]], np.uint8), 1 / 255, 0.0, 1.0)
    assert pixels.dtype == np.float32
    np.testing.assert_allclose(pixels, [[0, 1]])


@pytest.mark.parametrize("shape", [(3, 4), (2, 2, 2, 3)])
def test_cosine_distance(shape):
    rng = rng_for("cos", shape)
    a, b = normal(rng, shape), normal(rng, shape)
    y, cache = cosine.cosine_distance_forward(a, b)
    assert y.shape == (shape[0], 1)
    R = normal(rng, y.shape)
    da, db = cosine.cosine_distance_backward(R, cache)
    fd_check(cosine.cosine_distance_forward, [a, b], [0, 1], [da, db], R)

    a32, b32, R32 = (v.astype(np.float32) for v in (a, b, R))
    a32[0] = 0  # a zero vector: norms are clamped to eps
    a32[1] *= 1e-9  # a norm below eps: torch's clamp is invisible to autograd
    y, cache = cosine.cosine_distance_forward(a32, b32)
    da, db = cosine.cosine_distance_backward(R32, cache)
    at, bt = T(a32), T(b32)
    yt = F.cosine_similarity(at.flatten(1), bt.flatten(1), dim=1, eps=1e-8)[:, None]
    (yt * T(R32, False)).sum().backward()
    assert y.dtype == da.dtype == np.float32
    assert_close(y, yt.detach(), what="y")
    assert_close(da, at.grad, what="da")
    assert_close(db, bt.grad, what="db")


@pytest.mark.parametrize("op", ["add", "sub", "mul"])
@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4, 4)])
def test_elementwise(op, shape):
    rng = rng_for("elementwise" + op, shape)
    a, b = normal(rng, shape), normal(rng, shape)
    y, cache = elementwise.elementwise_forward(a, b, op)
    assert y.shape == shape
    R = normal(rng, y.shape)
    da, db = elementwise.elementwise_backward(R, cache, op)
    fd_check(lambda u, v: elementwise.elementwise_forward(u, v, op), [a, b], [0, 1], [da, db], R)

    a32, b32, R32 = (v.astype(np.float32) for v in (a, b, R))
    y, cache = elementwise.elementwise_forward(a32, b32, op)
    da, db = elementwise.elementwise_backward(R32, cache, op)
    at, bt = T(a32), T(b32)
    yt = {"add": torch.add, "sub": torch.sub, "mul": torch.mul}[op](at, bt)
    (yt * T(R32, False)).sum().backward()
    assert y.dtype == da.dtype == db.dtype == np.float32
    assert_close(y, yt.detach(), what="y")
    assert_close(da, at.grad, what="da")
    assert_close(db, bt.grad, what="db")


# ----------------------------------------------------------------- losses

@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4)])
def test_softmax_cross_entropy(shape):
    rng = rng_for("ce", shape)
    logits = normal(rng, shape) * 3
    labels = rng.integers(0, shape[-1], shape[:-1])
    loss, d = losses.softmax_cross_entropy(logits, labels)
    fd_check(lambda z: (losses.softmax_cross_entropy(z, labels)[0],), [logits], [0], [d], 1.0)

    z32 = logits.astype(np.float32)
    loss, d = losses.softmax_cross_entropy(z32, labels)
    zt = T(z32)
    lt = F.cross_entropy(zt.reshape(-1, shape[-1]), torch.tensor(labels).reshape(-1))
    lt.backward()
    assert d.dtype == np.float32
    assert_close(loss, lt.detach(), what="loss")
    assert_close(d, zt.grad, what="dlogits")


def test_softmax_cross_entropy_is_stable():
    z = np.array([[1000.0, 0.0, -1000.0], [-1000.0, 1000.0, 0.0]], np.float32)
    loss, d = losses.softmax_cross_entropy(z, np.array([2, 1]))
    assert np.isfinite(loss) and np.all(np.isfinite(d))
    np.testing.assert_allclose(loss, 1000.0, rtol=1e-6)  # (2000 + 0) / 2
    with pytest.raises(ValueError, match="out of range"):
        losses.softmax_cross_entropy(z, np.array([3, 0]))


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2)])
def test_mse(shape):
    rng = rng_for("mse", shape)
    pred, target = normal(rng, shape), normal(rng, shape)
    loss, d = losses.mse(pred, target)
    fd_check(lambda p: (losses.mse(p, target)[0],), [pred], [0], [d], 1.0)

    p32, t32 = pred.astype(np.float32), target.astype(np.float32)
    loss, d = losses.mse(p32, t32)
    pt = T(p32)
    lt = F.mse_loss(pt, torch.tensor(t32))
    lt.backward()
    assert d.dtype == np.float32
    assert_close(loss, lt.detach(), what="loss")
    assert_close(d, pt.grad, what="dpred")


def test_accuracy():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert losses.accuracy(logits, np.array([1, 0, 0, 0])) == 0.75
    seq = np.zeros((2, 2, 3))
    seq[:, :, 2] = 1
    assert losses.accuracy(seq, np.array([[2, 2], [0, 2]])) == 0.75


# ------------------------------------------------------------------- init

def test_initializers():
    rng = np.random.default_rng(0)
    W = init.glorot_uniform((8, 3, 5, 5), rng)
    limit = np.sqrt(6 / (3 * 25 + 8 * 25))
    assert W.dtype == np.float32 and W.shape == (8, 3, 5, 5)
    assert np.abs(W).max() <= limit and np.abs(W).max() > 0.9 * limit
    D = init.glorot_uniform((10, 20), rng, fan_in=4, fan_out=4)
    assert np.abs(D).max() <= np.sqrt(6 / 8)
    He = init.initialize("he_uniform", (50, 20), rng)
    assert np.abs(He).max() <= np.sqrt(6 / 20)
    assert np.abs(init.initialize("uniform", (100,), rng, scale=0.1)).max() <= 0.1
    assert abs(init.normal((20000,), rng, std=0.2).std() - 0.2) < 0.01
    np.testing.assert_array_equal(init.initialize("constant", (2,), rng, value=3.0), [3, 3])
    np.testing.assert_array_equal(init.zeros((2,)), [0, 0])
    np.testing.assert_array_equal(init.ones((2,)), [1, 1])
    with pytest.raises(ValueError, match="unknown initializer"):
        init.initialize("orthogonal", (2, 2), rng)


# ---------------------------------------------------------------- 1-D convolution and pooling over sequences

# (strides, pads): a sequence (N, T, F) convolved over T, F the channel axis (seed 004, line 203)
CONV1D_CASES = [((1,), ((0, 0),)), ((1,), ((1, 1),)), ((2,), ((0, 0),)), ((2,), ((1, 2),)), ((3,), ((2, 0),))]


@pytest.mark.parametrize("strides,pads", CONV1D_CASES)
@pytest.mark.parametrize("activation,bias", [(None, True), ("relu", True), ("tanh", False)])
def test_conv1d(strides, pads, activation, bias):
    rng = rng_for("conv1d", strides, pads, activation, bias)
    x = away_from_zero(rng, (2, 9, 4))
    W = normal(rng, (5, 4, 3))
    b = normal(rng, (5,)) if bias else None
    y, cache = conv.conv1d_forward(x, W, b, strides, pads, activation)
    (pb, pe), = pads
    assert y.shape == (2, (9 + pb + pe - 3) // strides[0] + 1, 5)
    R = normal(rng, y.shape)
    dx, dW, db = conv.conv1d_backward(R, cache)
    wrt, grads = ([0, 1, 2], [dx, dW, db]) if bias else ([0, 1], [dx, dW])
    fd_check(conv.conv1d_forward, [x, W, b, strides, pads, activation], wrt, grads, R)

    x32, W32, R32 = (a.astype(np.float32) for a in (x, W, R))
    b32 = b.astype(np.float32) if bias else None
    y, cache = conv.conv1d_forward(x32, W32, b32, strides, pads, activation)
    dx, dW, db = conv.conv1d_backward(R32, cache)
    xt, Wt = T(x32), T(W32)
    bt = T(b32) if bias else None
    zt = F.conv1d(F.pad(xt.transpose(1, 2), pads[0]), Wt, bt, stride=strides[0])
    yt = torch_act(zt, activation, 1).transpose(1, 2)
    (yt * T(R32, False)).sum().backward()
    assert y.dtype == dx.dtype == dW.dtype == np.float32
    assert_close(y, yt.detach(), what="y")
    assert_close(dx, xt.grad, what="dx")
    assert_close(dW, Wt.grad, what="dW")
    if bias:
        assert_close(db, bt.grad, what="db")


POOL1D_CASES = [((2,), (2,), ((0, 0),)), ((3,), (1,), ((1, 1),)), ((3,), (2,), ((0, 2),)), ((2,), (1,), ((1, 0),))]


@pytest.mark.parametrize("window,strides,pads", POOL1D_CASES)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool1d(kind, window, strides, pads):
    fwd, bwd = {"max": (pool.max_pool1d_forward, pool.max_pool1d_backward),
                "avg": (pool.avg_pool1d_forward, pool.avg_pool1d_backward)}[kind]
    rng = rng_for("pool1d", kind, window, strides, pads)
    # distinct values >= 0.1 apart: the FD step never flips a max
    x = (rng.permutation(2 * 7 * 3).reshape(2, 7, 3) * 0.1).astype(np.float64)
    y, cache = fwd(x, window, strides, pads)
    R = normal(rng, y.shape)
    fd_check(fwd, [x, window, strides, pads], [0], [bwd(R, cache)], R)

    x32, R32 = x.astype(np.float32), R.astype(np.float32)
    y, cache = fwd(x32, window, strides, pads)
    dx = bwd(R32, cache)
    xt = T(x32)
    xc = xt.transpose(1, 2)
    if kind == "max":
        yt = F.max_pool1d(F.pad(xc, pads[0], value=-np.inf), window[0], strides[0])
    else:  # window sums of the zero-padded input over the counts of real cells
        yt = (F.avg_pool1d(F.pad(xc, pads[0]), window[0], strides[0])
              / F.avg_pool1d(F.pad(torch.ones_like(xc), pads[0]), window[0], strides[0]))
    yt = yt.transpose(1, 2)
    (yt * T(R32, False)).sum().backward()
    assert y.dtype == dx.dtype == np.float32
    assert_close(y, yt.detach(), what="y")
    assert_close(dx, xt.grad, what="dx")
