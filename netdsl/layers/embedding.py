"""Embedding: token ids to vectors, E (vocab, dim); or, as CNTK, a float vector x (V,) (a one-hot word or any
dense vector) to x @ E with E (V, dim): a linear map without bias."""
from __future__ import annotations

from ..ir import TensorType
from ..shapes import ShapeError
from . import REQUIRED, Constructor, LayerKind, register
from .common import DEFAULT_INIT, first_error, positive, weights


def check(a: dict):
    out = dict(a)
    return first_error(lambda: positive("Embedding", "shape", a), lambda: weights(a, out)) or out


def shape(a, ins):
    (t,) = ins
    if t.vocab is None:
        if len(t.shape) != 1:
            raise ShapeError(f"Embedding needs token ids (SequenceInput(vocab=N)) or a vector, e.g. a one-hot "
                             f"Input(V, is_sparse=True), got {t.describe()}")
        return TensorType((a["dim"],), t.seq, t.length), {"E": (t.shape[0], a["dim"])}, {}
    return TensorType((a["dim"],), t.seq, t.length), {"E": (t.vocab, a["dim"])}, {}


KIND = register(LayerKind(
    "Embedding", shape,
    attrs={"dim": ("shape", None), "init": ("init", DEFAULT_INIT)},
    inits=lambda layer: {"E": layer.attr("init", DEFAULT_INIT)},
    constructors=(Constructor("Embedding", ("shape",), {"shape": REQUIRED, "init": DEFAULT_INIT}, check,
                              options=("init",)),),
))
