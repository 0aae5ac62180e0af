"""The native graph executor: shapes on every model, one training step each,
float64 finite-difference gradient checks of whole graphs (including shared
weights), and agreement with an independent PyTorch implementation of the
docs/ir.md semantics, from the same canonical weights."""
from __future__ import annotations

import glob
import math
from pathlib import Path

import numpy as np
import pytest

from netdsl.exec import losses
from netdsl.exec.graph import Executor
from netdsl.exec.train import make_optimizer
from netdsl.exec.weights import init_params
from netdsl.frontend import load, load_text

REPO = Path(__file__).resolve().parent.parent
MODELS = sorted(glob.glob(str(REPO / "models" / "*.net")))
SEQ_LEN = 5  # for sequences of unknown length


def make_inputs(graph, n, rng, seq_len=SEQ_LEN, vocab_limit=None):
    out = {}
    for i in graph.inputs:
        t = i.type
        shape = tuple(seq_len if s is None else s for s in t.batch_shape(n))
        if t.vocab is not None:
            out[i.name] = rng.integers(0, min(t.vocab, vocab_limit or t.vocab), shape)
        else:
            out[i.name] = (rng.random(shape) * 255).astype(np.float32)
    return out


def concrete(t, n, seq_len=SEQ_LEN):
    return tuple(seq_len if s is None else s for s in t.batch_shape(n))


# --------------------------------------------------------------- every model

@pytest.mark.parametrize("path", MODELS, ids=lambda p: Path(p).stem)
def test_shapes_and_one_training_step(path):
    g = load(path)
    rng = np.random.default_rng(0)
    params = init_params(g, 0)
    ex = Executor(g, params)
    n = 3
    inputs = make_inputs(g, n, rng)
    initial = {k: v.copy() for k, v in ex.params.items()}
    out = ex.forward(inputs, training=True, rng=rng)
    assert list(out) == list(g.outputs)
    for name in g.outputs:
        assert out[name].shape == concrete(g.value_type(name), n), name
        assert out[name].dtype == np.float32
        assert np.isfinite(out[name]).all()
    # Every intermediate value has its inferred type too (a convolution fused
    # with its max pooling has no value of its own).
    fused = {st.node.name for st in ex.steps if st.fused is not None}
    for node in g.nodes:
        if node.name not in fused:
            assert ex.values[node.name].shape == concrete(node.type, n), node.name

    # One step with the model's own loss and optimizer.
    name = g.outputs[0]
    y = out[name]
    if g.training.loss == "cross_entropy_with_softmax":
        labels = rng.integers(0, y.shape[-1], y.shape[:-1])
        loss, d = losses.softmax_cross_entropy(y, labels)
    else:
        loss, d = losses.mse(y, rng.random(y.shape).astype(np.float32))
    grads = ex.backward({name: d})
    assert set(grads) == set(ex.trainable), "every trainable parameter gets a gradient"
    for k, gk in grads.items():
        assert gk.shape == ex.params[k].shape and gk.dtype == np.float32 and np.isfinite(gk).all(), k
    before = {k: v.copy() for k, v in ex.params.items()}
    make_optimizer(g.training).step({k: ex.params[k] for k in ex.trainable}, grads)
    changed = [k for k in ex.trainable if not np.array_equal(before[k], ex.params[k])]
    assert changed, "the step changed no parameter"
    for p in g.params():
        if not p.trainable:  # BatchNorm running statistics moved in training mode
            assert not np.array_equal(initial[p.name], ex.params[p.name]), p.name
    assert math.isfinite(loss)


def test_params_are_shared_by_reference():
    g = load(REPO / "models" / "mlp_relu.net")
    params = init_params(g, 0)
    ex = Executor(g, params)
    assert all(ex.params[k] is params[k] for k in params)
    x = make_inputs(g, 2, np.random.default_rng(0))
    before = ex.forward(x)["z"].copy()
    params["dense_2.b"] += 1  # in-place updates (the optimizer's) are seen
    np.testing.assert_allclose(ex.forward(x)["z"], before + 1, rtol=1e-6)


