"""CosineDistance: per-sample cosine SIMILARITY, shape (N, 1), as torch's
cosine_similarity(a, b, dim=1, eps)."""
from __future__ import annotations

import numpy as np

from . import Kernel, register


def cosine_distance_forward(a, b, eps=1e-8):
    """Per-sample cosine SIMILARITY over the non-batch axes, shape (N, 1).

    Matches torch.nn.functional.cosine_similarity(a, b, dim=1, eps): each norm
    is clamped to eps separately and the vectors are normalised before the
    dot product.
    """
    if a.shape != b.shape:
        raise ValueError(f"cosine_distance: shapes differ {a.shape} vs {b.shape}")
    n = a.shape[0]
    a2 = a.reshape(n, -1)
    b2 = b.reshape(n, -1)
    na = np.sqrt((a2 * a2).sum(axis=1, keepdims=True))
    nb = np.sqrt((b2 * b2).sum(axis=1, keepdims=True))
    nac = np.maximum(na, eps).astype(na.dtype, copy=False)
    nbc = np.maximum(nb, eps).astype(nb.dtype, copy=False)
    an = a2 / nac
    bn = b2 / nbc
    y = (an * bn).sum(axis=1, keepdims=True)
    return y, (a2, b2, an, bn, na, nb, nac, nbc, y, a.shape)


def cosine_distance_backward(dy, cache):
    """Returns (da, db).

    Like torch, the eps clamp is invisible to autograd: the norm's gradient
    a/|a| is used even when |a| < eps (and 0 when |a| == 0).
    """
    a2, b2, an, bn, na, nb, nac, nbc, y, shape = cache
    g = dy.reshape(-1, 1)

    def grad(v, vn_other, nv, nvc):
        safe = np.where(nv == 0, 1, nv)
        radial = np.where(nv == 0, 0, v / safe)
        return g / nvc * (vn_other - y * radial)

    da = grad(a2, bn, na, nac).astype(a2.dtype, copy=False)
    db = grad(b2, an, nb, nbc).astype(b2.dtype, copy=False)
    return da.reshape(shape), db.reshape(shape)


@register("CosineDistance")
class CosineDistance(Kernel):
    def forward(self, call, xs, training, rng):
        return cosine_distance_forward(xs[0], xs[1])

    def backward(self, call, dy, cache, need):
        return list(cosine_distance_backward(dy, cache)), {}

    def workspace(self, call, out_elems, in_elems):
        return 4 * in_elems
