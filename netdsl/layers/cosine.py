"""CosineDistance: cosine_distance(a, b), CNTK's name for the cosine similarity, shape (1,)."""
from __future__ import annotations

from ..ir import TensorType
from ..shapes import ShapeError, float_features
from . import Function, LayerKind, register


def inputs(name, args, kwargs, is_value):
    if len(args) != 2 or kwargs or not all(is_value(a) for a in args):
        return "E103", f"{name} takes two values, e.g. cosine_distance(a, b)"
    return list(args)


def shape(a, ins):
    x, y = ins
    for t in ins:
        float_features(t, "cosine_distance")
    if x.seq or y.seq or x.shape != y.shape:
        raise ShapeError(f"cosine_distance needs two values of one shape, got {x.describe()} and {y.describe()}")
    return TensorType((1,)), {}, {}


KIND = register(LayerKind("CosineDistance", shape, function=Function(("cosine_distance", "cos_distance"), inputs)))
