"""Activation(relu), also made when an activation itself stands as a layer: Sequential([..., relu])."""
from __future__ import annotations

from ..shapes import elementwise
from ..values import Activation, describe
from . import REQUIRED, Constructor, LayerKind, register
from .common import ACTIVATIONS, weights


def check(a: dict):
    out = dict(a)
    res = weights(a, out)
    if res is not None:
        return res
    if not isinstance(a["activation"], Activation):
        return "activation", f"Activation takes one of {', '.join(ACTIVATIONS)}, got {describe(a['activation'])}"
    return out


KIND = register(LayerKind(
    "Activation", elementwise("Activation"),
    attrs={"activation": ("activation", None)},
    constructors=(Constructor("Activation", ("activation",), {"activation": REQUIRED}, check),),
))
