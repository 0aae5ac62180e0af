"""Elementwise: `a + b`, `a - b`, `a * b` on two values of one type (residual blocks).

One kind with an `op` attribute rather than three kinds: the three share their shape rule, their
checks and their place in every target (one function per target picks the operator), so three
kinds would be three copies of each. The evaluator makes the node from the binary operator
(evaluate.eval_binop); there is no constructor.
"""
from __future__ import annotations

from ..ir import TensorType
from ..shapes import ShapeError, float_features
from . import LayerKind, register

OPS = {"add": "+", "sub": "-", "mul": "*"}  # IR op -> the operator a .net file writes
BY_SYMBOL = {s: op for op, s in OPS.items()}


def shape(a, ins):
    sym = OPS[a["op"]]
    x, y = ins
    for t in ins:
        float_features(t, f"'{sym}'")
    if (x.shape, x.seq, x.length) != (y.shape, y.seq, y.length):
        raise ShapeError(f"'{sym}' needs two values of the same type, got {x.describe()} and {y.describe()}")
    return TensorType(x.shape, x.seq, x.length), {}, {}


KIND = register(LayerKind("Elementwise", shape, attrs={"op": ("op", "add")}))
