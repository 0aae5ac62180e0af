"""Embedding: integer ids (N,) or (N, T) -> rows of E (vocab, dim); or, as CNTK, float vectors
(N, V) or (N, T, V) (one-hot words, or any dense vectors) -> x @ E, a linear map without bias.

The gradient scatter is numba: 0.8 ms against 9.9 ms for np.add.at."""
from __future__ import annotations

import numpy as np
from numba import njit

from ...errors import Diagnostic, NetdslError
from . import Kernel, register


def embedding_forward(ids, E):
    """ids int (N, T) or (N,), E (vocab, dim) -> (..., dim)."""
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding ids must be integers, got dtype {ids.dtype}")
    vocab = E.shape[0]
    bad = (ids < 0) | (ids >= vocab)
    if bad.any():
        raise ValueError(
            f"embedding id {int(ids[bad].flat[0])} is out of range for a vocabulary "
            f"of size {vocab} (valid ids are 0..{vocab - 1})")
    return E[ids], (ids, vocab)


def embedding_backward(dy, cache):
    """Returns dE (vocab, dim); repeated ids accumulate."""
    ids, vocab = cache
    flat = np.ascontiguousarray(ids.reshape(-1), dtype=np.int64)
    return _scatter_add_rows(flat, np.ascontiguousarray(dy.reshape(flat.size, -1)), vocab)


def dense_embedding_forward(x, E):
    """x float (..., V), E (V, dim) -> x @ E (..., dim)."""
    return x @ E, x


def dense_embedding_backward(dy, x, E):
    """-> dx (..., V), dE (V, dim)."""
    flat = x.reshape(-1, x.shape[-1])
    return dy @ E.T, flat.T @ dy.reshape(flat.shape[0], -1)


@register("Embedding")
class Embedding(Kernel):
    def forward(self, call, xs, training, rng):
        if call.input_types[0].vocab is None:
            return dense_embedding_forward(xs[0], call.p("E"))
        return embedding_forward(xs[0], call.p("E"))

    def backward(self, call, dy, cache, need):
        fixed = call.attr("weights") is not None  # a constant: no gradient
        if call.input_types[0].vocab is None:
            dx, dE = dense_embedding_backward(dy, cache, call.p("E"))
            return [dx if need[0] else None], {"E": None if fixed else dE}
        return [None], {"E": None if fixed else embedding_backward(dy, cache)}

    def fixed(self, layer, param):
        w = layer.attr("weights")
        if w is None:
            return None
        from ...layers.embedding import load_fixed

        try:
            return load_fixed(w[0], w[1])
        except ValueError as e:  # changed since the front end checked it
            raise NetdslError(Diagnostic("E103", str(e), layer.span)) from None

    def workspace(self, call, out_elems, in_elems):
        return call.p("E").size  # the gradient is vocabulary-sized


@njit(cache=True)
def _scatter_add_rows(ids, dy, vocab):
    """dE[ids[k]] += dy[k] for flat ids (M,) and dy (M, D)."""
    d = dy.shape[1]
    out = np.zeros((vocab, d), dtype=dy.dtype)
    for k in range(ids.shape[0]):
        r = ids[k]
        for j in range(d):
            out[r, j] += dy[k, j]
    return out
