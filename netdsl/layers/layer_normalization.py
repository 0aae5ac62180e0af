"""LayerNormalization over all features of a sample, with a scale and bias of the sample's shape."""
from __future__ import annotations

from ..shapes import float_features
from . import Constructor, LayerKind, register
from .common import first_error, finite_number, unit_interval


def check(a: dict):
    return first_error(
        lambda: unit_interval("LayerNormalization", "epsilon", a.get("epsilon", 1e-5), closed=False),
        lambda: finite_number("LayerNormalization", "initial_scale", a.get("initial_scale", 1)),
        lambda: finite_number("LayerNormalization", "initial_bias", a.get("initial_bias", 0))) or dict(a)


def inits(layer):
    scale, bias = layer.attr("initial_scale", 1.0), layer.attr("initial_bias", 0.0)
    return {"scale": "ones" if scale == 1 else f"constant({scale!r})",
            "bias": "zeros" if bias == 0 else f"constant({bias!r})"}


def shape(a, ins):
    (t,) = ins
    float_features(t, "LayerNormalization")
    return t, {"scale": t.shape, "bias": t.shape}, {}


KIND = register(LayerKind(
    "LayerNormalization", shape,
    attrs={"epsilon": ("epsilon", 1e-5), "initial_scale": ("initial_scale", 1.0),
           "initial_bias": ("initial_bias", 0.0)},
    floats=("epsilon", "initial_scale", "initial_bias"),
    inits=inits,
    constructors=(Constructor("LayerNormalization", (),
                              {"epsilon": 1e-5, "initial_scale": 1, "initial_bias": 0}, check,
                              options=("epsilon",)),),
))
