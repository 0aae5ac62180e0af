"""LSTM(use_peepholes=True) and LSTM(enable_self_stabilization=True): CNTK 2.7's LSTM step as its
cntk/layers/blocks.py (_RecurrentBlock) writes it. Gates i, f, g, o stacked in W, H, b as the plain LSTM
(docs/ir.md); the peepholes are three elementwise vectors Ci, Cf, Co over the cell; each self-stabilizer
is a scalar beta = softplus(4 alpha) / 4 (the Stabilizer kernel's formula, stabilizer.py):

    z = x W.T + b + (Sdh h_prev) H.T
    i = sigmoid(z_i + Ci * Sdc c_prev)    f = sigmoid(z_f + Cf * Sdc c_prev)    g = tanh(z_g)
    c = f * c_prev + i * g                (the forget path reads the UNstabilised c_prev)
    o = sigmoid(z_o + Co * Sct c)         (o reads the NEW cell)
    h = o * tanh(c), or (Sht o * tanh(c)) @ P.T with a projection

Sdh exists with stabilization; Sdc and Sct only with peepholes too; Sht only with a projection. Absent
ones are 1 (and absent peepholes 0). A plain numpy loop, kept apart from lstm.py's fused fast path;
LSTM.forward dispatches here when the layer has Ci or Sdh. Padded batches go through
masking.run_masked like the fast path; go_backwards runs the forward loop on time-reversed data.
"""
from __future__ import annotations

import numpy as np

from . import masking
from .stabilizer import sigmoid, softplus

PEEPHOLE = "peephole"  # marks this module's caches in LSTM.backward
STEEPNESS = 4.0  # CNTK's LSTM builds its stabilizers with Stabilizer()'s default steepness
STABILIZERS = ("Sdh", "Sdc", "Sct", "Sht")


def _beta(alpha, dtype):
    """(beta, dbeta/dalpha) of a stabilizer's alpha, in the activations' dtype as the Stabilizer kernel."""
    s = dtype.type(STEEPNESS)
    z = s * np.asarray(alpha, dtype=dtype)
    return softplus(z) / s, sigmoid(z)


def peephole_forward(x, W, H, b, C=None, P=None, alphas=None):
    """x (N, T, F) -> (N, T, h), forward in time from zero states. C: (Ci, Cf, Co) or None;
    alphas: {stabilizer name: alpha (0-d)} for the stabilizers the layer has."""
    n, T, _ = x.shape
    hs = W.shape[0] // 4
    dt = x.dtype
    alphas = alphas or {}
    betas = {k: _beta(a, dt)[0] for k, a in alphas.items()}
    bdh, bdc, bct, bht = (betas.get(k, dt.type(1)) for k in STABILIZERS)
    Ci, Cf, Co = C if C is not None else (np.zeros(hs, dt),) * 3
    xt = np.ascontiguousarray(x.transpose(1, 0, 2))
    zx = xt @ W.T + b  # (T, N, 4c)
    units = hs if P is None else P.shape[0]
    h = np.zeros((n, units), dt)
    c = np.zeros((n, hs), dt)
    hprev = np.empty((T, n, units), dt)  # the output h of the step before (H reads Sdh h_prev)
    cprev = np.empty((T, n, hs), dt)
    gates = np.empty((T, n, 4 * hs), dt)  # i, f, g, o activated
    cs = np.empty((T, n, hs), dt)
    ms = np.empty((T, n, hs), dt)  # o * tanh(c)
    ys = np.empty((T, n, units), dt)
    for t in range(T):
        hprev[t], cprev[t] = h, c
        z = zx[t] + (bdh * h) @ H.T
        i = _sig(z[:, :hs] + Ci * (bdc * c))
        f = _sig(z[:, hs:2 * hs] + Cf * (bdc * c))
        g = np.tanh(z[:, 2 * hs:3 * hs])
        c = f * c + i * g
        o = _sig(z[:, 3 * hs:] + Co * (bct * c))
        m = o * np.tanh(c)
        h = m if P is None else (bht * m) @ P.T
        gates[t] = np.concatenate([i, f, g, o], axis=1)
        cs[t], ms[t], ys[t] = c, m, h
    cache = (xt, W, H, C, P, alphas, hprev, cprev, gates, cs, ms)
    return ys.transpose(1, 0, 2).copy(), cache


def _sig(z):
    return sigmoid(z).astype(z.dtype, copy=False)


