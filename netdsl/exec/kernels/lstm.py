"""LSTM: gates stacked i, f, g, o (PyTorch order) with one bias; with
go_backwards the steps run t = T-1 .. 0 and output t is the state computed at
input position t. With a projection P (cell_shape, docs/ir.md) the output and
the state fed back are h = (o * tanh(c)) @ P.T.

A step is one numpy exp pass for all four gates and two fused numba passes
(tanh(z) = 2 sigmoid(2z) - 1): numpy's float32 exp is SIMD, numba's is a
scalar libm call and its tanh 7x slower still. The backward gate math has no
transcendentals and numba halves it.
"""
from __future__ import annotations

import concurrent.futures
import os

import numpy as np
from numba import njit

from . import Kernel, lstm_peephole, masking, register


@register("LSTM")
class LSTM(Kernel):
    def forward(self, call, xs, training, rng):
        if call.opt("Ci") is not None or call.opt("Sdh") is not None:  # peepholes, stabilizers: lstm_peephole.py
            return lstm_peephole.forward(call, xs[0])
        W, H, b, P = call.p("W"), call.p("H"), call.p("b"), call.opt("P")
        go_backwards = bool(call.attr("go_backwards", False))
        init = float(call.attr("initial_state", 0.0))
        lengths = call.lengths()
        if lengths is None:
            y, cache = lstm_forward(xs[0], W, H, b, go_backwards, P, init)
            return y, (lstm_backward, cache)
        # A padded batch: the forward-in-time loop on each sample's valid steps (masking.py), so each
        # sample starts from the initial state at its first valid step (its last, going backwards).
        y, cache = masking.run_masked(lambda x: lstm_forward(x, W, H, b, P=P, init=init), lstm_backward, xs[0],
                                      lengths, go_backwards)
        return y, (masking.backward_masked, cache)

    def backward(self, call, dy, cache, need):
        if cache[0] is lstm_peephole.PEEPHOLE:
            return lstm_peephole.backward(dy, cache, need[0])
        backward, cache = cache
        dx, dW, dH, db, *dP = backward(dy, cache, need[0])
        grads = {"W": dW, "H": dH, "b": db}
        if dP:
            grads["P"] = dP[0]
        return [dx], grads

    def fans(self, layer, param):
        # W and H stack four (n, in) gate blocks: each gate is initialised as its
        # own matrix, fan_out = n (not 4n), as CNTK and PyTorch see them.
        if param.name.endswith((".W", ".H")):
            return param.shape[1], param.shape[0] // 4
        return None, None

    def workspace(self, call, out_elems, in_elems):
        # gates (4h) and gate gradients (4h), cell, tanh(cell), a time-major copy of x
        return 10 * out_elems + in_elems


def lstm_forward(x, W, H, b, go_backwards=False, P=None, init=0.0):
    """x (N, T, F) -> (N, T, h); gates i, f, g, o (docs/ir.md); P (h, cell) projects
    o * tanh(c) to h, or None: h = o * tanh(c). Both h and c start at `init`
    (Recurrence's initial_state, a constant: it gets no gradient).

    Internally time-major, with the gate rows reordered to i, f, o, g and
    scaled by -1 (i, f, o) and -2 (g), so the pre-activations come out of the
    GEMMs ready for ONE numpy exp pass per step (numpy's exp is SIMD; numba's
    is a scalar libm call and its tanh is 7x slower still):
    sigmoid(z) = 1 / (1 + exp(-z)), tanh(z) = 2 / (1 + exp(-2z)) - 1.
    Everything else of a step is two fused numba passes.
    """
    n, T, F = x.shape
    hs = W.shape[0] // 4  # the cell's units (H.shape[1] is the output's)
    perm = np.r_[0:2 * hs, 3 * hs:4 * hs, 2 * hs:3 * hs]
    scale = np.full((4 * hs, 1), -1, x.dtype)
    scale[3 * hs:] = -2
    Ws, Hs, bs = W[perm] * scale, H[perm] * scale, b[perm] * scale[:, 0]
    xt = np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(T * n, F)
    gates = np.empty((T * n, 4 * hs), x.dtype)
    WsT = Ws.T

    def projection(lo, hi):  # rows lo..hi-1 of the time-major inputs
        np.matmul(xt[lo:hi], WsT, out=gates[lo:hi])
        np.add(gates[lo:hi], bs, out=gates[lo:hi])

    in_parts(T * n, projection)
    gates = gates.reshape(T, n, 4 * hs)
    cs = np.empty((T, n, hs), x.dtype)
    tcs = np.empty((T, n, hs), x.dtype)
    hseq = np.empty((T, n, hs), x.dtype)  # o * tanh(c)
    pseq = hseq if P is None else np.empty((T, n, P.shape[0]), x.dtype)  # the output h
    PT = None if P is None else P.T
    HsT = np.ascontiguousarray(Hs.T)  # OpenBLAS: 64x128x512 at 94 GFLOPS row-major, 75 as a transposed view
    one = x.dtype.type(1)  # typed constants keep numba's arithmetic in float32 (1.6x faster)
    order = range(T - 1, -1, -1) if go_backwards else range(T)

    def rows(lo, hi):  # the recurrence of samples lo..hi-1, independent of the others
        h = None if init == 0 else np.full((hi - lo, pseq.shape[2]), init, x.dtype)  # the output h
        c = np.full((hi - lo, hs), init, x.dtype)
        tmp = np.empty((hi - lo, 4 * hs), x.dtype)
        for t in order:
            a, ct, tct, ht = gates[t, lo:hi], cs[t, lo:hi], tcs[t, lo:hi], hseq[t, lo:hi]
            if h is not None:
                np.matmul(h, HsT, out=tmp)
                np.add(a, tmp, out=a)
            np.exp(a, out=a)
            _lstm_gates_cell(a, c, ct, tct, one)
            np.exp(tct, out=tct)
            _lstm_hidden(a, tct, ht, one)
            h = ht
            if P is not None:
                h = pseq[t, lo:hi]
                np.matmul(ht, PT, out=h)
            c = ct

    in_parts(n, rows)
    cache = (xt, W, H[perm], perm, gates, cs, tcs, hseq, go_backwards, x.shape, P, pseq, init)
    return np.ascontiguousarray(pseq.transpose(1, 0, 2)), cache


