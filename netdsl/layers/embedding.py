"""Embedding: token ids to vectors, E (vocab, dim); or, as CNTK, a float vector x (V,) (a one-hot word or any
dense vector) to x @ E with E (V, dim): a linear map without bias.

weights=("file.npz", "array") makes E a constant (CNTK's Embedding(weights=...)): the array is read and checked
where the argument is written (read_fixed), and E is not trained on any target."""
from __future__ import annotations

import os

import numpy as np

from ..errors import NetdslError
from ..ir import TensorType
from ..limits import LIMITS
from ..shapes import ShapeError
from ..values import describe, is_dim
from . import Constructor, LayerKind, register
from .common import DEFAULT_INIT, first_error, positive, weights


def check(a: dict, file: str | None = None):
    out = dict(a)
    fixed = a.get("weights")
    if fixed is None:
        if a.get("shape") is None:
            return "shape", "Embedding needs its shape (the vector size), or weights=(\"file.npz\", \"array\")"
        return first_error(lambda: positive("Embedding", "shape", a), lambda: weights(a, out)) or out
    if not (isinstance(fixed, tuple) and len(fixed) == 2 and all(isinstance(s, str) for s in fixed)):
        return "weights", f"weights must be (\"file.npz\", \"array name\"), got {describe(fixed)}"
    if "init" in a:
        return "init", "Embedding with weights= is a constant: init has nothing to initialise"
    shape = a.get("shape")
    if shape is not None and not is_dim(shape):
        return positive("Embedding", "shape", a)
    try:
        path, rows, dim = read_fixed(fixed[0], fixed[1], file)
    except ValueError as e:
        return "weights", str(e)
    if shape is not None and shape != dim:
        return "weights", f"array '{fixed[1]}' has {dim} columns, but the Embedding's shape is {shape}"
    out["shape"] = dim
    out["weights"] = (path, fixed[1], rows, dim)
    return out


def shape(a, ins):
    (t,) = ins
    fixed = a.get("weights")
    if t.vocab is None:
        if len(t.shape) != 1:
            raise ShapeError(f"Embedding needs token ids (SequenceInput(vocab=N)) or a vector, e.g. a one-hot "
                             f"Input(V, is_sparse=True), got {t.describe()}")
        rows = t.shape[0]
    else:
        rows = t.vocab
    if fixed is not None and fixed[2] != rows:
        what = f"a vocabulary of {rows}" if t.vocab is not None else f"vectors of size {rows}"
        raise ShapeError(f"the fixed weights '{fixed[1]}' have {fixed[2]} rows, but the input has {what}")
    return TensorType((a["dim"],), t.seq, t.length), {"E": (rows, a["dim"])}, {}


# ------------------------------------------------- the constant of weights=("file.npz", "array")
# The path is relative to the .net file that writes it. The .npz is read as weight files are
# (exec/weights.NpzArchive: a regular file, no pickle, headers before data); the array must be a
# 2-D float array within LIMITS.max_fixed_weights_bytes, and finite. Problems are ValueErrors whose
# text the front end reports at the weights argument.

def resolve(path: str, file: str | None) -> str:
    """`path` as written, relative to the directory of the .net file `file`; absolute."""
    if not path or "\0" in path:
        raise ValueError(f"weights file name {path!r} is not a path")
    base = os.path.dirname(os.path.abspath(file)) if file and not file.startswith("<") else os.getcwd()
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def _open(path: str, name: str, shown: str):
    # the executor's reader, imported only when used: its package loads numba
    from ..exec.weights import NpzArchive

    try:
        archive = NpzArchive(path)
    except NetdslError as e:
        raise ValueError(f"weights file {shown!r}: {e.diagnostics[0].message}") from None
    if name not in archive.headers:
        have = ", ".join(repr(k) for k in sorted(archive.headers)[:10]) or "none"
        archive.close()
        raise ValueError(f"weights file {shown!r} has no array {name!r} (it has {have})")
    h = archive.headers[name]
    problem = None
    if h.dtype.kind != "f":
        problem = f"is {h.dtype}, not a float array"
    elif len(h.shape) != 2 or 0 in h.shape:
        problem = f"has shape {h.shape}, not a 2-D (rows, dim) matrix"
    elif archive.nbytes(name) > LIMITS.max_fixed_weights_bytes:
        problem = (f"declares {archive.nbytes(name)} bytes, over the limit of {LIMITS.max_fixed_weights_bytes} "
                   f"(raise NETDSL_MAX_FIXED_WEIGHTS_BYTES to allow more)")
    if problem:
        archive.close()
        raise ValueError(f"array {name!r} of {shown!r} {problem}")
    return archive, h


def read_fixed(path: str, name: str, file: str | None) -> tuple:
    """Check the array where the .net file names it: (absolute path, rows, dim)."""
    full = resolve(path, file)
    a = load_fixed(full, name, path)
    return full, int(a.shape[0]), int(a.shape[1])


def load_fixed(path: str, name: str, shown: str | None = None) -> np.ndarray:
    """The checked array as float32 (the canonical weights' dtype); messages name the file as `shown`."""
    shown = path if shown is None else shown
    archive, _ = _open(path, name, shown)
    try:
        a = archive.read(name)
    except NetdslError as e:
        raise ValueError(f"weights file {shown!r}: {e.diagnostics[0].message}") from None
    finally:
        archive.close()
    if not np.isfinite(a).all():
        raise ValueError(f"array {name!r} of {shown!r} holds NaN or infinite values")
    a32 = a.astype(np.float32)
    if not np.isfinite(a32).all():
        raise ValueError(f"array {name!r} of {shown!r} overflows float32")
    return a32


KIND = register(LayerKind(
    "Embedding", shape,
    attrs={"dim": ("shape", None), "init": ("init", DEFAULT_INIT), "weights": ("weights", None)},
    # a fixed E starts as zeros in generated code, which loads the constant from the weights file
    inits=lambda layer: {"E": "zeros" if layer.attr("weights") else layer.attr("init", DEFAULT_INIT)},
    frozen=lambda layer: ("E",) if layer.attr("weights") else (),
    constructors=(Constructor("Embedding", ("shape",), {"shape": None, "init": DEFAULT_INIT, "weights": None}, check,
                              options=("init",), sourced=True),),
))
