"""Dense: y = act(x @ W.T + b), W (out, in). A multi-axis sample is flattened
in the C order of its canonical layout (like Flatten); on sequences it
applies per time step."""
from __future__ import annotations

import math

import numpy as np

from . import Kernel, register
from .activation import activation_backward, activation_forward


def dense_forward(x, W, b=None, activation=None, lead_axes=1, out_shape=None):
    """x's first `lead_axes` axes are kept (1: samples; 2: samples and time steps); each output row is
    reshaped (row-major) to out_shape, the tensor shape of Dense((3, 4)), when given."""
    lead = x.shape[:lead_axes]
    x2 = x.reshape(math.prod(lead), -1)
    if x2.shape[1] != W.shape[1]:
        raise ValueError(f"dense: input has {x2.shape[1]} features, W expects {W.shape[1]}")
    z = x2 @ W.T
    if b is not None:
        z += b
    if activation == "relu":  # in place: no second batch-sized array
        np.maximum(z, 0, out=z)
        y, acache = z, None
    else:
        y, acache = activation_forward(z, activation)
    return y.reshape(lead + tuple(out_shape or (W.shape[0],))), (x2, x.shape, W, y, activation, acache, b is not None)


def dense_backward(dy, cache, need_dx=True):
    """Returns (dx or None, dW, db or None)."""
    x2, xshape, W, y, act, acache, has_b = cache
    dy = dy.reshape(y.shape)
    dz = dy * (y > 0) if act == "relu" else activation_backward(dy, acache)
    dW = dz.T @ x2
    db = dz.sum(axis=0) if has_b else None
    dx = (dz @ W).reshape(xshape) if need_dx else None
    return dx, dW, db


@register("Dense")
class Dense(Kernel):
    def forward(self, call, xs, training, rng):
        # input_rank/map_rank: map_axes more leading axes of each sample are kept (mapped over)
        lead_axes = (2 if call.input_types[0].seq else 1) + call.attr("map_axes", 0)
        return dense_forward(xs[0], call.p("W"), call.opt("b"), call.attr("activation"), lead_axes,
                             call.attr("out_shape"))

    def backward(self, call, dy, cache, need):
        dx, dW, db = dense_backward(dy, cache, need[0])
        return [dx], {"W": dW, "b": db}