def test_dense_flattens_images_in_c_order():
    g = load_text("model M\nx = Input((2, 3, 4))\nz = Dense(5)(x)\noutput z\n", "m.net")
    p = init_params(g, 1)
    ex = Executor(g, p, np.float64)
    x = np.random.default_rng(0).random((2, 2, 3, 4))
    ref = x.reshape(2, -1) @ p["dense_1.W"].astype(np.float64).T + p["dense_1.b"]
    np.testing.assert_allclose(ex.forward({"x": x})["z"], ref, rtol=1e-12)


def test_backward_needs_forward_and_missing_params_are_named():
    g = load(REPO / "models" / "mlp_relu.net")
    p = init_params(g, 0)
    ex = Executor(g, p)
    with pytest.raises(RuntimeError):
        ex.backward({"z": np.zeros((1, 10), np.float32)})
    del p["dense_2.b"]
    with pytest.raises(ValueError, match="dense_2.b"):
        Executor(g, p)


# ------------------------------------------------- finite-difference checks

SMALL_BILSTM = """
model SmallBilstm
words = SequenceInput(vocab=13)
e = Embedding(6)(words)
h_fwd = Recurrence(LSTM(5))(e)
h_bwd = Recurrence(LSTM(4), go_backwards=True)(e)
h = splice([h_fwd, h_bwd])
tags = Dense(7)(h)
output tags
"""


def _fd_check(g, inputs, n_coords=6, seed=0, eps=1e-6, rtol=1e-5, atol=1e-8, training=True):
    """Compare backward() with central differences of L = sum(out * R)."""
    rng = np.random.default_rng(seed)
    params = {k: v.astype(np.float64) for k, v in init_params(g, seed).items()}
    # Non-zero biases and BN affine terms, so their gradients are exercised.
    for k, v in params.items():
        if k.endswith((".b", ".bias")):
            v += rng.normal(0, 0.1, v.shape)
    ex = Executor(g, params, np.float64)
    out = ex.forward(inputs, training=training)
    R = {k: rng.standard_normal(v.shape) for k, v in out.items()}

    def loss():
        o = ex.forward(inputs, training=training)
        return sum(float((o[k] * R[k]).sum()) for k in o)

    loss()
    grads = ex.backward(R)
    checked = 0
    for name in ex.trainable:
        p = ex.params[name]
        flat = p.reshape(-1)
        picks = rng.choice(flat.size, size=min(n_coords, flat.size), replace=False)
        for i in picks:
            old = flat[i]
            flat[i] = old + eps
            lp = loss()
            flat[i] = old - eps
            lm = loss()
            flat[i] = old
            num = (lp - lm) / (2 * eps)
            ana = grads[name].reshape(-1)[i]
            assert abs(num - ana) <= atol + rtol * max(abs(num), abs(ana), 1e-3), (name, i, num, ana)
            checked += 1
    return checked


def test_gradcheck_mlp_relu():
    g = load(REPO / "models" / "mlp_relu.net")
    assert _fd_check(g, make_inputs(g, 4, np.random.default_rng(1)), n_coords=10) >= 40


def test_gradcheck_bn_cnn_training_mode():
    g = load(REPO / "models" / "bn_cnn.net")
    assert _fd_check(g, make_inputs(g, 3, np.random.default_rng(2)), n_coords=5) > 0


def test_gradcheck_resnet_mnist_training_mode():
    """Residual adds: the block's input gets the gradient of both branches."""
    g = load(REPO / "models" / "resnet_mnist.net")
    assert {"add"} == {l.attr("op") for l in g.layers if l.kind == "Elementwise"}
    assert _fd_check(g, make_inputs(g, 2, np.random.default_rng(9)), n_coords=3) > 0


def test_gradcheck_row_lstm_truncated():
    g = load(REPO / "models" / "row_lstm.net")
    x = (np.random.default_rng(3).random((3, 6, 28)) * 255)  # 6 of the 28 rows
    _fd_check(g, {"rows": x}, n_coords=8)


def test_gradcheck_bilstm_tagger_small_vocab():
    g = load_text(SMALL_BILSTM, "small_bilstm.net")
    ids = np.random.default_rng(4).integers(0, 13, (3, 5))
    ids[0, :3] = 2  # repeated ids: embedding gradients accumulate
    _fd_check(g, {"words": ids}, n_coords=8)