@njit(cache=True, error_model="numpy", nogil=True)
def _lstm_gates_cell(a, c_prev, c, u, one):
    """a holds exp(-z) (i, f, o) and exp(-2z) (g): activate the gates in place,
    c = f * c_prev + i * g, and u = -2c for the next exp (tanh(c)).
    The loops run over 0-based row slices (as conv.py's): 2-D indices with column offsets such as
    a[b, hs + k] kept LLVM from vectorising them."""
    n, hs = c.shape
    two = one + one
    for b in range(n):
        sig = a[b, 0:3 * hs]
        for k in range(3 * hs):
            sig[k] = one / (one + sig[k])
        ig, fg, gg = a[b, 0:hs], a[b, hs:2 * hs], a[b, 3 * hs:4 * hs]
        cp, cb, ub = c_prev[b], c[b], u[b]
        for k in range(hs):
            g = two / (one + gg[k]) - one
            gg[k] = g
            ck = ig[k] * g + fg[k] * cp[k]
            cb[k] = ck
            ub[k] = -two * ck


@njit(cache=True, error_model="numpy", nogil=True)
def _lstm_hidden(a, tc, h, one):
    """tc holds exp(-2c): tc <- tanh(c); h = o * tanh(c)."""
    n, hs = h.shape
    for b in range(n):
        for k in range(hs):
            t = (one + one) / (one + tc[b, k]) - one
            tc[b, k] = t
            h[b, k] = a[b, 2 * hs + k] * t


def lstm_backward(dy, cache, need_dx=True):
    """BPTT; returns (dx or None, dW, dH, db) in the canonical gate order, and dP after
    them when the LSTM projects."""
    xt, W, Hp, perm, gates, cs, tcs, hseq, go_backwards, xshape, P, pseq, init = cache
    T, n, hs = hseq.shape
    dyt = np.ascontiguousarray(dy.transpose(1, 0, 2))
    live = dyt.reshape(T, -1).any(axis=1)  # SelectLast leaves all steps but one at 0
    order = range(T) if go_backwards else range(T - 1, -1, -1)
    prev = 1 if go_backwards else -1  # the step processed just before t is t + prev
    dzs = np.empty_like(gates)
    # the gradient at the output h, per step; with no projection it is dh itself
    dhps = None if P is None else np.empty((T, n, P.shape[0]), gates.dtype)
    one = gates.dtype.type(1)

    def rows(lo, hi):  # back through the recurrence of samples lo..hi-1
        dh = np.empty((hi - lo, hs), gates.dtype)
        dc = np.zeros((hi - lo, hs), gates.dtype)
        c0 = np.full((hi - lo, hs), init, gates.dtype)  # the cell state before the first step
        first = True
        for t in order:
            p = t + prev
            dhp = dh if P is None else dhps[t, lo:hi]
            if first:
                dhp[...] = dyt[t, lo:hi]
                first = False
            else:
                np.matmul(dzs[t - prev, lo:hi], Hp, out=dhp)
                if live[t]:
                    np.add(dhp, dyt[t, lo:hi], out=dhp)
            if P is not None:
                np.matmul(dhp, P, out=dh)
            _lstm_cell_bwd(dh, dc, gates[t, lo:hi], cs[p, lo:hi] if 0 <= p < T else c0, tcs[t, lo:hi],
                           dzs[t, lo:hi], one)

    in_parts(n, rows)
    dz2 = dzs.reshape(T * n, 4 * hs)
    # z_t reads h_{t+prev}; the first step read the initial state (nothing to dH when it is 0).
    us = pseq.shape[2]
    dz_h, h_prev = ((dzs[:-1], pseq[1:]) if go_backwards else (dzs[1:], pseq[:-1]))
    dz_h, h_prev = dz_h.reshape(-1, 4 * hs), h_prev.reshape(-1, us)
    dWpT = np.empty((xt.shape[1], 4 * hs), gates.dtype)
    dHp = np.empty((4 * hs, us), gates.dtype)

    def weight_grads(lo, hi):  # gate rows lo..hi-1 of dW and dH, each a whole sum over steps and samples
        # dW with the narrow side (F) as the rows: 69 -> 78 GFLOPS at row_lstm's 512x1792x28
        np.matmul(xt.T, dz2[:, lo:hi], out=dWpT[:, lo:hi])
        np.matmul(dz_h[:, lo:hi].T, h_prev, out=dHp[lo:hi])

    in_parts(4 * hs, weight_grads)
    dWp = dWpT.T
    if init != 0:
        first_dz = dzs[T - 1 if go_backwards else 0].sum(axis=0)
        dHp += np.outer(first_dz, np.full(us, init, gates.dtype))
    dbp = np.sum(dz2, axis=0)
    inv = np.argsort(perm)
    dx = None
    if need_dx:
        dx = np.ascontiguousarray(np.matmul(dz2, W[perm]).reshape(T, n, -1).transpose(1, 0, 2))
    if P is None:
        return dx, dWp[inv], dHp[inv], dbp[inv]
    dP = np.matmul(dhps.reshape(-1, P.shape[0]).T, hseq.reshape(-1, hs))
    return dx, dWp[inv], dHp[inv], dbp[inv], dP


