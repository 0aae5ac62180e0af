"""Convolution: a 2-D convolution over NCHW images, W in OIHW layout."""
from __future__ import annotations

from ..ir import TensorType
from ..shapes import window_output
from . import REQUIRED, Constructor, LayerKind, register
from .common import DEFAULT_INIT, bias_init, first_error, positive, weights, window


def check(a: dict):
    out = dict(a)
    return first_error(lambda: window("Convolution", a, out),
                       lambda: positive("Convolution", "num_filters", a),
                       lambda: weights(a, out)) or out


def shape(a, ins):
    (t,) = ins
    out, pads = window_output("Convolution", a, t, a["kernel"], a["filters"])
    params = {"W": (a["filters"], t.shape[0]) + tuple(a["kernel"])}
    if a["bias"]:
        params["b"] = (a["filters"],)
    return TensorType(out), params, {"pads": pads}


KIND = register(LayerKind(
    "Convolution", shape,
    attrs={"kernel": ("filter_shape", None), "filters": ("num_filters", None),
           "activation": ("activation", None), "bias": ("bias", True), "init": ("init", DEFAULT_INIT),
           "init_bias": ("init_bias", 0), "pad": ("pad", False), "strides": ("strides", (1, 1))},
    floats=("init_bias",),
    inits=lambda layer: {"W": layer.attr("init", DEFAULT_INIT), "b": bias_init(layer)},
    constructors=(Constructor(
        "Convolution", ("filter_shape", "num_filters"),
        {"filter_shape": REQUIRED, "num_filters": REQUIRED, "activation": None, "init": DEFAULT_INIT,
         "pad": False, "strides": 1, "bias": True, "init_bias": 0},
        check, aliases=("Convolution2D",), options=("activation", "init", "bias", "init_bias", "pad")),),
))