def test_gradcheck_bilstm_tagger_model_file():
    g = load(REPO / "models" / "bilstm_tagger.net")
    ids = np.random.default_rng(5).integers(0, 20, (2, 4))  # ids < 20 of 943
    _fd_check(g, {"words": ids}, n_coords=3)


UNSHARED_DSSM = """
model UnsharedDssm
doc = Input((1, 28, 28), scale=1/255)
query = Input((1, 28, 28), scale=1/255)
with default_options(activation=relu) {
    a = Sequential(Convolution((5, 5), 32, pad=True), MaxPooling((3, 3), strides=(2, 2)),
                   Convolution((5, 5), 64, pad=True), MaxPooling((3, 3), strides=(2, 2)),
                   Dense(64), Dense(10, activation=None))
    b = Sequential(Convolution((5, 5), 32, pad=True), MaxPooling((3, 3), strides=(2, 2)),
                   Convolution((5, 5), 64, pad=True), MaxPooling((3, 3), strides=(2, 2)),
                   Dense(64), Dense(10, activation=None))
}
sim = cosine_distance(a(doc), b(query))
output sim
"""


def test_gradcheck_dssm_shared_weights_sum():
    g = load(REPO / "models" / "dssm.net")
    rng = np.random.default_rng(6)
    inputs = make_inputs(g, 2, rng)
    _fd_check(g, inputs, n_coords=4)

    # The shared gradient is exactly the sum of what two unshared copies get.
    shared = {k: v.astype(np.float64) for k, v in init_params(g, 0).items()}
    gu = load_text(UNSHARED_DSSM, "unshared.net")
    names = [p.name for p in g.params()]
    unames = [p.name for p in gu.params()]
    assert len(unames) == 2 * len(names)
    unshared = {u: shared[names[i % len(names)]].copy() for i, u in enumerate(unames)}
    ex, exu = Executor(g, shared, np.float64), Executor(gu, unshared, np.float64)
    R = {"sim": rng.standard_normal((2, 1))}
    np.testing.assert_allclose(ex.forward(inputs)["sim"], exu.forward(inputs)["sim"], rtol=1e-12)
    gs, gu_ = ex.backward(R), exu.backward(R)
    for i, name in enumerate(names):
        a, b = gu_[unames[i]], gu_[unames[i + len(names)]]
        np.testing.assert_allclose(gs[name], a + b, rtol=1e-10, atol=1e-14)
        assert not np.allclose(gs[name], a), name


# ------------------------------------------------------------- vs PyTorch

torch = pytest.importorskip("torch")
F = torch.nn.functional