@njit(cache=True, nogil=True)
def _lstm_cell_bwd(dh, dc, a, c_prev, tc, dz, one):
    """One step back through the cell with gates a = (i, f, o, g) activated.
    dc carries the cell gradient from the later step in and out (in place).
    Over 0-based row slices, as _lstm_gates_cell: row_lstm's step 21 -> 7 us."""
    n, hs = dh.shape
    for b in range(n):
        ar, dzr = a[b], dz[b]
        ig, fg, og, gg = ar[0:hs], ar[hs:2 * hs], ar[2 * hs:3 * hs], ar[3 * hs:4 * hs]
        di, df, do, dg = dzr[0:hs], dzr[hs:2 * hs], dzr[2 * hs:3 * hs], dzr[3 * hs:4 * hs]
        dhb, dcb, cp, tcb = dh[b], dc[b], c_prev[b], tc[b]
        for k in range(hs):
            i_, f_, o_, g_ = ig[k], fg[k], og[k], gg[k]
            t = tcb[k]
            d = dhb[k]
            dcv = dcb[k] + d * o_ * (one - t * t)
            di[k] = dcv * g_ * i_ * (one - i_)
            df[k] = dcv * cp[k] * f_ * (one - f_)
            do[k] = d * t * o_ * (one - o_)
            dg[k] = dcv * i_ * (one - g_ * g_)
            dcb[k] = dcv * f_


# At k BLAS threads the recurrences run as k groups of samples on k threads, each GEMM on one BLAS
# thread: the per-step GEMMs (64 x 128 x 512 for row_lstm) are too small for OpenBLAS to split well, and
# the elementwise passes run in parallel too (numba nogil, numpy ufuncs drop the GIL). A group is never
# smaller than MIN_ROWS samples. Each sample's arithmetic is the same as in one group. The whole-sequence
# GEMMs split the same way (input projection by rows, weight gradients by gate rows), so OpenBLAS's own
# threads, which spin between calls, stay idle during the LSTM.
MIN_ROWS = 8
_pool = None


def _forget_pool():
    # a forked child has none of the parent's threads, but its copy of the pool would think it has
    # idle workers and wait for them forever
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_forget_pool)


def in_parts(n, rows):
    """rows(lo, hi) over groups of range(n) that cover it (samples, or rows or columns of a GEMM whose
    parts are independent), concurrently at more than one BLAS thread."""
    from ..runtime import blas_threads, set_blas_threads  # runtime imports the kernels: not at module level

    global _pool
    threads = blas_threads() or 1
    parts = min(threads, n // MIN_ROWS)
    if parts < 2:
        rows(0, n)
        return
    if _pool is None or _pool._max_workers < parts - 1:
        _pool = concurrent.futures.ThreadPoolExecutor(parts - 1, thread_name_prefix="netdsl-lstm")
    bounds = [n * i // parts for i in range(parts + 1)]
    set_blas_threads(1)
    try:
        futures = [_pool.submit(rows, bounds[i], bounds[i + 1]) for i in range(1, parts)]
        try:
            rows(bounds[0], bounds[1])
        finally:
            concurrent.futures.wait(futures)
        for f in futures:
            f.result()
    finally:
        set_blas_threads(threads)
