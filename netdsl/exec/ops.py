"""Layer kernels of the native executor, in the canonical layout.

Every netdsl target (PyTorch, Keras, TF-Estimator, Gluon, CNTK and this
executor) must compute the same numbers from the same weights, so this module
fixes one layout and one set of semantics and the emitters translate to and
from it:

- images are NCHW, vectors (N, F), sequences (N, T, F) with one T per batch;
- dense W is (out, in), y = x @ W.T + b, applied per time step on sequences;
- conv W is OIHW, cross-correlation, explicit (possibly asymmetric) zero pads
  ((top, bottom), (left, right)), output size (H + top + bottom - kh)//sh + 1;
- max pooling never selects padding and sends a window's gradient to its
  first maximum in row-major order (PyTorch's rule; spreading it over ties is
  wrong on MNIST's constant background); average pooling counts only
  non-padded cells (count_include_pad=False);
- dropout rate is the DROP probability, inverted scaling at training time;
- batch norm momentum is the weight of the new statistic (PyTorch), running
  variance is updated with the unbiased batch variance;
- LSTM gates are stacked i, f, g, o (PyTorch order) with one bias;
  go_backwards writes the state computed at input position t to output t;
- splice concatenates on the channel axis (1 for NCHW, last otherwise).

Each op is a pair of pure functions: ``*_forward(...) -> (y, cache)`` and
``*_backward(dy, cache) -> gradients`` (input gradient first, then parameter
gradients in argument order; None where a parameter was None).  No function
mutates its arguments; batch_norm_forward returns the new running statistics.
Results keep the floating dtype of the inputs (float32 to train, float64 for
gradient checks).

Why numba where it is used (serial kernels in kernels.py, timings on the
2-core machine, float32, batch 64):
- conv im2col is numpy (a strided view copied by reshape): 10.5 ms against
  36.8 ms for a numba loop at C=32, 14x14, 5x5; the GEMM is a batched
  np.matmul (10.5 ms, against 20 ms for one big GEMM plus the NCHW transpose);
- col2im (conv input gradient) is numba: 15 ms against 24 ms for a numpy loop
  of slice-adds over the kernel offsets;
- bias + ReLU after a conv is one numba pass: 0.12 ms against 1.2 ms;
- max pool 2x2 on 32x28x28: forward 8 ms against 16 ms (strided argmax),
  backward 0.4 ms against 10 ms (np.add.at); avg pool forward 3.7 against 17;
- embedding gradient scatter: 0.8 ms against 9.9 ms for np.add.at;
- the LSTM forward gate math stays numpy: its SIMD float32 exp/tanh ran in
  0.11 ms per step against 0.71 ms for numba's scalar libm calls; the
  backward gate math has no transcendentals and numba halves it (0.037 ms
  against 0.073 ms per step at N=64, h=128).
"""

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import kernels

ACTIVATIONS = (None, "relu", "sigmoid", "tanh", "softmax")


# ---------------------------------------------------------------- helpers

def _pair(v):
    if np.isscalar(v):
        return int(v), int(v)
    a, b = v
    return int(a), int(b)


def _pads(pads):
    """Accepts ((top, bottom), (left, right)), (ph, pw) or an int."""
    if pads is None:
        return (0, 0), (0, 0)
    if np.isscalar(pads):
        p = int(pads)
        return (p, p), (p, p)
    ph, pw = pads
    return _pair(ph), _pair(pw)


def _out_size(size, before, after, k, s):
    return (size + before + after - k) // s + 1


def _window_geometry(x, window, strides, pads):
    if x.ndim != 4:
        raise ValueError(f"expected an NCHW array, got shape {x.shape}")
    kh, kw = _pair(window)
    sh, sw = _pair(window if strides is None else strides)
    (pt, pb), (pl, pr) = _pads(pads)
    oh = _out_size(x.shape[2], pt, pb, kh, sh)
    ow = _out_size(x.shape[3], pl, pr, kw, sw)
    if oh <= 0 or ow <= 0:
        raise ValueError(
            f"window {kh}x{kw} does not fit input {x.shape[2]}x{x.shape[3]} "
            f"with pads {((pt, pb), (pl, pr))}")
    return kh, kw, sh, sw, pt, pb, pl, pr, oh, ow


