"""Splice: splice([a, b]) joins values along the channel (images) or feature axis."""
from __future__ import annotations

from ..ir import TensorType
from ..shapes import ShapeError, float_features
from . import Function, LayerKind, register


def inputs(name, args, kwargs, is_value):
    if kwargs:
        return "E102", f"{name} takes the values to join and no keyword arguments"
    items = args[0] if len(args) == 1 and isinstance(args[0], list) else args
    if len(items) < 2 or not all(is_value(i) for i in items):
        return "E103", f"{name} joins two or more values, e.g. splice([a, b])"
    return list(items)


def shape(a, ins):
    first = ins[0]
    for t in ins:
        float_features(t, "splice")
    for t in ins[1:]:
        if t.seq != first.seq or t.length != first.length or len(t.shape) != len(first.shape) or t.shape[1:] != first.shape[1:]:
            raise ShapeError(
                "splice joins along the channel/feature axis, and the other axes must agree: got "
                + " and ".join(i.describe() for i in ins))
    joined = (sum(t.shape[0] for t in ins),) + first.shape[1:]
    return TensorType(joined, first.seq, first.length), {}, {}


KIND = register(LayerKind("Splice", shape, function=Function(("splice",), inputs)))
