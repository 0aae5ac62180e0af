"""GRU: gates r, z, n stacked in that order (PyTorch's), an input bias b and, with reset_after, a
recurrent bias bh (docs/ir.md). With go_backwards the steps run t = T-1 .. 0 and output t is the state
computed at input position t, as for the LSTM.

  r = sigmoid(W_r x + b_r + H_r h [+ bh_r]),  z = sigmoid(W_z x + b_z + H_z h [+ bh_z])
  reset_after=False (CNTK): n = tanh(W_n x + b_n + H_n (r * h))
  reset_after=True (cuDNN): n = tanh(W_n x + b_n + r * (H_n h + bh_n))
  h' = (1 - z) * n + z * h
With enable_self_stabilization (CNTK's, reset_after=False only) h above is Sdh * h_prev everywhere, in the gates
AND the interpolation, with Sdh = softplus(4 alpha) / 4 (the Stabilizer kernel's beta): a plain GRU step on the
scaled previous state, so dh_prev = Sdh * d(scaled) and dalpha = sum(d(scaled) * h_prev) * sigmoid(4 alpha).

Plain numpy: the input products for all steps are one GEMM; a step is one or two small GEMMs.
"""
from __future__ import annotations

import numpy as np

from . import Kernel, masking, register
from .stabilizer import sigmoid, softplus

STEEPNESS = 4.0  # CNTK's GRU builds its stabilizer with Stabilizer()'s default steepness


@register("GRU")
class GRU(Kernel):
    def forward(self, call, xs, training, rng):
        W, H, b, bh, alpha = call.p("W"), call.p("H"), call.p("b"), call.opt("bh"), call.opt("Sdh")
        go_backwards = bool(call.attr("go_backwards", False))
        init = float(call.attr("initial_state", 0.0))
        lengths = call.lengths()
        if lengths is None:
            y, cache = gru_forward(xs[0], W, H, b, bh, go_backwards, init, alpha)
            return y, (gru_backward, cache)
        # A padded batch: the forward-in-time loop on each sample's valid steps (masking.py), so each
        # sample starts from the initial state at its first valid step (its last, going backwards).
        y, cache = masking.run_masked(lambda x: gru_forward(x, W, H, b, bh, init=init, alpha=alpha), gru_backward,
                                      xs[0], lengths, go_backwards)
        return y, (masking.backward_masked, cache)

    def backward(self, call, dy, cache, need):
        backward, cache = cache
        dx, dW, dH, db, dbh, dalpha = backward(dy, cache, need[0])
        grads = {"W": dW, "H": dH, "b": db}
        if dbh is not None:
            grads["bh"] = dbh
        if dalpha is not None:
            grads["Sdh"] = dalpha
        return [dx], grads

    def fans(self, layer, param):
        # W and H stack three (n, in) gate blocks, each initialised as its own matrix (fan_out = n)
        if param.name.endswith((".W", ".H")):
            return param.shape[1], param.shape[0] // 3
        return None, None

    def workspace(self, call, out_elems, in_elems):
        # input products (3h), gates r, z, n, the recurrent products, a time-major copy of x
        return 8 * out_elems + in_elems


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