def _sigmoid(x):
    # exp(-x) overflows to inf for very negative x, which still gives 0.
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _feature_axis(x):
    return 1 if x.ndim == 4 else x.ndim - 1


# ------------------------------------------------------------ activations

def activation_forward(x, kind):
    """kind in ACTIVATIONS; softmax runs over the feature axis (channels for
    NCHW, the last axis for vectors and sequences)."""
    if kind is None:
        y = x
    elif kind == "relu":
        y = np.maximum(x, 0)
    elif kind == "sigmoid":
        y = _sigmoid(x)
    elif kind == "tanh":
        y = np.tanh(x)
    elif kind == "softmax":
        y = _softmax(x, _feature_axis(x))
    else:
        raise ValueError(f"unknown activation {kind!r}; expected one of {ACTIVATIONS}")
    return y, (kind, y)


def activation_backward(dy, cache):
    kind, y = cache
    if kind is None:
        return dy
    if kind == "relu":
        # Gradient 0 at x == 0, like torch's threshold_backward on the output.
        return np.where(y > 0, dy, 0).astype(dy.dtype, copy=False)
    if kind == "sigmoid":
        return dy * y * (1 - y)
    if kind == "tanh":
        return dy * (1 - y * y)
    axis = _feature_axis(y)
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))


# ------------------------------------------------------------------ dense

def dense_forward(x, W, b=None, activation=None):
    """x (N, in) or (N, T, in); W (out, in); b (out,) or None."""
    if x.shape[-1] != W.shape[1]:
        raise ValueError(f"dense: input has {x.shape[-1]} features, W expects {W.shape[1]}")
    x2 = x.reshape(-1, x.shape[-1])
    z = x2 @ W.T
    if b is not None:
        z += b
    z = z.reshape(x.shape[:-1] + (W.shape[0],))
    y, acache = activation_forward(z, activation)
    return y, (x2, x.shape, W, b is not None, acache)


def dense_backward(dy, cache):
    """Returns (dx, dW, db)."""
    x2, xshape, W, has_b, acache = cache
    dz = activation_backward(dy, acache).reshape(-1, W.shape[0])
    dW = dz.T @ x2
    db = dz.sum(axis=0) if has_b else None
    dx = (dz @ W).reshape(xshape)
    return dx, dW, db


# ------------------------------------------------------------------- conv

def _im2col(x, kh, kw, sh, sw, pt, pb, pl, pr, oh, ow):
    """(N, C, H, W) -> (N, C*kh*kw, oh*ow) via a strided view of the padded input."""
    if pt or pb or pl or pr:
        x = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    x = np.ascontiguousarray(x)
    n, c = x.shape[:2]
    s0, s1, s2, s3 = x.strides
    view = as_strided(x, (n, c, kh, kw, oh, ow), (s0, s1, s2, s3, s2 * sh, s3 * sw),
                      writeable=False)
    return view.reshape(n, c * kh * kw, oh * ow)


def conv2d_forward(x, W, b=None, strides=(1, 1), pads=((0, 0), (0, 0)), activation=None):
    """x NCHW, W OIHW, b (O,) or None; pads ((top, bottom), (left, right))."""
    n, c, h, w = x.shape
    o, ci, kh, kw = W.shape
    if c != ci:
        raise ValueError(f"conv2d: input has {c} channels, W expects {ci}")
    kh, kw, sh, sw, pt, pb, pl, pr, oh, ow = _window_geometry(x, (kh, kw), strides, pads)
    col = _im2col(x, kh, kw, sh, sw, pt, pb, pl, pr, oh, ow)
    Wm = W.reshape(o, -1)
    y = np.matmul(Wm, col)  # (N, O, P): already NCHW, no transpose needed
    if activation == "relu" and b is not None:
        kernels.bias_relu_(y, b.astype(y.dtype, copy=False))
        y = y.reshape(n, o, oh, ow)
        acache = ("relu", y)
    else:
        if b is not None:
            y += b[:, None]
        y, acache = activation_forward(y.reshape(n, o, oh, ow), activation)
    geo = (c, h, w, kh, kw, sh, sw, pt, pl, oh, ow)
    return y, (col, W, b is not None, geo, acache)


