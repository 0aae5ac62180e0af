"""SelectLast and SelectFirst: select_last(h) is the last step of a sequence."""
from __future__ import annotations

from ..ir import TensorType
from ..shapes import ShapeError
from . import Function, LayerKind, register


def inputs(name, args, kwargs, is_value):
    if len(args) != 1 or kwargs or not is_value(args[0]):
        return "E103", f"{name} takes one sequence value"
    return list(args)


def select(kind: str, name: str) -> LayerKind:
    def shape(a, ins):
        (t,) = ins
        if not t.seq:
            raise ShapeError(f"{name} needs a sequence, got {t.describe()}")
        return TensorType(t.shape, False, None, t.vocab), {}, {}

    return register(LayerKind(kind, shape, function=Function((name,), inputs)))


LAST = select("SelectLast", "select_last")
FIRST = select("SelectFirst", "select_first")
