"""LayerNormalization over all features of a sample, with a scale and bias of the sample's shape."""
from __future__ import annotations

from ..shapes import float_features
from . import Constructor, LayerKind, register
from .common import unit_interval


def check(a: dict):
    return unit_interval("LayerNormalization", "epsilon", a.get("epsilon", 1e-5), closed=False) or dict(a)


def shape(a, ins):
    (t,) = ins
    float_features(t, "LayerNormalization")
    return t, {"scale": t.shape, "bias": t.shape}, {}


KIND = register(LayerKind(
    "LayerNormalization", shape,
    attrs={"epsilon": ("epsilon", 1e-5)},
    floats=("epsilon",),
    inits=lambda layer: {"scale": "ones", "bias": "zeros"},
    constructors=(Constructor("LayerNormalization", (), {"epsilon": 1e-5}, check),),
))