def conv2d_backward(dy, cache):
    """Returns (dx, dW, db)."""
    col, W, has_b, geo, acache = cache
    c, h, w, kh, kw, sh, sw, pt, pl, oh, ow = geo
    n, o = dy.shape[:2]
    dz = activation_backward(dy, acache).reshape(n, o, oh * ow)
    Wm = W.reshape(o, -1)
    dW = np.matmul(dz, col.transpose(0, 2, 1)).sum(axis=0).reshape(W.shape)
    db = dz.sum(axis=(0, 2)) if has_b else None
    dcol = np.matmul(Wm.T, dz)
    dx = kernels.col2im(dcol, c, h, w, kh, kw, sh, sw, pt, pl, oh, ow)
    return dx, dW, db


# ---------------------------------------------------------------- pooling

def max_pool2d_forward(x, window, strides=None, pads=((0, 0), (0, 0))):
    """strides default to the window; padding cells are -inf."""
    kh, kw, sh, sw, pt, pb, pl, pr, oh, ow = _window_geometry(x, window, strides, pads)
    x = np.ascontiguousarray(x)  # one compiled specialisation per dtype
    y, arg = kernels.max_pool_fwd(x, kh, kw, sh, sw, pt, pl, oh, ow)
    return y, (arg, x.shape[2], x.shape[3])


def max_pool2d_backward(dy, cache):
    arg, h, w = cache
    return kernels.max_pool_bwd(np.ascontiguousarray(dy), arg, h, w)


def avg_pool2d_forward(x, window, strides=None, pads=((0, 0), (0, 0))):
    """Mean over the non-padded cells of each window."""
    kh, kw, sh, sw, pt, pb, pl, pr, oh, ow = _window_geometry(x, window, strides, pads)
    x = np.ascontiguousarray(x)
    y = kernels.avg_pool_fwd(x, kh, kw, sh, sw, pt, pl, oh, ow)
    return y, (x.shape[2], x.shape[3], kh, kw, sh, sw, pt, pl)


def avg_pool2d_backward(dy, cache):
    return kernels.avg_pool_bwd(np.ascontiguousarray(dy), *cache)


# ---------------------------------------------------------------- dropout

def dropout_forward(x, rate, training, rng):
    """rate = drop probability; rng a numpy Generator (used only when training)."""
    if not 0 <= rate <= 1:
        raise ValueError(f"dropout rate must be in [0, 1], got {rate}")
    if not training or rate == 0:
        return x, None
    if rate == 1:
        scale = np.zeros_like(x)
    else:
        keep = rng.random(x.shape) < 1 - rate
        scale = keep.astype(x.dtype) / x.dtype.type(1 - rate)
    return x * scale, scale


def dropout_backward(dy, cache):
    return dy if cache is None else dy * cache


# ---------------------------------------------------------- normalisation

def _bn_axes(x):
    if x.ndim == 4:
        return (0, 2, 3), (1, -1, 1, 1)
    if x.ndim == 2:
        return (0,), (1, -1)
    if x.ndim == 3:
        return (0, 1), (1, 1, -1)
    raise ValueError(f"batch_norm: unsupported input shape {x.shape}")


