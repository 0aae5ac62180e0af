"""Activation and Rescale, and the activation functions other kernels apply
after their linear part (Dense, Convolution)."""
from __future__ import annotations

import numpy as np

from . import Kernel, register

ACTIVATIONS = (None, "relu", "sigmoid", "tanh", "softmax")


def sigmoid(x):
    # exp(-x) overflows to inf for very negative x, which still gives 0.
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def feature_axis(x):
    """Channels of NCHW, the last axis of vectors and sequences."""
    return 1 if x.ndim == 4 else x.ndim - 1


def activation_forward(x, kind):
    """kind in ACTIVATIONS; softmax runs over the feature axis (channels for
    NCHW, the last axis for vectors and sequences)."""
    if kind is None:
        y = x
    elif kind == "relu":
        y = np.maximum(x, 0)
    elif kind == "sigmoid":
        y = sigmoid(x)
    elif kind == "tanh":
        y = np.tanh(x)
    elif kind == "softmax":
        y = _softmax(x, feature_axis(x))
    else:
        raise ValueError(f"unknown activation {kind!r}; expected one of {ACTIVATIONS}")
    return y, (kind, y)


def activation_backward(dy, cache):
    kind, y = cache
    if kind is None:
        return dy
    if kind == "relu":
        # Gradient 0 at x == 0, like torch's threshold_backward on the output.
        return np.where(y > 0, dy, 0).astype(dy.dtype, copy=False)
    if kind == "sigmoid":
        return dy * y * (1 - y)
    if kind == "tanh":
        return dy * (1 - y * y)
    axis = feature_axis(y)
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))


def rescale_forward(x, scale, mean, std):
    """y = (x*scale - mean)/std with scalar constants; integer input (raw
    pixels) becomes float32."""
    if x.dtype.kind in "iub":
        x = x.astype(np.float32)
    scale, mean, std = float(scale), float(mean), float(std)
    return (x * scale - mean) / std, (scale, std)


def rescale_backward(dy, cache):
    scale, std = cache
    return dy * (scale / std)


@register("Activation")
class Activation(Kernel):
    def forward(self, call, xs, training, rng):
        return activation_forward(xs[0], call.attr("activation"))

    def backward(self, call, dy, cache, need):
        return [activation_backward(dy, cache)], {}


@register("Rescale")
class Rescale(Kernel):
    def forward(self, call, xs, training, rng):
        y, cache = rescale_forward(xs[0], call.attr("scale", 1.0), call.attr("mean", 0.0), call.attr("std", 1.0))
        return y.astype(call.dtype, copy=False), cache

    def backward(self, call, dy, cache, need):
        return [rescale_backward(dy, cache)], {}

    def workspace(self, call, out_elems, in_elems):
        return 0