def peephole_backward(dy, cache, need_dx=True):
    """BPTT: (dx or None, dW, dH, db, then dCi, dCf, dCo with peepholes, dP with a projection, then
    {stabilizer name: dalpha})."""
    xt, W, H, C, P, alphas, hprev, cprev, gates, cs, ms = cache
    T, n, hs = cs.shape
    dt = cs.dtype
    betas = {k: _beta(a, dt) for k, a in alphas.items()}
    bdh, bdc, bct, bht = (betas.get(k, (dt.type(1), 0))[0] for k in STABILIZERS)
    Ci, Cf, Co = C if C is not None else (np.zeros(hs, dt),) * 3
    dyt = dy.transpose(1, 0, 2)
    dz = np.empty_like(gates)
    dh = np.zeros_like(hprev[0])  # the gradient reaching the output h of step t from step t + 1
    dc = np.zeros((n, hs), dt)
    dCi, dCf, dCo = np.zeros_like(Ci), np.zeros_like(Cf), np.zeros_like(Co)
    dP = None if P is None else np.zeros_like(P)
    dbeta = dict.fromkeys(STABILIZERS, 0.0)  # the gradient of each beta, summed in float64
    for t in range(T - 1, -1, -1):
        i, f, g, o = (gates[t][:, k * hs:(k + 1) * hs] for k in range(4))
        dout = dyt[t] + dh
        if P is None:
            dm = dout
        else:
            dP += dout.T @ (bht * ms[t])
            dms = dout @ P
            dbeta["Sht"] += np.sum(dms * ms[t], dtype=np.float64)
            dm = bht * dms
        tc = np.tanh(cs[t])
        dzo = dm * tc * o * (1 - o)
        dcv = dc + dm * o * (1 - tc * tc) + dzo * Co * bct
        dzi = dcv * g * i * (1 - i)
        dzf = dcv * cprev[t] * f * (1 - f)
        dz[t] = np.concatenate([dzi, dzf, dcv * i * (1 - g * g), dzo], axis=1)
        dCo += (dzo * (bct * cs[t])).sum(axis=0)
        dbeta["Sct"] += np.sum(dzo * Co * cs[t], dtype=np.float64)
        dCi += (dzi * (bdc * cprev[t])).sum(axis=0)
        dCf += (dzf * (bdc * cprev[t])).sum(axis=0)
        dpeep = dzi * Ci + dzf * Cf  # the gradient of Sdc c_prev
        dbeta["Sdc"] += np.sum(dpeep * cprev[t], dtype=np.float64)
        dc = dcv * f + bdc * dpeep
        dhs = dz[t] @ H  # the gradient of Sdh h_prev
        dbeta["Sdh"] += np.sum(dhs * hprev[t], dtype=np.float64)
        dh = bdh * dhs
    dz2 = dz.reshape(T * n, 4 * hs)
    dW = dz2.T @ xt.reshape(T * n, -1)
    dH = bdh * (dz2.T @ hprev.reshape(T * n, -1))
    db = dz2.sum(axis=0)
    dx = None
    if need_dx:
        dx = (dz2 @ W).reshape(T, n, -1).transpose(1, 0, 2).copy()
    grads = [dW, dH, db]
    if C is not None:
        grads += [dCi, dCf, dCo]
    if P is not None:
        grads.append(dP)
    dalpha = {k: np.asarray(dbeta[k] * betas[k][1], dtype=np.asarray(alphas[k]).dtype) for k in alphas}
    return (dx, *grads, dalpha)


def _flip_backward(dy, cache, need_dx=True):
    dx, *grads = peephole_backward(dy[:, ::-1], cache, need_dx)
    return (None if dx is None else dx[:, ::-1].copy(), *grads)


def forward(call, x):
    """LSTM.forward for a peephole or stabilized LSTM: (y, cache for backward)."""
    W, H, b = call.p("W"), call.p("H"), call.p("b")
    C = None if call.opt("Ci") is None else (call.p("Ci"), call.p("Cf"), call.p("Co"))
    alphas = {k: call.p(k) for k in STABILIZERS if call.opt(k) is not None}

    def loop(v):
        return peephole_forward(v, W, H, b, C, call.opt("P"), alphas)

    lengths = call.lengths()
    if lengths is not None:
        y, cache = masking.run_masked(loop, peephole_backward, x, lengths, bool(call.attr("go_backwards", False)))
        return y, (PEEPHOLE, masking.backward_masked, cache, C is not None)
    if call.attr("go_backwards", False):  # the state computed at input t goes back to position t
        y, cache = loop(np.ascontiguousarray(x[:, ::-1]))
        return y[:, ::-1].copy(), (PEEPHOLE, _flip_backward, cache, C is not None)
    y, cache = loop(x)
    return y, (PEEPHOLE, peephole_backward, cache, C is not None)


def backward(dy, cache, need_dx):
    """([dx], {param short name: gradient}) of forward's cache."""
    _, back, cache, peepholes = cache
    dx, *grads, dalpha = back(dy, cache, need_dx)
    names = ["W", "H", "b"] + (["Ci", "Cf", "Co"] if peepholes else [])
    out = dict(zip(names, grads))
    if len(grads) > len(names):
        out["P"] = grads[-1]
    out.update(dalpha)
    return [dx], out