def batch_norm_forward(x, scale, bias, running_mean, running_var,
                       momentum=0.1, eps=1e-5, training=True):
    """Per-channel batch norm: channels are axis 1 of NCHW, the last axis of
    (N, F) and (N, T, F).

    Returns (y, cache, new_running_mean, new_running_var).  The running
    statistics are not mutated; in eval mode the given arrays come back.
    scale/bias may be None (no affine transform).
    """
    axes, bshape = _bn_axes(x)
    m = x.size // x.shape[_feature_axis(x)]
    if training:
        if m < 2:
            raise ValueError("batch_norm: training needs more than one value per channel")
        mean = x.mean(axis=axes)
        var = x.var(axis=axes)
        unbiased = var * (m / (m - 1))
        new_mean = (1 - momentum) * running_mean + momentum * mean.astype(running_mean.dtype)
        new_var = (1 - momentum) * running_var + momentum * unbiased.astype(running_var.dtype)
    else:
        mean = running_mean.astype(x.dtype, copy=False)
        var = running_var.astype(x.dtype, copy=False)
        new_mean, new_var = running_mean, running_var
    inv = 1 / np.sqrt(var + eps)
    xhat = (x - mean.reshape(bshape)) * inv.reshape(bshape)
    y = xhat
    if scale is not None:
        y = y * scale.reshape(bshape)
    if bias is not None:
        y = y + bias.reshape(bshape)
    cache = (training, xhat, inv, scale, bias is not None, axes, bshape, m)
    return y, cache, new_mean, new_var


def batch_norm_backward(dy, cache):
    """Returns (dx, dscale, dbias); through the batch statistics when training."""
    training, xhat, inv, scale, has_bias, axes, bshape, m = cache
    dscale = (dy * xhat).sum(axis=axes) if scale is not None else None
    dbias = dy.sum(axis=axes) if has_bias else None
    dxhat = dy * scale.reshape(bshape) if scale is not None else dy
    if training:
        s1 = dxhat.sum(axis=axes).reshape(bshape)
        s2 = (dxhat * xhat).sum(axis=axes).reshape(bshape)
        dx = (inv.reshape(bshape) / m) * (m * dxhat - s1 - xhat * s2)
    else:
        dx = dxhat * inv.reshape(bshape)
    return dx, dscale, dbias


def _ln_axes(x):
    # Sequences normalise each time step on its own, like nn.LayerNorm(F).
    return (x.ndim - 1,) if x.ndim == 3 else tuple(range(1, x.ndim))


def layer_norm_forward(x, scale, bias, eps=1e-5):
    """scale/bias have the shape of the normalised axes: x.shape[1:] for
    images and vectors, (F,) for sequences."""
    axes = _ln_axes(x)
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    inv = 1 / np.sqrt(var + eps)
    xhat = (x - mean) * inv
    y = xhat
    if scale is not None:
        y = y * scale
    if bias is not None:
        y = y + bias
    return y, (xhat, inv, scale, bias is not None, axes)


def layer_norm_backward(dy, cache):
    """Returns (dx, dscale, dbias)."""
    xhat, inv, scale, has_bias, axes = cache
    batch_axes = tuple(a for a in range(dy.ndim) if a not in axes)
    dscale = (dy * xhat).sum(axis=batch_axes) if scale is not None else None
    dbias = dy.sum(axis=batch_axes) if has_bias else None
    dxhat = dy * scale if scale is not None else dy
    m = int(np.prod([dy.shape[a] for a in axes]))
    s1 = dxhat.sum(axis=axes, keepdims=True)
    s2 = (dxhat * xhat).sum(axis=axes, keepdims=True)
    dx = (inv / m) * (m * dxhat - s1 - xhat * s2)
    return dx, dscale, dbias


# -------------------------------------------------------------- embedding

def embedding_forward(ids, E):
    """ids int (N, T) or (N,), E (vocab, dim) -> (..., dim)."""
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding ids must be integers, got dtype {ids.dtype}")
    vocab = E.shape[0]
    bad = (ids < 0) | (ids >= vocab)
    if bad.any():
        raise ValueError(
            f"embedding id {int(ids[bad].flat[0])} is out of range for a vocabulary "
            f"of size {vocab} (valid ids are 0..{vocab - 1})")
    return E[ids], (ids, vocab)