def gru_forward(x, W, H, b, bh=None, go_backwards=False, init=0.0, alpha=None):
    """x (N, T, F) -> (N, T, h); bh None: reset_after=False (CNTK), else reset_after=True. h starts at
    `init` (Recurrence's initial_state, a constant: it gets no gradient). alpha (0-d): the Sdh stabilizer."""
    n, T, F = x.shape
    hs = H.shape[1]
    beta = None
    if alpha is not None:  # in the activations' dtype, as the Stabilizer kernel
        s = x.dtype.type(STEEPNESS)
        beta = softplus(s * np.asarray(alpha, x.dtype)) / s
    xt = np.ascontiguousarray(x.transpose(1, 0, 2))
    ax = (xt.reshape(T * n, F) @ W.T).reshape(T, n, 3 * hs) + b
    rs = np.empty((T, n, hs), x.dtype)
    zs = np.empty((T, n, hs), x.dtype)
    ns = np.empty((T, n, hs), x.dtype)
    gs = np.empty((T, n, hs), x.dtype)  # reset_after: H_n h + bh_n; else: r * h (the product's input)
    hseq = np.empty((T, n, hs), x.dtype)
    h = np.full((n, hs), init, x.dtype)
    Hrz, Hn = H[:2 * hs], H[2 * hs:]
    for t in (range(T - 1, -1, -1) if go_backwards else range(T)):
        a = ax[t]
        h = h if beta is None else beta * h
        if bh is not None:
            hh = h @ H.T + bh
            r = _sigmoid(a[:, :hs] + hh[:, :hs])
            z = _sigmoid(a[:, hs:2 * hs] + hh[:, hs:2 * hs])
            gs[t] = hh[:, 2 * hs:]
            nn = np.tanh(a[:, 2 * hs:] + r * gs[t])
        else:
            hh = h @ Hrz.T
            r = _sigmoid(a[:, :hs] + hh[:, :hs])
            z = _sigmoid(a[:, hs:2 * hs] + hh[:, hs:])
            gs[t] = r * h
            nn = np.tanh(a[:, 2 * hs:] + gs[t] @ Hn.T)
        rs[t], zs[t], ns[t] = r, z, nn
        hseq[t] = (1 - z) * nn + z * h
        h = hseq[t]
    cache = (xt, W, H, bh is not None, rs, zs, ns, gs, hseq, go_backwards, init, alpha, beta)
    return hseq.transpose(1, 0, 2).copy(), cache


def gru_backward(dy, cache, need_dx=True):
    """BPTT; returns (dx or None, dW, dH, db, dbh or None, dalpha or None) in the canonical layout."""
    xt, W, H, after, rs, zs, ns, gs, hseq, go_backwards, init, alpha, beta = cache
    T, n, hs = hseq.shape
    dyt = dy.transpose(1, 0, 2)
    order = range(T) if go_backwards else range(T - 1, -1, -1)
    prev = 1 if go_backwards else -1  # the step processed just before t is t + prev
    Hrz, Hn = H[:2 * hs], H[2 * hs:]
    dax = np.empty((T, n, 3 * hs), hseq.dtype)
    dH = np.zeros_like(H)
    dbh = np.zeros(3 * hs, hseq.dtype) if after else None
    dh = np.zeros((n, hs), hseq.dtype)
    h0 = np.full((n, hs), init, hseq.dtype)  # the state before the first step
    dbeta = 0.0
    for t in order:
        p = t + prev
        raw = hseq[p] if 0 <= p < T else h0
        hp = raw if beta is None else beta * raw  # the step's previous state, stabilized
        r, z, nn = rs[t], zs[t], ns[t]
        dh = dh + dyt[t]
        dan = dh * (1 - z) * (1 - nn * nn)
        daz = dh * (hp - nn) * z * (1 - z)
        dhp = dh * z
        if after:
            dar = dan * gs[t] * r * (1 - r)
            dhh = np.concatenate([dar, daz, dan * r], axis=1)
            dH += dhh.T @ hp
            dbh += dhh.sum(axis=0)
            dhp += dhh @ H
        else:
            dq = dan @ Hn
            dH[2 * hs:] += dan.T @ gs[t]
            dar = dq * hp * r * (1 - r)
            dhp += dq * r
            drz = np.concatenate([dar, daz], axis=1)
            dH[:2 * hs] += drz.T @ hp
            dhp += drz @ Hrz
        dax[t, :, :hs], dax[t, :, hs:2 * hs], dax[t, :, 2 * hs:] = dar, daz, dan
        if beta is not None:
            dbeta += np.sum(dhp * raw, dtype=np.float64)
            dhp = beta * dhp
        dh = dhp
    d2 = dax.reshape(T * n, 3 * hs)
    dW = d2.T @ xt.reshape(T * n, -1)
    db = d2.sum(axis=0)
    dx = None
    if need_dx:
        dx = (d2 @ W).reshape(T, n, -1).transpose(1, 0, 2).copy()
    dalpha = None
    if alpha is not None:
        z = hseq.dtype.type(STEEPNESS) * np.asarray(alpha, hseq.dtype)
        dalpha = np.asarray(dbeta * sigmoid(z), dtype=np.asarray(alpha).dtype)
    return dx, dW, dH, db, dbh, dalpha
