"""Flatten: (C, H, W) to (C*H*W,), in C, H, W order."""
from __future__ import annotations

from math import prod

from ..ir import TensorType
from ..shapes import float_features
from . import Constructor, LayerKind, register


def shape(a, ins):
    (t,) = ins
    float_features(t, "Flatten")
    return TensorType((prod(t.shape),), t.seq, t.length), {}, {}


KIND = register(LayerKind("Flatten", shape, constructors=(Constructor("Flatten", (), {}, dict),)))
