"""Elementwise: y = a + b, a - b or a * b on two arrays of one shape (the IR's `op` attribute)."""
from __future__ import annotations

from . import Kernel, register


def elementwise_forward(a, b, op):
    if a.shape != b.shape:
        raise ValueError(f"elementwise {op}: shapes differ {a.shape} vs {b.shape}")
    if op == "add":
        return a + b, None
    if op == "sub":
        return a - b, None
    if op == "mul":
        return a * b, (a, b)
    raise ValueError(f"elementwise: unknown op {op!r}")


def elementwise_backward(dy, cache, op):
    """Returns (da, db)."""
    if op == "add":
        return dy, dy
    if op == "sub":
        return dy, -dy
    a, b = cache
    return dy * b, dy * a


@register("Elementwise")
class Elementwise(Kernel):
    def forward(self, call, xs, training, rng):
        return elementwise_forward(xs[0], xs[1], call.attr("op"))

    def backward(self, call, dy, cache, need):
        da, db = elementwise_backward(dy, cache, call.attr("op"))
        return [da if need[0] else None, db if need[1] else None], {}

    def workspace(self, call, out_elems, in_elems):
        return in_elems if call.attr("op") == "mul" else 0
