"""Delay (CNTK's Delay layer, over past_value / future_value): y[t] = x[t - T] where 0 <= t - T < length,
else initial_state. T > 0 looks into the past, T < 0 into the future; no parameters.

Defined on full-length sequences. On a padded batch (docs/ir.md), the frames beyond a sample's own
length are padding: Delay(T < 0) at a sample's last valid steps reads initial_state, never the padding.
"""
from __future__ import annotations

import math

from ..ir import TensorType
from ..limits import LIMITS
from ..shapes import ShapeError, float_features
from ..values import describe, is_number
from . import Constructor, LayerKind, register

FLOAT32_MAX = 3.4028234663852886e38


def check(a: dict):
    out = {}
    t = a.get("T", 1)
    if not is_number(t) or not isinstance(t, int) or t == 0 or abs(t) > LIMITS.max_dim:
        return "T", (f"Delay T must be a non-zero whole number of steps (negative: future values), at most "
                     f"{LIMITS.max_dim:,} either way, got {describe(a.get('T', 1))}")
    out["T"] = t
    v = a.get("initial_state")
    if v is not None:
        if not is_number(v) or not math.isfinite(v) or abs(v) > FLOAT32_MAX:
            return "initial_state", f"Delay initial_state must be a finite number (float32), got {describe(v)}"
        out["initial_state"] = float(v)
    return out


def shape(a, ins):
    (t,) = ins
    float_features(t, "Delay")
    if not t.seq or len(t.shape) != 1:
        raise ShapeError(f"Delay needs a sequence of feature vectors, got {t.describe()}")
    return TensorType(t.shape, True, t.length), {}, {}


KIND = register(LayerKind(
    "Delay", shape,
    attrs={"T": ("T", 1), "initial_state": ("initial_state", 0.0)},
    floats=("initial_state",),
    constructors=(Constructor("Delay", ("T", "initial_state"), {"T": 1, "initial_state": None}, check,
                              options=("initial_state",)),),
))
