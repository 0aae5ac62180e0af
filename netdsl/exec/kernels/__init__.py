"""The executor's kernels: one per IR layer kind, registered by kind.

Each kind's module (dense.py, conv.py, lstm.py, ...) holds everything the
executor knows about it: the pure forward/backward functions in the canonical
layout, the numba loops behind them, and one Kernel subclass registered with
@register("Kind"), which adapts them to the executor. Adding a kind means
adding one module here and naming it in the import at the bottom. Registering a kind
twice is an error, so two modules cannot silently compete for it.

The canonical layout every target shares (docs/ir.md): images NCHW, vectors
(N, F), sequences (N, T, F) with one T per batch; dense W (out, in); conv W
OIHW, cross-correlation, explicit (possibly asymmetric) zero pads; LSTM gates
stacked i, f, g, o with one bias. Forward functions return (y, cache), and
backward functions take (dy, cache); results keep the floating dtype of the
inputs (float32 to train, float64 for gradient checks).
"""
from __future__ import annotations

import numpy as np

from ... import ir

KERNELS: dict = {}  # kind -> Kernel instance
FUSIONS: dict = {}  # (kind, kind of its only reader) -> Fusion instance


class Call:
    """One application of a layer, as a kernel sees it: the layer, the node,
    the types of its inputs, the executor's dtype, and its parameters (looked
    up in the executor's dict on every use, so in-place updates are seen)."""

    def __init__(self, layer: ir.Layer, node: ir.Node, input_types: list, params: dict, dtype,
                 lengths: dict | None = None):
        self.layer, self.node, self.input_types = layer, node, input_types
        self.dtype = np.dtype(dtype)
        self._params = params
        self._prefix = layer.name + "."
        self._lengths = {} if lengths is None else lengths  # the executor's, refilled by every forward

    def lengths(self, i: int = 0):
        """The (N,) valid lengths of sequence input i in this batch, or None: all full
        length (docs/ir.md, variable-length sequence batches; kernels/masking.py)."""
        return self._lengths.get(self.node.inputs[i])

    def p(self, short):
        """A parameter the layer always has ('W')."""
        return self._params[self._prefix + short]

    def opt(self, short):
        """A parameter the layer may lack ('b' with bias=False): None then."""
        return self._params.get(self._prefix + short)

    def attr(self, key, default=None):
        return self.layer.attr(key, default)


class Kernel:
    """forward(call, xs, training, rng) -> (y, cache)
    backward(call, dy, cache, need) -> ([dx or None per input], {param short name: grad or None})
    need[i] says whether input i wants a gradient at all.
    workspace(call, out_elems, in_elems) -> elements held besides the output, for memory.py's estimate.
    fans(layer, param) -> (fan_in, fan_out) or (None, None), for weights.init_param."""

    kind = ""

    def forward(self, call, xs, training, rng):
        raise NotImplementedError

    def backward(self, call, dy, cache, need):
        raise NotImplementedError

    def workspace(self, call, out_elems, in_elems):
        return out_elems  # most caches hold about one output-sized array

    def fans(self, layer: ir.Layer, param: ir.Param):
        """(fan_in, fan_out) for the fan-based initialisers where the parameter's
        shape does not tell them; None, None: from the shape (init.fans)."""
        return None, None

    def fixed(self, layer: ir.Layer, param: ir.Param):
        """The value of a constant parameter (Embedding(weights=...)), or None: initialised."""


class Fusion:
    """A kind applied to the output of another, run as one step when the first
    node's only reader is the second (and the first is no graph output)."""

    def applies(self, first: ir.Layer, second: ir.Layer) -> bool:
        return True

    def forward(self, call, second_call, xs):
        raise NotImplementedError

    def backward(self, call, dy, cache, need):
        raise NotImplementedError


def register(kind: str):
    def deco(cls):
        if kind in KERNELS:
            raise ValueError(f"executor kernel for layer kind {kind!r} registered twice "
                             f"({type(KERNELS[kind]).__module__} and {cls.__module__})")
        inst = cls()
        inst.kind = kind
        KERNELS[kind] = inst
        return cls
    return deco


def register_fusion(first: str, second: str):
    def deco(cls):
        if (first, second) in FUSIONS:
            raise ValueError(f"executor fusion {first} + {second} registered twice")
        FUSIONS[(first, second)] = cls()
        return cls
    return deco


def pair(v) -> tuple:
    """(a, b) from an int or a pair."""
    if np.isscalar(v):
        return int(v), int(v)
    a, b = v
    return int(a), int(b)


# The kind modules, imported for their @register calls. A new kind: one module, one line here
# (one name per line, so two new kinds never conflict).
from . import (  # noqa: E402,F401
    activation,
    conv,
    cosine,
    delay,
    dense,
    dropout,
    elementwise,
    embedding,
    gru,
    lstm,
    norm,
    pool,
    shape,
    stabilizer,
    global_pool,
)
