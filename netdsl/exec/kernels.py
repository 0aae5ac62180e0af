"""Numba kernels behind netdsl.exec.ops.

Only loops that numpy cannot express without large temporaries or Python
loops live here; see ops.py for the measurements that justified each one.
All kernels are serial (no parallel=True / prange).  Measured on the shared
2-core machine while other jobs ran (load ~5): a prange col2im took 48-56 ms
against 32-36 ms serial (C=32, 14x14, 5x5, batch 64), and a prange 2x2 max
pool swung between 17 and 6 ms against 21 and 17 ms serial.  No steady win,
and the threads would compete with BLAS for the same two cores.
cache=True writes compiled code to __pycache__ or NUMBA_CACHE_DIR, which
numba reads itself.
"""

import math

import numpy as np
from numba import njit


@njit(cache=True)
def col2im(col, c, h, w, kh, kw, sh, sw, pt, pl, oh, ow):
    """Adjoint of im2col: scatter-add (N, C*kh*kw, oh*ow) back to (N, C, H, W).

    Row index of col is (c*kh + i)*kw + j, as ops._im2col produces.
    """
    n = col.shape[0]
    x = np.zeros((n, c, h, w), dtype=col.dtype)
    for b in range(n):
        for ch in range(c):
            for i in range(kh):
                for j in range(kw):
                    row = (ch * kh + i) * kw + j
                    for y in range(oh):
                        r = y * sh - pt + i
                        if r < 0 or r >= h:
                            continue
                        base = y * ow
                        for xo in range(ow):
                            q = xo * sw - pl + j
                            if q >= 0 and q < w:
                                x[b, ch, r, q] += col[b, row, base + xo]
    return x


@njit(cache=True)
def max_pool_fwd(x, kh, kw, sh, sw, pt, pl, oh, ow):
    """Returns (y, argmax) where argmax is the flat r*W+q index into the plane.

    The first maximum in row-major window order wins (strict '>'), and a NaN
    is always taken, as in PyTorch's CPU kernel; padding is never selected.
    """
    n, c, h, w = x.shape
    y = np.empty((n, c, oh, ow), dtype=x.dtype)
    arg = np.empty((n, c, oh, ow), dtype=np.int64)
    for b in range(n):
        for ch in range(c):
            for yo in range(oh):
                r0 = yo * sh - pt
                for xo in range(ow):
                    q0 = xo * sw - pl
                    best = -np.inf
                    bi = -1
                    for i in range(kh):
                        r = r0 + i
                        if r < 0 or r >= h:
                            continue
                        for j in range(kw):
                            q = q0 + j
                            if q < 0 or q >= w:
                                continue
                            v = x[b, ch, r, q]
                            if bi < 0 or v > best or math.isnan(v):
                                best = v
                                bi = r * w + q
                    y[b, ch, yo, xo] = best
                    arg[b, ch, yo, xo] = bi
    return y, arg


@njit(cache=True)
def max_pool_bwd(dy, arg, h, w):
    n, c, oh, ow = dy.shape
    dx = np.zeros((n, c, h * w), dtype=dy.dtype)
    for b in range(n):
        for ch in range(c):
            for yo in range(oh):
                for xo in range(ow):
                    k = arg[b, ch, yo, xo]
                    if k >= 0:
                        dx[b, ch, k] += dy[b, ch, yo, xo]
    return dx.reshape((n, c, h, w))


@njit(cache=True)
def avg_pool_fwd(x, kh, kw, sh, sw, pt, pl, oh, ow):
    """Mean over the window's cells that lie inside the unpadded input."""
    n, c, h, w = x.shape
    y = np.zeros((n, c, oh, ow), dtype=x.dtype)
    for b in range(n):
        for ch in range(c):
            for yo in range(oh):
                r0 = max(yo * sh - pt, 0)
                r1 = min(yo * sh - pt + kh, h)
                for xo in range(ow):
                    q0 = max(xo * sw - pl, 0)
                    q1 = min(xo * sw - pl + kw, w)
                    cnt = (r1 - r0) * (q1 - q0)
                    if cnt <= 0:
                        continue
                    s = 0.0
                    for r in range(r0, r1):
                        for q in range(q0, q1):
                            s += x[b, ch, r, q]
                    y[b, ch, yo, xo] = s / cnt
    return y


@njit(cache=True)
def avg_pool_bwd(dy, h, w, kh, kw, sh, sw, pt, pl):
    n, c, oh, ow = dy.shape
    dx = np.zeros((n, c, h, w), dtype=dy.dtype)
    for b in range(n):
        for ch in range(c):
            for yo in range(oh):
                r0 = max(yo * sh - pt, 0)
                r1 = min(yo * sh - pt + kh, h)
                for xo in range(ow):
                    q0 = max(xo * sw - pl, 0)
                    q1 = min(xo * sw - pl + kw, w)
                    cnt = (r1 - r0) * (q1 - q0)
                    if cnt <= 0:
                        continue
                    g = dy[b, ch, yo, xo] / cnt
                    for r in range(r0, r1):
                        for q in range(q0, q1):
                            dx[b, ch, r, q] += g
    return dx


@njit(cache=True)
def bias_relu_(y, b):
    """In place: y[n, o, p] = max(y[n, o, p] + b[o], 0) for (N, O, P) arrays."""
    n, o, p = y.shape
    for i in range(n):
        for k in range(o):
            bk = b[k]
            for j in range(p):
                v = y[i, k, j] + bk
                if v < 0:  # written this way so NaN propagates like np.maximum
                    v = 0
                y[i, k, j] = v


@njit(cache=True)
def lstm_cell_bwd(dh, dc_next, gates, c_prev, tc, dz, dc_prev):
    """Backward of lstm_cell_fwd: fills dz (N, 4h) and dc_prev (N, h) in place.

    dh is the total gradient reaching h_t, dc_next the one reaching c_t
    from step t+1 (in processing order).
    """
    n, hs = dh.shape
    for b in range(n):
        for k in range(hs):
            ig = gates[b, k]
            fg = gates[b, hs + k]
            gg = gates[b, 2 * hs + k]
            og = gates[b, 3 * hs + k]
            t = tc[b, k]
            dcv = dc_next[b, k] + dh[b, k] * og * (1.0 - t * t)
            dz[b, k] = dcv * gg * ig * (1.0 - ig)
            dz[b, hs + k] = dcv * c_prev[b, k] * fg * (1.0 - fg)
            dz[b, 2 * hs + k] = dcv * ig * (1.0 - gg * gg)
            dz[b, 3 * hs + k] = dh[b, k] * t * og * (1.0 - og)
            dc_prev[b, k] = dcv * fg


@njit(cache=True)
def scatter_add_rows(ids, dy, vocab):
    """dE[ids[k]] += dy[k] for flat ids (M,) and dy (M, D)."""
    d = dy.shape[1]
    out = np.zeros((vocab, d), dtype=dy.dtype)
    for k in range(ids.shape[0]):
        r = ids[k]
        for j in range(d):
            out[r, j] += dy[k, j]
    return out
