"""GlobalAveragePooling and GlobalMaxPooling: (N, C, H, W) -> (N, C), the mean or the maximum of
each channel map. The maximum's gradient goes to the first maximal position in row-major order
(PyTorch's max pooling does the same), so ties never split it."""
from __future__ import annotations

import numpy as np

from . import Kernel, register


def global_avg_forward(x):
    return x.mean(axis=(2, 3), dtype=x.dtype), x.shape


def global_avg_backward(dy, shape):
    h, w = shape[2:]
    return np.broadcast_to((dy / (h * w))[:, :, None, None], shape).astype(dy.dtype)


def global_max_forward(x):
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    arg = flat.argmax(axis=2)
    return np.take_along_axis(flat, arg[:, :, None], axis=2)[:, :, 0], (arg, x.shape)


def global_max_backward(dy, cache):
    arg, (n, c, h, w) = cache
    dx = np.zeros((n, c, h * w), dtype=dy.dtype)
    np.put_along_axis(dx, arg[:, :, None], dy[:, :, None], axis=2)
    return dx.reshape(n, c, h, w)


@register("GlobalAveragePooling")
class GlobalAveragePooling(Kernel):
    def forward(self, call, xs, training, rng):
        return global_avg_forward(xs[0])

    def backward(self, call, dy, cache, need):
        return [global_avg_backward(dy, cache)], {}

    def workspace(self, call, out_elems, in_elems):
        return 0


@register("GlobalMaxPooling")
class GlobalMaxPooling(Kernel):
    def forward(self, call, xs, training, rng):
        return global_max_forward(xs[0])

    def backward(self, call, dy, cache, need):
        return [global_max_backward(dy, cache)], {}
