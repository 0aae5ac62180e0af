"""Delay: y[:, t] = x[:, t - T] where 0 <= t - T < length, else initial_state (CNTK's past_value for
T > 0, future_value for T < 0). Sequences are (N, L, F)."""
from __future__ import annotations

import numpy as np

from . import Kernel, register


def _source(length: int, shift: int) -> tuple:
    """(output steps, input steps) that a shift by `shift` connects in a sequence of `length` steps."""
    if abs(shift) >= length:  # every step reads initial_state
        return slice(0, 0), slice(0, 0)
    lo, hi = max(shift, 0), min(length, length + shift)
    return slice(lo, hi), slice(lo - shift, hi - shift)


def delay_forward(x, shift, initial_state=0.0, lengths=None):
    """x (N, L, F). lengths (N,) or None (every sample full-length): with lengths, a step t - shift at or
    beyond a sample's length is padding, so Delay(T < 0) reads initial_state there, as at the sequence end."""
    y = np.full_like(x, initial_state)
    out, src = _source(x.shape[1], shift)
    y[:, out] = x[:, src]
    if lengths is not None and shift < 0:
        steps = np.arange(x.shape[1])[None, :]
        y[(steps - shift) >= np.asarray(lengths)[:, None]] = initial_state
    return y, (x.shape, shift, lengths)


def delay_backward(dy, cache):
    """dx[:, s] = dy[:, s + shift] where that output step read x[:, s]; 0 elsewhere."""
    shape, shift, lengths = cache
    mask = None
    if lengths is not None and shift < 0:  # the steps that read initial_state pass no gradient on
        steps = np.arange(shape[1])[None, :]
        mask = (steps - shift) >= np.asarray(lengths)[:, None]
        dy = np.where(mask[:, :, None], 0, dy)
    dx = np.zeros(shape, dy.dtype)
    out, src = _source(shape[1], shift)
    dx[:, src] = dy[:, out]
    return dx


@register("Delay")
class Delay(Kernel):
    def forward(self, call, xs, training, rng):
        # lengths: None for full-length sequences; else T < 0 reads initial_state at each sample's end
        return delay_forward(xs[0], int(call.attr("T")), float(call.attr("initial_state", 0.0)), call.lengths())

    def backward(self, call, dy, cache, need):
        return [delay_backward(dy, cache) if need[0] else None], {}

    def workspace(self, call, out_elems, in_elems):
        return 0  # the cache holds a shape, not an array
