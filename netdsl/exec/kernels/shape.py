"""Plumbing kinds: Flatten (C order of the canonical layout), Splice
(concatenation on the channel axis: 1 for NCHW, the last otherwise),
SelectLast and SelectFirst (one time step of a sequence)."""
from __future__ import annotations

import numpy as np

from . import Kernel, register
from .activation import feature_axis


def splice_forward(xs):
    """Concatenate on the channel axis (1 for NCHW, last for (N,F), (N,T,F))."""
    axis = feature_axis(xs[0])
    return np.concatenate(xs, axis=axis), (axis, [a.shape[axis] for a in xs])


def splice_backward(dy, cache):
    """Returns a list with one gradient per input."""
    axis, sizes = cache
    parts = np.split(dy, np.cumsum(sizes)[:-1], axis=axis)
    return [np.ascontiguousarray(p) for p in parts]


def select_last_forward(x):
    return x[:, -1].copy(), (x.shape, -1)


def select_first_forward(x):
    return x[:, 0].copy(), (x.shape, 0)


def select_backward(dy, cache):
    """Backward of select_last_forward and select_first_forward."""
    shape, t = cache
    dx = np.zeros(shape, dy.dtype)
    dx[:, t] = dy
    return dx


select_last_backward = select_backward


def select_at_forward(x, steps):
    """x[b, steps[b]] for every sample b (SelectLast on a padded batch: steps = lengths - 1)."""
    rows = np.arange(x.shape[0])
    return x[rows, steps], (x.shape, (rows, steps))


def select_at_backward(dy, cache):
    shape, (rows, steps) = cache
    dx = np.zeros(shape, dy.dtype)
    dx[rows, steps] = dy
    return dx
select_first_backward = select_backward


def flatten_forward(x, seq=False):
    """(N, ...) -> (N, features); a sequence (N, T, ...) is flattened per step, as the IR's type says."""
    lead = 2 if seq else 1
    return x.reshape(*x.shape[:lead], -1), x.shape


def flatten_backward(dy, cache):
    return dy.reshape(cache)


@register("Flatten")
class Flatten(Kernel):
    def forward(self, call, xs, training, rng):
        return flatten_forward(xs[0], bool(call.input_types[0].seq))

    def backward(self, call, dy, cache, need):
        return [flatten_backward(dy, cache)], {}

    def workspace(self, call, out_elems, in_elems):
        return 0  # a view


@register("Splice")
class Splice(Kernel):
    def forward(self, call, xs, training, rng):
        return splice_forward(xs)

    def backward(self, call, dy, cache, need):
        return splice_backward(dy, cache), {}


@register("SelectLast")
class SelectLast(Kernel):
    def forward(self, call, xs, training, rng):
        lengths = call.lengths()
        if lengths is not None:  # each sample's last VALID step (docs/ir.md)
            return select_at_forward(xs[0], np.asarray(lengths) - 1)
        return select_last_forward(xs[0])

    def backward(self, call, dy, cache, need):
        if isinstance(cache[1], tuple):
            return [select_at_backward(dy, cache)], {}
        return [select_backward(dy, cache)], {}

    def workspace(self, call, out_elems, in_elems):
        return in_elems  # the input gradient


@register("SelectFirst")
class SelectFirst(SelectLast):
    def forward(self, call, xs, training, rng):
        return select_first_forward(xs[0])