def embedding_backward(dy, cache):
    """Returns dE (vocab, dim); repeated ids accumulate."""
    ids, vocab = cache
    flat = np.ascontiguousarray(ids.reshape(-1), dtype=np.int64)
    return kernels.scatter_add_rows(flat, np.ascontiguousarray(dy.reshape(flat.size, -1)), vocab)


# ------------------------------------------------------------------- lstm

def lstm_forward(x, W, H, b, go_backwards=False, h0=None, c0=None):
    """x (N, T, F), W (4h, F), H (4h, h), b (4h,); gates i, f, g, o.

    Returns the hidden sequence (N, T, h).  With go_backwards the steps run
    t = T-1 .. 0 and output[:, t] is the state computed at input t.
    """
    n, T, F = x.shape
    hs = H.shape[1]
    if W.shape != (4 * hs, F) or H.shape != (4 * hs, hs) or b.shape != (4 * hs,):
        raise ValueError(f"lstm: inconsistent shapes x {x.shape} W {W.shape} "
                         f"H {H.shape} b {b.shape}")
    dtype = np.result_type(x, W)
    # Time-major internally so each step touches contiguous memory.
    xt = np.ascontiguousarray(x.transpose(1, 0, 2))
    xz = (xt.reshape(-1, F) @ W.T + b).reshape(T, n, 4 * hs)
    gates = np.empty((T, n, 4 * hs), dtype)
    cs = np.empty((T, n, hs), dtype)
    tcs = np.empty((T, n, hs), dtype)
    hseq = np.empty((T, n, hs), dtype)
    h = np.zeros((n, hs), dtype) if h0 is None else h0
    c = np.zeros((n, hs), dtype) if c0 is None else c0
    HT = H.T
    for t in (range(T - 1, -1, -1) if go_backwards else range(T)):
        z = xz[t] + h @ HT
        a = gates[t]
        a[:, :2 * hs] = _sigmoid(z[:, :2 * hs])
        a[:, 2 * hs:3 * hs] = np.tanh(z[:, 2 * hs:3 * hs])
        a[:, 3 * hs:] = _sigmoid(z[:, 3 * hs:])
        c = a[:, hs:2 * hs] * c + a[:, :hs] * a[:, 2 * hs:3 * hs]
        cs[t] = c
        tcs[t] = np.tanh(c)
        h = a[:, 3 * hs:] * tcs[t]
        hseq[t] = h
    cache = (xt, W, H, gates, cs, tcs, hseq, h0, c0, go_backwards)
    return hseq.transpose(1, 0, 2).copy(), cache


def lstm_backward(dy, cache, state_grads=False):
    """BPTT.  Returns (dx, dW, dH, db), plus (dh0, dc0) if state_grads."""
    xt, W, H, gates, cs, tcs, hseq, h0, c0, go_backwards = cache
    T, n, F = xt.shape
    hs = H.shape[1]
    dtype = gates.dtype
    dyt = np.ascontiguousarray(dy.transpose(1, 0, 2), dtype=dtype)
    zeros = np.zeros((n, hs), dtype)
    h_init = zeros if h0 is None else h0
    c_init = zeros if c0 is None else c0
    # The step processed just before step t holds the previous state.
    prev = (lambda t: t + 1) if go_backwards else (lambda t: t - 1)
    order = range(T) if go_backwards else range(T - 1, -1, -1)
    hprev = np.empty_like(hseq)
    dzs = np.empty_like(gates)
    dh_next = np.zeros((n, hs), dtype)
    dc_next = np.zeros((n, hs), dtype)
    dc_prev = np.empty((n, hs), dtype)
    for t in order:
        p = prev(t)
        first = p < 0 or p >= T
        hprev[t] = h_init if first else hseq[p]
        c_prev = c_init if first else cs[p]
        dh = dyt[t] + dh_next
        kernels.lstm_cell_bwd(dh, dc_next, gates[t], np.ascontiguousarray(c_prev, dtype=dtype),
                              tcs[t], dzs[t], dc_prev)
        dh_next = dzs[t] @ H
        dc_next, dc_prev = dc_prev, dc_next
    dz2 = dzs.reshape(-1, 4 * hs)
    dW = dz2.T @ xt.reshape(-1, F)
    dH = dz2.T @ hprev.reshape(-1, hs)
    db = dz2.sum(axis=0)
    dx = (dz2 @ W).reshape(T, n, F).transpose(1, 0, 2).copy()
    if state_grads:
        return dx, dW, dH, db, dh_next, dc_next
    return dx, dW, dH, db


