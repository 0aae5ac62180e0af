"""Rescale: (x * scale - mean) / std, made by Input(..., scale=, mean=, std=); no constructor."""
from __future__ import annotations

from ..shapes import elementwise
from . import LayerKind, register

KIND = register(LayerKind(
    "Rescale", elementwise("Rescale"),
    attrs={"scale": ("scale", 1.0), "mean": ("mean", 0.0), "std": ("std", 1.0)},
))
