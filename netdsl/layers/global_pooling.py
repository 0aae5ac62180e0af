"""GlobalAveragePooling and GlobalMaxPooling (CNTK's spellings): the mean or the maximum of each
channel of an image over all its positions.

Output: a vector (C,), not CNTK's (C, 1, 1). The unit axes carry nothing (a Dense after either
flattens to the same C features), and a vector is what Keras's GlobalAveragePooling2D gives and
what a classifier head reads; every target reshapes its framework's result to (N, C).
"""
from __future__ import annotations

from ..ir import TensorType
from ..shapes import image
from . import Constructor, LayerKind, register


def check(a: dict):
    return {}


def global_pooling(kind: str) -> LayerKind:
    def shape(a, ins):
        (t,) = ins
        c, _, _ = image(t, kind)
        return TensorType((c,)), {}, {}

    return register(LayerKind(kind, shape, constructors=(Constructor(kind, (), {}, check),)))


AVERAGE = global_pooling("GlobalAveragePooling")
MAX = global_pooling("GlobalMaxPooling")
