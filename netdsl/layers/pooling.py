"""MaxPooling and AveragePooling: one window rule, two kinds. A one-element filter_shape (k,) pools
over the time axis of a sequence of vectors (N, T, F), each feature on its own."""
from __future__ import annotations

from ..ir import TensorType
from ..shapes import sequence_window_output, window_output
from . import REQUIRED, Constructor, LayerKind, register
from .common import window, window1d


def pooling(kind: str) -> LayerKind:
    def check(a: dict):
        out = dict(a)
        fs = a["filter_shape"]
        if isinstance(fs, tuple) and len(fs) == 1:
            return window1d(kind, a, out) or out
        return window(kind, a, out) or out

    def shape(a, ins):
        (t,) = ins
        if len(a["window"]) == 1:
            length, pads = sequence_window_output(kind, a, t, a["window"][0])
            return TensorType(t.shape, seq=True, length=length), {}, {"pads": pads}
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
