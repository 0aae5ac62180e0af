"""Stabilizer: y = beta * x, beta = softplus(steepness * alpha) / steepness, alpha a scalar
(CNTK's self-stabilizer). Elementwise on any input shape."""
from __future__ import annotations

import numpy as np

from . import Kernel, register


def softplus(z):
    """log(1 + exp(z)) without overflow: max(z, 0) + log1p(exp(-|z|))."""
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


def sigmoid(z):
    """1 / (1 + exp(-z)) without overflow (the derivative of softplus)."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def stabilizer_forward(x, alpha, steepness=4.0):
    """alpha is a 0-d array; beta is computed in x's dtype, as the targets do."""
    s = x.dtype.type(steepness)
    z = s * np.asarray(alpha, dtype=x.dtype)
    beta = softplus(z) / s
    return x * beta, (x, beta, z, np.asarray(alpha).dtype)


def stabilizer_backward(dy, cache):
    """Returns (dx, dalpha): dx = beta * dy, dalpha = sum(dy * x) * sigmoid(steepness * alpha)."""
    x, beta, z, alpha_dtype = cache
    dalpha = np.asarray(np.sum(dy * x, dtype=np.float64) * sigmoid(z), dtype=alpha_dtype)
    return dy * beta, dalpha


@register("Stabilizer")
class Stabilizer(Kernel):
    def forward(self, call, xs, training, rng):
        return stabilizer_forward(xs[0], call.p("alpha"), float(call.attr("steepness")))

    def backward(self, call, dy, cache, need):
        dx, dalpha = stabilizer_backward(dy, cache)
        return [dx if need[0] else None], {"alpha": dalpha}

    def workspace(self, call, out_elems, in_elems):
        return in_elems  # the input, kept for alpha's gradient