def torch_forward(g, params, inputs, training=True):
    """An independent reading of docs/ir.md in torch functional code."""
    vals = {k: (torch.as_tensor(v) if np.asarray(v).dtype.kind in "iu" else torch.as_tensor(v))
            for k, v in inputs.items()}
    layers = {l.name: l for l in g.layers}
    running = {}
    for node in g.nodes:
        L = layers[node.layer]
        P = lambda s: params[f"{L.name}.{s}"]  # noqa: E731
        xs = [vals[v] for v in node.inputs]
        x = xs[0]
        k = L.kind
        if k == "Rescale":
            y = (x * L.attr("scale") - L.attr("mean")) / L.attr("std")
        elif k == "Dense":
            t = g.value_type(node.inputs[0])
            if not t.seq and x.dim() > 2:
                x = x.reshape(x.shape[0], -1)
            y = F.linear(x, P("W"), params.get(f"{L.name}.b"))
            y = _act(y, L.attr("activation"))
        elif k == "Convolution":
            (pt, pb), (pl, pr) = L.attr("pads")
            y = F.conv2d(F.pad(x, (pl, pr, pt, pb)), P("W"), params.get(f"{L.name}.b"), stride=L.attr("strides"))
            y = _act(y, L.attr("activation"))
        elif k == "AveragePooling":
            # Mean over the non-padded cells, with possibly asymmetric pads: window sum / cell count.
            (pt, pb), (pl, pr) = L.attr("pads")
            win, st = L.attr("window"), L.attr("strides")
            total = F.avg_pool2d(F.pad(x, (pl, pr, pt, pb)), win, st, divisor_override=1)
            count = F.avg_pool2d(F.pad(torch.ones_like(x), (pl, pr, pt, pb)), win, st, divisor_override=1)
            y = total / count
        elif k == "LayerNormalization":
            t = g.value_type(node.inputs[0])
            shape = tuple(x.shape[2:]) if t.seq else tuple(x.shape[1:])
            y = F.layer_norm(x, shape, P("scale"), P("bias"), eps=L.attr("epsilon"))
        elif k == "MaxPooling":
            (pt, pb), (pl, pr) = L.attr("pads")
            y = F.max_pool2d(F.pad(x, (pl, pr, pt, pb), value=-math.inf), L.attr("window"), L.attr("strides"))
        elif k == "BatchNormalization":
            rm, rv = P("running_mean").detach().clone(), P("running_var").detach().clone()
            y = F.batch_norm(x, rm, rv, P("scale"), P("bias"), training=training,
                             momentum=L.attr("momentum"), eps=L.attr("epsilon"))
            running[L.name] = (rm, rv)
        elif k == "Activation":
            y = _act(x, L.attr("activation"))
        elif k == "Flatten":
            y = x.reshape(x.shape[0], -1)
        elif k == "Embedding":
            y = x @ P("E") if x.is_floating_point() else F.embedding(x, P("E"))
        elif k == "LSTM":
            y = _lstm(x, P("W"), P("H"), P("b"), L.attr("go_backwards"))
        elif k == "Splice":
            y = torch.cat(xs, dim=1 if x.dim() == 4 else -1)
        elif k == "SelectLast":
            y = x[:, -1]
        elif k == "SelectFirst":
            y = x[:, 0]
        elif k == "CosineDistance":
            y = F.cosine_similarity(x.reshape(x.shape[0], -1), xs[1].reshape(x.shape[0], -1),
                                    dim=1, eps=1e-8)[:, None]
        elif k == "Elementwise":
            y = {"add": torch.add, "sub": torch.sub, "mul": torch.mul}[L.attr("op")](x, xs[1])
        elif k == "GlobalAveragePooling":
            y = x.mean(dim=(2, 3))
        elif k == "GlobalMaxPooling":
            y = x.amax(dim=(2, 3))
        elif k == "Dropout" and not training:
            y = x
        else:
            raise NotImplementedError(k)
        vals[node.name] = y
    return {o: vals[o] for o in g.outputs}, running


def _act(y, a):
    return {None: lambda v: v, "relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
            "softmax": lambda v: F.softmax(v, dim=1 if v.dim() == 4 else -1)}[a](y)


