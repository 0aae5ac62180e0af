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
                                      lengths,
                                      go_backwards)
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
    gates = (xt @ Ws.T).reshape(T, n, 4 * hs)
    gates += bs
    cs = np.empty((T, n, hs), x.dtype)
    tcs = np.empty((T, n, hs), x.dtype)
    hseq = np.empty((T, n, hs), x.dtype)  # o * tanh(c)
    pseq = hseq if P is None else np.empty((T, n, P.shape[0]), x.dtype)  # the output h
    PT = None if P is None else P.T
    HsT = Hs.T
    h = None if init == 0 else np.full((n, pseq.shape[2]), init, x.dtype)  # the output h: projected, if P
    c = np.full((n, hs), init, x.dtype)
    tmp = np.empty((n, 4 * hs), x.dtype)
    one = x.dtype.type(1)  # typed constants keep numba's arithmetic in float32 (1.6x faster)
    for t in (range(T - 1, -1, -1) if go_backwards else range(T)):
        a = gates[t]
        if h is not None:
            np.matmul(h, HsT, out=tmp)
            a += tmp
        np.exp(a, out=a)
        _lstm_gates_cell(a, c, cs[t], tcs[t], one)
        np.exp(tcs[t], out=tcs[t])
        _lstm_hidden(a, tcs[t], hseq[t], one)
        h = hseq[t]
        if P is not None:
            h = pseq[t]
            np.matmul(hseq[t], PT, out=h)
        c = cs[t]
    cache = (xt, W, H[perm], perm, gates, cs, tcs, hseq, go_backwards, x.shape, P, pseq, init)
    return pseq.transpose(1, 0, 2).copy(), cache


@njit(cache=True, error_model="numpy")
def _lstm_gates_cell(a, c_prev, c, u, one):
    """a holds exp(-z) (i, f, o) and exp(-2z) (g): activate the gates in place,
    c = f * c_prev + i * g, and u = -2c for the next exp (tanh(c))."""
    n, hs = c.shape
    two = one + one
    for b in range(n):
        for k in range(3 * hs):
            a[b, k] = one / (one + a[b, k])
        for k in range(hs):
            g = two / (one + a[b, 3 * hs + k]) - one
            a[b, 3 * hs + k] = g
            ck = a[b, k] * g + a[b, hs + k] * c_prev[b, k]
            c[b, k] = ck
            u[b, k] = -two * ck


@njit(cache=True, error_model="numpy")
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
    dh = np.empty((n, hs), gates.dtype)
    # the gradient at the output h, per step; with no projection it is dh itself
    dhps = None if P is None else np.empty((T, n, P.shape[0]), gates.dtype)
    dc = np.zeros((n, hs), gates.dtype)
    c0 = np.full((n, hs), init, gates.dtype)  # the cell state before the first step
    one = gates.dtype.type(1)
    first = True
    for t in order:
        p = t + prev
        dhp = dh if P is None else dhps[t]
        if first:
            dhp[...] = dyt[t]
            first = False
        else:
            np.matmul(dzs[t - prev], Hp, out=dhp)
            if live[t]:
                dhp += dyt[t]
        if P is not None:
            np.matmul(dhp, P, out=dh)
        _lstm_cell_bwd(dh, dc, gates[t], cs[p] if 0 <= p < T else c0, tcs[t], dzs[t], one)
    dz2 = dzs.reshape(T * n, 4 * hs)
    dWp = dz2.T @ xt
    # z_t reads h_{t+prev}; the first step read the initial state (nothing to dH when it is 0).
    us = pseq.shape[2]
    if go_backwards:
        dHp = dzs[:-1].reshape(-1, 4 * hs).T @ pseq[1:].reshape(-1, us)
    else:
        dHp = dzs[1:].reshape(-1, 4 * hs).T @ pseq[:-1].reshape(-1, us)
    if init != 0:
        first_dz = dzs[T - 1 if go_backwards else 0].sum(axis=0)
        dHp += np.outer(first_dz, np.full(us, init, gates.dtype))
    dbp = dz2.sum(axis=0)
    inv = np.argsort(perm)
    dx = None
    if need_dx:
        dx = (dz2 @ W[perm]).reshape(T, n, -1).transpose(1, 0, 2).copy()
    if P is None:
        return dx, dWp[inv], dHp[inv], dbp[inv]
    dP = dhps.reshape(-1, P.shape[0]).T @ hseq.reshape(-1, hs)
    return dx, dWp[inv], dHp[inv], dbp[inv], dP


@njit(cache=True)
def _lstm_cell_bwd(dh, dc, a, c_prev, tc, dz, one):
    """One step back through the cell with gates a = (i, f, o, g) activated.
    dc carries the cell gradient from the later step in and out (in place)."""
    n, hs = dh.shape
    for b in range(n):
        for k in range(hs):
            ig = a[b, k]
            fg = a[b, hs + k]
            og = a[b, 2 * hs + k]
            gg = a[b, 3 * hs + k]
            t = tc[b, k]
            d = dh[b, k]
            dcv = dc[b, k] + d * og * (one - t * t)
            dz[b, k] = dcv * gg * ig * (one - ig)
            dz[b, hs + k] = dcv * c_prev[b, k] * fg * (one - fg)
            dz[b, 2 * hs + k] = d * t * og * (one - og)
            dz[b, 3 * hs + k] = dcv * ig * (one - gg * gg)
            dc[b, k] = dcv * fg
