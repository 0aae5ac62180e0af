"""Dropout. The IR keeps one meaning, the DROP probability (TF1's keep_prob is the other trap)."""
from __future__ import annotations

from ..shapes import elementwise
from ..values import describe, is_number
from . import Constructor, LayerKind, register


def check(a: dict):
    rate, keep = a.get("dropout_rate"), a.get("keep_prob")
    if (rate is None) == (keep is None):
        return "dropout_rate", "Dropout takes exactly one of dropout_rate (the drop probability) or keep_prob"
    value = rate if rate is not None else keep
    if not is_number(value) or not 0 <= value < 1:
        key = "dropout_rate" if rate is not None else "keep_prob"
        return key, f"Dropout {key} must be in [0, 1), got {describe(value)}"
    return {"rate": float(rate if rate is not None else 1 - keep)}


KIND = register(LayerKind(
    "Dropout", elementwise("Dropout"),
    attrs={"rate": ("rate", None)},
    floats=("rate",),
    constructors=(Constructor("Dropout", ("dropout_rate",), {"dropout_rate": None, "keep_prob": None}, check),),
))
