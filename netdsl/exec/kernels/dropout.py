"""Dropout: rate is the DROP probability, with inverted scaling at training time."""
from __future__ import annotations

import numpy as np

from . import Kernel, register


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


@register("Dropout")
class Dropout(Kernel):
    def forward(self, call, xs, training, rng):
        rate = float(call.attr("rate"))
        if training and rate > 0 and rng is None:
            raise ValueError(f"dropout layer '{call.layer.name}' needs an rng in training mode")
        return dropout_forward(xs[0], rate, training, rng)

    def backward(self, call, dy, cache, need):
        return [dropout_backward(dy, cache)], {}

    def workspace(self, call, out_elems, in_elems):
        return 3 * out_elems  # the float64 uniform draws, the mask