def _lstm(x, W, H, b, backwards):
    n, T, _ = x.shape
    hs = H.shape[1]
    h = x.new_zeros(n, hs)
    c = x.new_zeros(n, hs)
    out = [None] * T
    for t in (range(T - 1, -1, -1) if backwards else range(T)):
        z = x[:, t] @ W.T + h @ H.T + b
        i, f, gg, o = z.split(hs, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
        h = torch.sigmoid(o) * torch.tanh(c)
        out[t] = h
    return torch.stack(out, dim=1)


def _close(ours, ref, what, tol=1e-5):
    ref = ref.detach().numpy() if hasattr(ref, "detach") else np.asarray(ref)
    scale = max(1.0, float(np.abs(ref).max()) if ref.size else 1.0)
    err = float(np.abs(ours - ref).max()) / scale if ref.size else 0.0
    assert err <= tol, f"{what}: max error {err:.2e} relative to {scale:.3g} exceeds {tol}"


TORCH_CASES = {
    "mlp_relu": dict(n=16),
    "keras_cnn": dict(n=8),
    "bn_cnn": dict(n=8),
    "row_lstm": dict(n=8),
    "bilstm_tagger": dict(n=4),
    "dssm": dict(n=6),
    "cntk_cnn": dict(n=4),  # overlapping 3x3/2 pooling and "same" pads
    "cnn_pad": dict(n=4),
    "mlp_sigmoid": dict(n=8),
    "resnet_mnist": dict(n=4),  # residual adds after BatchNormalization
}


@pytest.mark.parametrize("model", sorted(TORCH_CASES))
def test_matches_pytorch(model):
    g = load(REPO / "models" / f"{model}.net")
    rng = np.random.default_rng(7)
    params = init_params(g, 3)
    for k, v in params.items():  # non-trivial biases, BN affine terms and statistics
        if k.endswith((".b", ".bias", ".running_mean")):
            v += rng.normal(0, 0.1, v.shape).astype(np.float32)
        if k.endswith((".scale", ".running_var")):
            v *= rng.uniform(0.5, 1.5, v.shape).astype(np.float32)
    inputs = make_inputs(g, TORCH_CASES[model]["n"], rng, seq_len=7)
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    ex = Executor(g, {k: v.copy() for k, v in params.items()})
    out = ex.forward(inputs, training=True)
    tout, running = torch_forward(g, tparams, inputs, training=True)
    name = g.outputs[0]
    _close(out[name], tout[name], f"{model} output")

    # The model's own loss, on both sides.
    y = out[name]
    if g.training.loss == "cross_entropy_with_softmax":
        labels = rng.integers(0, y.shape[-1], y.shape[:-1])
        loss, d = losses.softmax_cross_entropy(y, labels)
        tl = F.cross_entropy(tout[name].reshape(-1, y.shape[-1]), torch.as_tensor(labels).reshape(-1))
    else:
        target = rng.random(y.shape).astype(np.float32)
        loss, d = losses.mse(y, target)
        tl = F.mse_loss(tout[name], torch.as_tensor(target))
    assert abs(loss - tl.item()) <= 1e-5 * max(1, abs(tl.item()))
    tl.backward()
    grads = ex.backward({name: d})
    for k in ex.trainable:
        _close(grads[k], tparams[k].grad, f"{model} grad {k}")
    for lname, (rm, rv) in running.items():
        _close(ex.params[f"{lname}.running_mean"], rm, f"{lname} running_mean")
        _close(ex.params[f"{lname}.running_var"], rv, f"{lname} running_var")
    # Inference mode uses the running statistics.
    ev = ex.forward(inputs, training=False)[name]
    tev, _ = torch_forward(g, {k: torch.tensor(v) for k, v in ex.params.items()}, inputs, training=False)
    _close(ev, tev[name], f"{model} inference output")


# ------------------------------------- fused and unfused convolution + pooling

CONV_CASES = [
    # (kernel, strides, conv pad, activation, pool window, pool strides, pool pad)
    ((3, 3), 1, False, "relu", (2, 2), 2, False),
    ((5, 5), 1, True, "relu", (3, 3), 2, False),    # overlapping windows
    ((3, 3), 2, True, None, (2, 2), 1, True),       # strided conv, padded pool
    ((4, 2), (2, 1), True, "relu", (3, 2), (2, 1), True),  # even kernel: asymmetric pads
    ((1, 1), 1, False, "sigmoid", (2, 2), 2, False),       # not fused: sigmoid
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[str(i) for i in range(len(CONV_CASES))])
def test_fused_conv_pool_matches_unfused(case):
    k, s, pad, act, win, ps, ppad = case
    text = (f"model M\nx = Input((3, 9, 10))\n"
            f"c = Convolution({k}, 4, strides={s}, pad={pad}, activation={act})(x)\n"
            f"p = MaxPooling({win}, strides={ps}, pad={ppad})(c)\n"
            f"z = Dense(5)(p)\noutput z\n")
    g = load_text(text, "m.net")
    rng = np.random.default_rng(1)
    params = {k_: v.astype(np.float64) + rng.normal(0, 0.1, v.shape) for k_, v in init_params(g, 0).items()}
    x = rng.standard_normal((3, 3, 9, 10))
    x[0, :, 2:6, 2:6] = 0.5  # ties inside pooling windows
    fused, plain = Executor(g, params, np.float64), Executor(g, params, np.float64, fuse=False)
    assert any(st.fused is not None for st in fused.steps) == (act != "sigmoid")
    R = {"z": rng.standard_normal((3, 5))}
    np.testing.assert_allclose(fused.forward({"x": x})["z"], plain.forward({"x": x})["z"], rtol=1e-12)
    gf, gp = fused.backward(R), plain.backward(R)
    for name in gp:
        np.testing.assert_allclose(gf[name], gp[name], rtol=1e-10, atol=1e-12, err_msg=name)

    # NaN propagates through the fused pooling exactly as through the unfused one.
    xn = x.copy()
    xn[1, 0, 4, 4] = np.nan
    np.testing.assert_array_equal(np.isnan(fused.forward({"x": xn})["z"]), np.isnan(plain.forward({"x": xn})["z"]))
    np.testing.assert_array_equal(np.isnan(fused.values["p"]), np.isnan(plain.values["p"]))
    assert np.isnan(fused.values["p"]).any()


# ---------------------------------- the layer kinds no model in models/ uses

OTHER_KINDS = """
model Kinds
img = Input((2, 8, 8))
seq = SequenceInput(6)
a = AveragePooling((3, 3), strides=2, pad=True)(img)
b = Convolution((3, 3), 4, pad=True, activation=tanh)(a)
c = LayerNormalization()(b)
d = Dense(5, activation=softmax)(c)
e = Dropout(0.5)(d)
s0 = Embedding(5)(seq)
s1 = Recurrence(LSTM(4))(s0)
s2 = LayerNormalization()(s1)
s3 = Dense(5, activation=sigmoid)(s2)
f = select_first(s3)
e2 = Embedding(3)(e)
g = splice([e2, f])
h = Activation(tanh)(g)
output h
"""


def test_other_kinds_gradcheck_and_pytorch():
    g = load_text(OTHER_KINDS, "kinds.net")
    kinds = {l.kind for l in g.layers}
    assert {"AveragePooling", "LayerNormalization", "Dropout", "SelectFirst", "Activation", "Splice", "Embedding"} <= kinds
    rng = np.random.default_rng(8)
    inputs = {"img": rng.standard_normal((3, 2, 8, 8)), "seq": rng.standard_normal((3, 4, 6))}
    # training=False: dropout is the identity, so finite differences see a fixed function
    _fd_check(g, inputs, n_coords=6, training=False)

    params = init_params(g, 2)
    for k, v in params.items():
        if k.endswith((".b", ".bias", ".scale")):
            v += rng.normal(0, 0.2, v.shape).astype(np.float32)
    x32 = {k: v.astype(np.float32) for k, v in inputs.items()}
    ex = Executor(g, {k: v.copy() for k, v in params.items()})
    out = ex.forward(x32, training=False)["h"]
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    tout, _ = torch_forward(g, tparams, x32, training=False)
    _close(out, tout["h"], "output")
    R = rng.standard_normal(out.shape).astype(np.float32)
    (tout["h"] * torch.tensor(R)).sum().backward()
    grads = ex.backward({"h": R})
    for k in ex.trainable:
        _close(grads[k], tparams[k].grad, f"grad {k}")
    # In training mode dropout draws from the rng it is given, reproducibly.
    y1 = ex.forward(x32, training=True, rng=np.random.default_rng(5))["h"]
    y2 = ex.forward(x32, training=True, rng=np.random.default_rng(5))["h"]
    assert np.array_equal(y1, y2) and not np.allclose(y1, out)


STABILIZED = """
img = Input((2, 4, 4))
seq = SequenceInput(3)
shared = Stabilizer(steepness=2.5)
a = Stabilizer()(img)
b = Dense(4)(a)
c = shared(b)
s = Recurrence(LSTM(4))(Stabilizer(steepness=0.5)(seq))
d = shared(select_last(s))
h = splice([c, d])
output h
"""


def test_gradcheck_stabilizer_on_images_sequences_and_shared():
    g = load_text(STABILIZED, "stabilized.net")
    alphas = [p.name for p in g.params() if p.name.endswith(".alpha")]
    assert len(alphas) == 3 and all(p.shape == () for p in g.params() if p.name in alphas)
    rng = np.random.default_rng(3)
    inputs = {"img": rng.standard_normal((3, 2, 4, 4)), "seq": rng.standard_normal((3, 5, 3))}
    assert _fd_check(g, inputs, n_coords=4) >= 3 * 4 + 3  # the shared alpha's gradient is the sum of two


# ------------------------------------------------------------ kernel registry

def test_every_kind_has_one_kernel_and_a_second_registration_fails():
    from netdsl.exec.kernels import KERNELS, Kernel, register

    kinds = {layer.kind for path in sorted(glob.glob(str(REPO / "models" / "*.net"))) for layer in load(path).layers}
    assert kinds <= set(KERNELS)
    with pytest.raises(ValueError, match="'Dense' registered twice"):
        register("Dense")(type("AnotherDense", (Kernel,), {}))
    assert type(KERNELS["Dense"]).__name__ == "Dense"
