"""LSTM(use_peepholes=True): CNTK 2.7's peephole LSTM (cntk/layers/blocks.py, _RecurrentBlock).
Gates i, f, g, o stacked in W, H, b as the plain LSTM (docs/ir.md), plus three elementwise
vectors Ci, Cf, Co over the cell:

    i = sigmoid(z_i + Ci * c_prev)    f = sigmoid(z_f + Cf * c_prev)    g = tanh(z_g)
    c = f * c_prev + i * g            o = sigmoid(z_o + Co * c)         (o reads the NEW cell)
    h = o * tanh(c), or (o * tanh(c)) @ P.T with a projection

A plain numpy loop, kept apart from lstm.py's fused fast path (which has no room for the
peepholes); LSTM.forward dispatches here when the layer has Ci. Padded batches go through
masking.run_masked like the fast path; go_backwards runs the forward loop on time-reversed data.
"""
from __future__ import annotations

import numpy as np

from . import masking

PEEPHOLE = "peephole"  # marks this module's caches in LSTM.backward


def _sigmoid(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e)).astype(z.dtype, copy=False)


def peephole_forward(x, W, H, b, Ci, Cf, Co, P=None):
    """x (N, T, F) -> (N, T, h), forward in time from zero states."""
    n, T, _ = x.shape
    hs = W.shape[0] // 4
    xt = np.ascontiguousarray(x.transpose(1, 0, 2))
    zx = xt @ W.T + b  # (T, N, 4c)
    units = hs if P is None else P.shape[0]
    h = np.zeros((n, units), x.dtype)
    c = np.zeros((n, hs), x.dtype)
    hprev = np.empty((T, n, units), x.dtype)
    cprev = np.empty((T, n, hs), x.dtype)
    gates = np.empty((T, n, 4 * hs), x.dtype)  # i, f, g, o activated
    cs = np.empty((T, n, hs), x.dtype)
    ms = np.empty((T, n, hs), x.dtype)  # o * tanh(c)
    ys = np.empty((T, n, units), x.dtype)
    for t in range(T):
        hprev[t], cprev[t] = h, c
        z = zx[t] + h @ H.T
        i = _sigmoid(z[:, :hs] + Ci * c)
        f = _sigmoid(z[:, hs:2 * hs] + Cf * c)
        g = np.tanh(z[:, 2 * hs:3 * hs])
        c = f * c + i * g
        o = _sigmoid(z[:, 3 * hs:] + Co * c)
        m = o * np.tanh(c)
        h = m if P is None else m @ P.T
        gates[t] = np.concatenate([i, f, g, o], axis=1)
        cs[t], ms[t], ys[t] = c, m, h
    cache = (xt, W, H, Ci, Cf, Co, P, hprev, cprev, gates, cs, ms)
    return ys.transpose(1, 0, 2).copy(), cache


def peephole_backward(dy, cache, need_dx=True):
    """BPTT: (dx or None, dW, dH, db, dCi, dCf, dCo[, dP])."""
    xt, W, H, Ci, Cf, Co, P, hprev, cprev, gates, cs, ms = cache
    T, n, hs = cs.shape
    dyt = dy.transpose(1, 0, 2)
    dz = np.empty_like(gates)
    dh = np.zeros_like(hprev[0])  # the gradient reaching the output h of step t from step t + 1
    dc = np.zeros((n, hs), gates.dtype)
    dCi, dCf, dCo = np.zeros_like(Ci), np.zeros_like(Cf), np.zeros_like(Co)
    dP = None if P is None else np.zeros_like(P)
    for t in range(T - 1, -1, -1):
        i, f, g, o = (gates[t][:, k * hs:(k + 1) * hs] for k in range(4))
        dout = dyt[t] + dh
        if P is None:
            dm = dout
        else:
            dm = dout @ P
            dP += dout.T @ ms[t]
        tc = np.tanh(cs[t])
        dzo = dm * tc * o * (1 - o)
        dcv = dc + dm * o * (1 - tc * tc) + dzo * Co
        dzi = dcv * g * i * (1 - i)
        dzf = dcv * cprev[t] * f * (1 - f)
        dz[t] = np.concatenate([dzi, dzf, dcv * i * (1 - g * g), dzo], axis=1)
        dCo += (dzo * cs[t]).sum(axis=0)
        dCi += (dzi * cprev[t]).sum(axis=0)
        dCf += (dzf * cprev[t]).sum(axis=0)
        dc = dcv * f + dzi * Ci + dzf * Cf
        dh = dz[t] @ H
    dz2 = dz.reshape(T * n, 4 * hs)
    dW = dz2.T @ xt.reshape(T * n, -1)
    dH = dz2.T @ hprev.reshape(T * n, -1)
    db = dz2.sum(axis=0)
    dx = None
    if need_dx:
        dx = (dz2 @ W).reshape(T, n, -1).transpose(1, 0, 2).copy()
    grads = (dW, dH, db, dCi, dCf, dCo)
    return (dx, *grads) if P is None else (dx, *grads, dP)


def _flip_backward(dy, cache, need_dx=True):
    dx, *grads = peephole_backward(dy[:, ::-1], cache, need_dx)
    return (None if dx is None else dx[:, ::-1].copy(), *grads)


def forward(call, x):
    """LSTM.forward for a peephole LSTM: (y, cache for backward)."""
    args = [call.p(k) for k in ("W", "H", "b", "Ci", "Cf", "Co")] + [call.opt("P")]
    go_backwards = bool(call.attr("go_backwards", False))
    lengths = call.lengths()
    if lengths is not None:
        y, cache = masking.run_masked(lambda v: peephole_forward(v, *args), peephole_backward, x, lengths,
                                      go_backwards)
        return y, (PEEPHOLE, masking.backward_masked, cache)
    if go_backwards:  # the state computed at input t goes back to position t
        y, cache = peephole_forward(np.ascontiguousarray(x[:, ::-1]), *args)
        return y[:, ::-1].copy(), (PEEPHOLE, _flip_backward, cache)
    y, cache = peephole_forward(x, *args)
    return y, (PEEPHOLE, peephole_backward, cache)


def backward(dy, cache, need_dx):
    """([dx], {param short name: gradient}) of forward's cache."""
    _, back, cache = cache
    dx, dW, dH, db, dCi, dCf, dCo, *dP = back(dy, cache, need_dx)
    grads = {"W": dW, "H": dH, "b": db, "Ci": dCi, "Cf": dCf, "Co": dCo}
    if dP:
        grads["P"] = dP[0]
    return [dx], grads
