"""Activation and Rescale, and the activation functions other kernels apply
after their linear part (Dense, Convolution)."""
from __future__ import annotations

import math

import numpy as np
from numba import vectorize

from ...layers.common import split_activation
from . import Kernel, register

ACTIVATIONS = (None, "relu", "sigmoid", "tanh", "softmax", "elu", "leaky_relu", "gelu", "softplus", "silu",
               "hard_sigmoid")
SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
GELU_CUBIC = 0.044715  # the tanh approximation's constant (PyTorch, Keras, TF)


@vectorize(["float32(float32)", "float64(float64)"], cache=True)
def erf(x):
    # numpy has no erf; math.erf per element, compiled (erff for float32, as PyTorch's float kernel)
    return math.erf(x)


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


def activation_forward(x, act):
    """act is an IR spelling (its name in ACTIVATIONS, parameters written out: "leaky_relu(alpha=0.01)");
    softmax runs over the feature axis (channels for NCHW, the last axis for vectors and sequences)."""
    kind, params = split_activation(act)
    if kind in EXTRA:
        y, cache = EXTRA[kind][0](x, **params)
        return y, (act, cache)
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
    name = split_activation(kind)[0]
    if name in EXTRA:
        return EXTRA[name][1](dy, y)
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


# ---- the activations beyond the first four: forward(x, **params) -> (y, cache), backward(dy, cache) -> dx.
# Formulas are the IR's (docs/ir.md); each equals PyTorch's function of the same name.

def elu_forward(x):
    """x > 0: x, else exp(x) - 1 (alpha 1, the only ELU every target has)."""
    y = np.where(x > 0, x, np.expm1(np.minimum(x, 0)))
    return y, y


def elu_backward(dy, y):
    return dy * np.where(y > 0, 1, y + 1).astype(dy.dtype, copy=False)


def leaky_relu_forward(x, alpha):
    a = x.dtype.type(alpha)
    return np.where(x > 0, x, x * a), (x > 0, a)


def leaky_relu_backward(dy, cache):
    positive, a = cache
    return np.where(positive, dy, dy * a)


def gelu_forward(x, approximate):
    """Exact: x * Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2. approximate: PyTorch's and Keras's tanh form,
    x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))) / 2."""
    if approximate:
        t = np.tanh(x.dtype.type(SQRT_2_OVER_PI) * (x + x.dtype.type(GELU_CUBIC) * x * x * x))
        return x * (1 + t) / 2, (x, t, True)
    cdf = (1 + erf(x / x.dtype.type(math.sqrt(2)))) / 2
    return x * cdf, (x, cdf, False)


def gelu_backward(dy, cache):
    x, v, approximate = cache
    if approximate:
        du = x.dtype.type(SQRT_2_OVER_PI) * (1 + 3 * x.dtype.type(GELU_CUBIC) * x * x)
        return dy * ((1 + v) / 2 + x * (1 - v * v) * du / 2)
    pdf = np.exp(-x * x / 2) * x.dtype.type(1 / math.sqrt(2 * math.pi))
    return dy * (v + x * pdf)


def softplus_forward(x):
    """log(1 + exp(x)) without overflow: max(x, 0) + log1p(exp(-|x|))."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x))), x


def softplus_backward(dy, x):
    return dy * sigmoid(x)


def silu_forward(x):
    """x * sigmoid(x) (swish)."""
    s = sigmoid(x)
    return x * s, (x, s)


def silu_backward(dy, cache):
    x, s = cache
    return dy * s * (1 + x * (1 - s))


def hard_sigmoid_forward(x):
    """relu6(x + 3) / 6 = clip(x / 6 + 1/2, 0, 1) (PyTorch, Keras 3, ONNX HardSigmoid(1/6, 1/2)); not the
    0.2 x + 0.5 of TF / Keras 2 / CNTK. Gradient 1/6 strictly inside (-3, 3), as PyTorch's."""
    inside = (x > -3) & (x < 3)
    return np.clip(x / x.dtype.type(6) + x.dtype.type(0.5), 0, 1).astype(x.dtype, copy=False), inside


def hard_sigmoid_backward(dy, inside):
    return np.where(inside, dy / dy.dtype.type(6), 0).astype(dy.dtype, copy=False)


EXTRA = {
    "elu": (elu_forward, elu_backward),
    "leaky_relu": (leaky_relu_forward, leaky_relu_backward),
    "gelu": (gelu_forward, gelu_backward),
    "softplus": (softplus_forward, softplus_backward),
    "silu": (silu_forward, silu_backward),
    "hard_sigmoid": (hard_sigmoid_forward, hard_sigmoid_backward),
}


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