# ------------------------------------------------------- shape and plumbing

def splice_forward(xs):
    """Concatenate on the channel axis (1 for NCHW, last for (N,F), (N,T,F))."""
    axis = _feature_axis(xs[0])
    return np.concatenate(xs, axis=axis), (axis, [a.shape[axis] for a in xs])


def splice_backward(dy, cache):
    """Returns a list with one gradient per input."""
    axis, sizes = cache
    parts = np.split(dy, np.cumsum(sizes)[:-1], axis=axis)
    return [np.ascontiguousarray(p) for p in parts]


def select_last_forward(x):
    return x[:, -1].copy(), (x.shape, -1)


def select_first_forward(x):
    return x[:, 0].copy(), (x.shape, 0)


def select_backward(dy, cache):
    """Backward of select_last_forward and select_first_forward."""
    shape, t = cache
    dx = np.zeros(shape, dy.dtype)
    dx[:, t] = dy
    return dx


select_last_backward = select_backward
select_first_backward = select_backward


def flatten_forward(x):
    return x.reshape(x.shape[0], -1), x.shape


def flatten_backward(dy, cache):
    return dy.reshape(cache)


def rescale_forward(x, scale, mean, std):
    """y = (x*scale - mean)/std with scalar constants; integer input (raw
    pixels) becomes float32."""
    if x.dtype.kind in "iub":
        x = x.astype(np.float32)
    scale, mean, std = float(scale), float(mean), float(std)
    return (x * scale - mean) / std, (scale, std)


def rescale_backward(dy, cache):
    scale, std = cache
    return dy * (scale / std)


def cosine_distance_forward(a, b, eps=1e-8):
    """Per-sample cosine SIMILARITY over the non-batch axes, shape (N, 1).

    Matches torch.nn.functional.cosine_similarity(a, b, dim=1, eps): each norm
    is clamped to eps separately and the vectors are normalised before the
    dot product.
    """
    if a.shape != b.shape:
        raise ValueError(f"cosine_distance: shapes differ {a.shape} vs {b.shape}")
    n = a.shape[0]
    a2 = a.reshape(n, -1)
    b2 = b.reshape(n, -1)
    na = np.sqrt((a2 * a2).sum(axis=1, keepdims=True))
    nb = np.sqrt((b2 * b2).sum(axis=1, keepdims=True))
    nac = np.maximum(na, eps).astype(na.dtype, copy=False)
    nbc = np.maximum(nb, eps).astype(nb.dtype, copy=False)
    an = a2 / nac
    bn = b2 / nbc
    y = (an * bn).sum(axis=1, keepdims=True)
    return y, (a2, b2, an, bn, na, nb, nac, nbc, y, a.shape)


def cosine_distance_backward(dy, cache):
    """Returns (da, db).

    Like torch, the eps clamp is invisible to autograd: the norm's gradient
    a/|a| is used even when |a| < eps (and 0 when |a| == 0).
    """
    a2, b2, an, bn, na, nb, nac, nbc, y, shape = cache
    g = dy.reshape(-1, 1)

    def grad(v, vn_other, nv, nvc):
        safe = np.where(nv == 0, 1, nv)
        radial = np.where(nv == 0, 0, v / safe)
        return g / nvc * (vn_other - y * radial)

    da = grad(a2, bn, na, nac).astype(a2.dtype, copy=False)
    db = grad(b2, an, nb, nbc).astype(b2.dtype, copy=False)
    return da.reshape(shape), db.reshape(shape)
