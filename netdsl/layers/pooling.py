"""MaxPooling and AveragePooling: one window rule, two kinds."""
from __future__ import annotations

from ..ir import TensorType
from ..shapes import window_output
from . import REQUIRED, Constructor, LayerKind, register
from .common import window


def pooling(kind: str) -> LayerKind:
    def check(a: dict):
        out = dict(a)
        return window(kind, a, out) or out

    def shape(a, ins):
        (t,) = ins
        out, pads = window_output(kind, a, t, a["window"], None)
        return TensorType(out), {}, {"pads": pads}

    return register(LayerKind(
        kind, shape,
        attrs={"window": ("filter_shape", None), "strides": ("strides", (1, 1)), "pad": ("pad", False)},
        constructors=(Constructor(kind, ("filter_shape",), {"filter_shape": REQUIRED, "strides": 1, "pad": False},
                                  check, aliases=(kind + "2D",), options=("pad",),
                                  keyword_aliases={"rf_shape": "filter_shape"}),),
    ))


MAX = pooling("MaxPooling")
AVERAGE = pooling("AveragePooling")
