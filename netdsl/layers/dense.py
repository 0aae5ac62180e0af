"""Dense: a fully connected layer, W (out, in); on an image or a sequence see shape()."""
from __future__ import annotations

from math import prod

from ..ir import TensorType
from ..shapes import float_features
from . import REQUIRED, Constructor, LayerKind, register
from .common import DEFAULT_INIT, bias_init, first_error, max_norm, positive, weights


def check(a: dict):
    out = dict(a)
    return first_error(lambda: positive("Dense", "shape", a), lambda: weights(a, out),
                       lambda: max_norm("Dense", a, out)) or out


def shape(a, ins):
    """An image is flattened first (C, H, W order); a sequence is mapped step by step."""
    (t,) = ins
    float_features(t, "Dense")
    n_in = prod(t.shape)
    params = {"W": (a["units"], n_in)}
    if a["bias"]:
        params["b"] = (a["units"],)
    return TensorType((a["units"],), t.seq, t.length), params, {}


KIND = register(LayerKind(
    "Dense", shape,
    attrs={"units": ("shape", None), "activation": ("activation", None), "bias": ("bias", True),
           "init": ("init", DEFAULT_INIT), "init_bias": ("init_bias", 0), "max_norm": ("max_norm", None)},
    floats=("init_bias",),
    inits=lambda layer: {"W": layer.attr("init", DEFAULT_INIT), "b": bias_init(layer)},
    constructors=(Constructor(
        "Dense", ("shape",),
        {"shape": REQUIRED, "activation": None, "init": DEFAULT_INIT, "bias": True, "init_bias": 0, "max_norm": None},
        check, options=("activation", "init", "bias", "init_bias")),),
))
