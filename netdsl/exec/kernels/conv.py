"""Convolution: cross-correlation, W OIHW, explicit (possibly asymmetric)
zero pads ((top, bottom), (left, right)), output size (H + top + bottom - kh)//sh + 1.

Channels-last GEMMs, a cache-sized chunk of samples each (CHUNK_BYTES): im2col
rows are (i, j, c) patches, so every copy moves kw*C contiguous floats, and the GEMM output
(N*oh*ow, O) keeps a pixel's channels together for the vectorised bias/ReLU/
pool pass. Node values stay NCHW; the transposes at the edges are small next
to the GEMMs. A MaxPooling that is the only reader of a linear/ReLU
convolution is fused into it (ConvMaxPool): bias, ReLU and pooling in one pass
that keeps only the argmax; backward scatters straight into the convolution's
pre-activation gradient.

The numba loops copy and add over 0-based slice views, never flat indices such
as dst + u: those make numba check each index for a negative wrap-around, and
that check keeps LLVM from vectorising the loop (3-7x slower, issue 16).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import Fusion, Kernel, pair, register, register_fusion
from .activation import activation_backward, activation_forward


def conv2d_forward(x, W, b=None, strides=(1, 1), pads=((0, 0), (0, 0)), activation=None):
    """x NCHW, W OIHW, b (O,) or None; pads ((top, bottom), (left, right))."""
    (pt, pb), (pl, pr) = pads
    col, z, geo = _conv_gemm(x, W, pair(strides), ((int(pt), int(pb)), (int(pl), int(pr))))
    n, o, oh, ow = geo[0], W.shape[0], geo[-2], geo[-1]
    if b is not None:
        np.add(z, b, out=z)
    if activation == "relu":
        np.maximum(z, 0, out=z)
    y = np.ascontiguousarray(z.reshape(n, oh, ow, o).transpose(0, 3, 1, 2))
    acache = None
    if activation not in (None, "relu"):
        y, acache = activation_forward(y, activation)
    return y, (col, geo, W, y, activation, acache, b is not None)


def conv2d_backward(dy, cache, need_dx=True):
    """Returns (dx or None, dW, db or None)."""
    col, geo, W, y, act, acache, has_b = cache
    if act == "relu":
        dy = np.multiply(dy, np.greater(y, 0))
    elif act is not None:
        dy = activation_backward(dy, acache)
    dz = np.ascontiguousarray(dy.transpose(0, 2, 3, 1)).reshape(-1, dy.shape[1])
    db = np.sum(dz, axis=0) if has_b else None
    return _weight_grads(W, col, dz, db, geo, need_dx)


def _weight_grads(W, col, dz, db, geo, need_dx):
    """dz (N*oh*ow, O) is the gradient of the pre-activation output."""
    n, c, h, w, kh, kw, sh, sw, pt, pl, oh, ow = geo
    o = W.shape[0]
    # OpenBLAS runs this long-K product faster with the smaller side as the rows: keras_cnn's
    # first layer (9 columns, 32 channels) 0.88 -> 0.62 ms; its second (288, 64) prefers dz.T @ col.
    dWm = np.matmul(col.T, dz).T if col.shape[1] < o else np.matmul(dz.T, col)
    dW = np.ascontiguousarray(dWm.reshape(o, kh, kw, c).transpose(0, 3, 1, 2))
    dx = None
    if need_dx:
        Wm = _w_ohwc(W)
        dxh = np.zeros((n, h, w, c), dz.dtype)
        p = oh * ow
        step = _chunk_samples(n, p * Wm.shape[1] * dz.itemsize)
        dcol = np.empty((step * p, Wm.shape[1]), dz.dtype)
        for b0 in range(0, n, step):
            b1 = min(n, b0 + step)
            d = dcol[:(b1 - b0) * p]
            np.matmul(dz[b0 * p:b1 * p], Wm, out=d)
            _col2im(d, kh, kw, sh, sw, pt, pl, oh, ow, dxh[b0:b1])
        dx = np.ascontiguousarray(dxh.transpose(0, 3, 1, 2))
    return dx, dW, db


def _col_elems(call, out_elems):
    # im2col: kh*kw*C values per output pixel; kept for backward, and dcol is as big.
    shape = call.p("W").shape
    return out_elems // shape[0] * int(np.prod(shape[1:]))


def conv1d_forward(x, W, b=None, strides=(1,), pads=((0, 0),), activation=None):
    """x (N, T, F): a sequence whose features are the channels; W (O, F, k) OIW; pads ((before, after),).
    The 2-D path on a (N, F, 1, T) image with a (O, F, 1, k) filter; the output is (N, T', O) again."""
    x4 = x.transpose(0, 2, 1)[:, :, None, :]
    y4, cache = conv2d_forward(x4, W[:, :, None, :], b, (1, int(strides[0])), ((0, 0), tuple(pads[0])), activation)
    return np.ascontiguousarray(y4[:, :, 0, :].transpose(0, 2, 1)), cache


def conv1d_backward(dy, cache, need_dx=True):
    """dy (N, T', O) -> (dx (N, T, F) or None, dW (O, F, k), db or None)."""
    dx4, dW4, db = conv2d_backward(dy.transpose(0, 2, 1)[:, :, None, :], cache, need_dx)
    dx = None if dx4 is None else np.ascontiguousarray(dx4[:, :, 0, :].transpose(0, 2, 1))
    return dx, np.ascontiguousarray(dW4[:, :, 0, :]), db


@register("Convolution")
class Convolution(Kernel):
    def forward(self, call, xs, training, rng):
        if len(call.attr("kernel")) == 1:
            return conv1d_forward(xs[0], call.p("W"), call.opt("b"), call.attr("strides"), call.attr("pads"),
                                  call.attr("activation"))
        x = xs[0]
        if call.attr("reduction_rank") == 0:  # (N, H, W) without a channel axis: the (N, 1, H, W) image
            x = x[:, None]
        y, cache = conv2d_forward(x, call.p("W"), call.opt("b"), call.attr("strides"), call.attr("pads"),
                                  call.attr("activation"))
        if call.attr("no_filter_axis"):  # num_filters left out: (N, 1, H', W') is the rank-2 (N, H', W')
            y = y[:, 0]
        return y, cache

    def backward(self, call, dy, cache, need):
        if len(call.attr("kernel")) == 1:
            dx, dW, db = conv1d_backward(dy, cache, need[0])
            return [dx], {"W": dW, "b": db}
        if call.attr("no_filter_axis"):
            dy = dy[:, None]
        dx, dW, db = conv2d_backward(dy, cache, need[0])
        if dx is not None and call.attr("reduction_rank") == 0:
            dx = dx[:, 0]
        return [dx], {"W": dW, "b": db}

    def workspace(self, call, out_elems, in_elems):
        return 2 * _col_elems(call, out_elems) + 2 * out_elems


@register_fusion("Convolution", "MaxPooling")
class ConvMaxPool(Fusion):
    """Convolution (linear or ReLU) + its only reader, a MaxPooling: one pass
    adds the bias, applies ReLU and pools, keeping the argmax (or -1 where
    ReLU zeroed the window: no gradient flows there)."""

    def applies(self, first, second):
        return (first.attr("activation") in (None, "relu") and len(first.attr("kernel")) == 2
                and first.attr("reduction_rank") != 0 and not first.attr("no_filter_axis"))

    def forward(self, call, pool_call, xs):
        W, b = call.p("W"), call.opt("b")
        col, z, geo = _conv_gemm(xs[0], W, call.attr("strides"), call.attr("pads"))
        n, oh, ow = geo[0], geo[-2], geo[-1]
        o = W.shape[0]
        kh, kw = pool_call.attr("window")
        sh, sw = pool_call.attr("strides")
        (pt, pb), (pl, pr) = pool_call.attr("pads")
        ph, pw = pool_call.node.type.shape[1:]
        yh = np.empty((n, ph, pw, o), z.dtype)
        arg = np.empty((n, ph, pw, o), np.int32)
        bias = b if b is not None else np.zeros(o, z.dtype)
        relu = call.attr("activation") == "relu"
        tiled = (kh, kw, sh, sw, pt, pb, pl, pr) == (2, 2, 2, 2, 0, 0, 0, 0)
        if tiled:
            _bias_act_maxpool_2x2(z, bias, relu, n, oh, ow, yh, arg)  # the common case, 2.4x faster
        else:
            _bias_act_maxpool(z, bias, relu, n, oh, ow, kh, kw, sh, sw, pt, pl, yh, arg)
        return np.ascontiguousarray(yh.transpose(0, 3, 1, 2)), (col, geo, W, arg, b is not None, tiled)

    def backward(self, call, dy, cache, need):
        col, geo, W, arg, has_b, tiled = cache
        n, oh, ow = geo[0], geo[-2], geo[-1]
        db = np.empty(W.shape[0], dy.dtype)
        dyh = np.ascontiguousarray(dy.transpose(0, 2, 3, 1))
        if tiled:  # 2x2/2 windows tile the plane: every row of dz is written, no memset
            dz = np.empty((n * oh * ow, W.shape[0]), dy.dtype)
            _unpool_2x2(dyh, arg, oh, ow, dz, db)
        else:
            dz = np.zeros((n * oh * ow, W.shape[0]), dy.dtype)
            _unpool(dyh, arg, dz, db)
        dx, dW, db = _weight_grads(W, col, dz, db if has_b else None, geo, need[0])
        return [dx], {"W": dW, "b": db}


def _w_ohwc(W):
    o, c, kh, kw = W.shape
    return np.ascontiguousarray(W.transpose(0, 2, 3, 1)).reshape(o, kh * kw * c)


def _conv_gemm(x, W, strides, pads):
    """Returns col (N*oh*ow, kh*kw*C), z = col @ W' (N*oh*ow, O) and the geometry; in chunks of
    samples (CHUNK_BYTES)."""
    n, c, h, w = x.shape
    o, ci, kh, kw = W.shape
    if c != ci:
        raise ValueError(f"conv2d: input has {c} channels, W expects {ci}")
    sh, sw = strides
    (pt, pb), (pl, pr) = pads
    oh, ow = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    p, k = oh * ow, kh * kw * c
    col = np.empty((n * p, k), x.dtype)
    z = np.empty((n * p, o), x.dtype)
    Wt = _w_ohwc(W).T
    step = _chunk_samples(n, p * k * x.itemsize)
    for b0 in range(0, n, step):
        b1 = min(n, b0 + step)
        _im2col(xh[b0:b1], kh, kw, sh, sw, pt, pl, oh, ow, col[b0 * p:b1 * p])
        np.matmul(col[b0 * p:b1 * p], Wt, out=z[b0 * p:b1 * p])
    return col, z, (n, c, h, w, kh, kw, sh, sw, pt, pl, oh, ow)


# im2col and its GEMM (and the input gradient's GEMM and col2im) run a few samples at a time, so the
# GEMM reads the patches while they are still in cache (L2 is 1 MiB a core here). keras_cnn, batch 64,
# 1 thread, alternating in one process: a training step 17.2-17.8 -> 16.2-16.8 ms CPU; chunks of
# 0.5 to 4 MiB all do about as well, and fewer, larger GEMMs split better over threads.
CHUNK_BYTES = 1 << 20


def _chunk_samples(n, bytes_per_sample):
    """Samples per chunk: CHUNK_BYTES of patches at one BLAS thread; the whole batch at more, where
    every GEMM call is a hand-over to BLAS's other threads (no gain measured there, and each
    hand-over waits for a core when the machine is busy)."""
    if _blas_threads() != 1:
        return max(1, n)
    return max(1, min(n, CHUNK_BYTES // max(1, bytes_per_sample)))


def _blas_threads():
    from ..runtime import blas_threads  # runtime imports the kernels: not at module level

    return blas_threads()


@njit(cache=True)
def _im2col(xh, kh, kw, sh, sw, pt, pl, oh, ow, col):
    """col[(b, y, x), (i, j, c)] = xh[b, y*sh - pt + i, x*sw - pl + j, c], 0 in the padding.
    Copies run over slice views indexed from 0 (as in _col2im): keras_cnn's im2col 2.5 -> 0.24 ms
    (conv2) and 1.2 -> 0.56 ms (conv1, one channel)."""
    n, h, w, c = xh.shape
    K = kh * kw * c
    kc = kw * c
    xf = xh.reshape(-1)
    cf = col.reshape(-1)
    for b in range(n):
        for y in range(oh):
            for xo in range(ow):
                dst_row = ((b * oh + y) * ow + xo) * K
                q0 = xo * sw - pl
                inside = q0 >= 0 and q0 + kw <= w
                for i in range(kh):
                    r = y * sh - pt + i
                    d = cf[dst_row + i * kc:dst_row + (i + 1) * kc]
                    if r < 0 or r >= h:
                        d[:] = 0
                    elif inside:
                        src = ((b * h + r) * w + q0) * c
                        s = xf[src:src + kc]
                        for u in range(kc):
                            d[u] = s[u]
                    else:
                        for j in range(kw):
                            q = q0 + j
                            if q < 0 or q >= w:
                                for u in range(c):
                                    d[j * c + u] = 0
                            else:
                                src = ((b * h + r) * w + q) * c
                                s = xf[src:src + c]
                                for u in range(c):
                                    d[j * c + u] = s[u]


@njit(cache=True)
def _col2im(dcol, kh, kw, sh, sw, pt, pl, oh, ow, dxh):
    """The adjoint of _im2col: scatter-add patches back into dxh (N, H, W, C).
    The adds run over slice views indexed from 0: flat indices dst + u made numba
    check for negative indices per element and kept LLVM from vectorising (7x slower)."""
    n, h, w, c = dxh.shape
    K = kh * kw * c
    kc = kw * c
    df = dxh.reshape(-1)
    cf = dcol.reshape(-1)
    for b in range(n):
        for y in range(oh):
            for xo in range(ow):
                src_row = ((b * oh + y) * ow + xo) * K
                q0 = xo * sw - pl
                inside = q0 >= 0 and q0 + kw <= w
                for i in range(kh):
                    r = y * sh - pt + i
                    if r < 0 or r >= h:
                        continue
                    src = src_row + i * kc
                    if inside:
                        dst = ((b * h + r) * w + q0) * c
                        d = df[dst:dst + kc]
                        s = cf[src:src + kc]
                        for u in range(kc):
                            d[u] += s[u]
                    else:
                        for j in range(kw):
                            q = q0 + j
                            if q >= 0 and q < w:
                                dst = ((b * h + r) * w + q) * c
                                d = df[dst:dst + c]
                                s = cf[src + j * c:src + j * c + c]
                                for u in range(c):
                                    d[u] += s[u]


@njit(cache=True)
def _bias_act_maxpool(z, bias, relu, n, oh, ow, kh, kw, sh, sw, pt, pl, yh, arg):
    """yh (N, ph, pw, O) = max over each window of act(z + bias), z (N*oh*ow, O).

    arg holds the row of z of the window's first maximum (row-major window
    order, as PyTorch; padding never wins), or -1 where ReLU clamped the
    maximum to 0: ReLU's gradient is 0 there anyway. NaN propagates.
    Comparisons are selects, not branches: on real data they are coin flips.
    """
    o = z.shape[1]
    ph, pw = yh.shape[1], yh.shape[2]
    best = np.empty(o, z.dtype)
    bi = np.empty(o, np.int64)
    nan = np.empty(o, np.bool_)
    for b in range(n):
        for py in range(ph):
            r0 = py * sh - pt
            for px in range(pw):
                q0 = px * sw - pl
                first = True
                for i in range(kh):
                    r = r0 + i
                    if r < 0 or r >= oh:
                        continue
                    for j in range(kw):
                        q = q0 + j
                        if q < 0 or q >= ow:
                            continue
                        row = (b * oh + r) * ow + q
                        if first:
                            for u in range(o):
                                v = z[row, u] + bias[u]
                                best[u] = v
                                bi[u] = row
                                nan[u] = v != v
                            first = False
                        else:
                            for u in range(o):
                                v = z[row, u] + bias[u]
                                nan[u] |= v != v
                                take = v > best[u]
                                best[u] = v if take else best[u]
                                bi[u] = row if take else bi[u]
                for u in range(o):
                    v = best[u]
                    k = bi[u]
                    if nan[u]:
                        v = np.nan
                    elif relu and v <= 0:
                        v = 0
                        k = -1
                    yh[b, py, px, u] = v
                    arg[b, py, px, u] = k


@njit(cache=True)
def _bias_act_maxpool_2x2(z, bias, relu, n, oh, ow, yh, arg):
    """_bias_act_maxpool for 2x2 windows at stride 2 without padding, unrolled:
    a tournament of strict '>' keeps the first maximum in row-major order."""
    o = z.shape[1]
    ph, pw = yh.shape[1], yh.shape[2]
    for b in range(n):
        for py in range(ph):
            for px in range(pw):
                r0 = (b * oh + 2 * py) * ow + 2 * px
                r1, r2 = r0 + 1, r0 + ow
                r3 = r2 + 1
                for u in range(o):
                    bu = bias[u]
                    a0, a1 = z[r0, u] + bu, z[r1, u] + bu
                    a2, a3 = z[r2, u] + bu, z[r3, u] + bu
                    t1 = a1 > a0
                    m01, i01 = (a1, r1) if t1 else (a0, r0)
                    t3 = a3 > a2
                    m23, i23 = (a3, r3) if t3 else (a2, r2)
                    t = m23 > m01
                    v, k = (m23, i23) if t else (m01, i01)
                    if (a0 != a0) | (a1 != a1) | (a2 != a2) | (a3 != a3):
                        v = np.nan
                    elif relu and v <= 0:
                        v = 0
                        k = -1
                    yh[b, py, px, u] = v
                    arg[b, py, px, u] = k


@njit(cache=True)
def _unpool_2x2(dyh, arg, oh, ow, dz, db):
    """_unpool for 2x2/stride-2 windows, writing EVERY row of dz (the gradient
    or 0), so dz needs no zero fill; an odd last row/column gets zeros.
    Each window row is written once, as a select on arg (vectorises; a zero
    fill then a scatter was 3x slower on keras_cnn's first layer)."""
    n, ph, pw, o = dyh.shape
    acc = np.zeros(o, np.float64)
    for b in range(n):
        for py in range(ph):
            for px in range(pw):
                r0 = (b * oh + 2 * py) * ow + 2 * px
                g = dyh[b, py, px]
                a = arg[b, py, px]
                for r in (r0, r0 + 1, r0 + ow, r0 + ow + 1):
                    d = dz[r]
                    for u in range(o):
                        d[u] = g[u] if a[u] == r else 0
                for u in range(o):
                    acc[u] += g[u] if a[u] >= 0 else 0  # adding 0 where nothing was scattered: exact
        for y in range(oh):
            for x in range(ow):
                if y >= 2 * ph or x >= 2 * pw:
                    dz[(b * oh + y) * ow + x] = 0
    for u in range(o):
        db[u] = acc[u]


@njit(cache=True)
def _unpool(dyh, arg, dz, db):
    """dz[arg, o] += dyh (N, ph, pw, O); db[o] = the sum of what was scattered."""
    n, ph, pw, o = dyh.shape
    acc = np.zeros(o, np.float64)
    for b in range(n):
        for py in range(ph):
            for px in range(pw):
                for u in range(o):
                    k = arg[b, py, px, u]
                    if k >= 0:
                        g = dyh[b, py, px, u]
                        dz[k, u] += g
                        acc[u] += g
    for u in range(o):
        db[u] = acc[u]
