"""Padded batches for `netdsl conformance` (docs/ir.md, variable-length sequence batches).

Every sequence input of a conformance batch gets (N,) lengths: sample 0 keeps the full T, the
others are drawn in [1, T], so every column runs a truly padded batch. Padded positions hold
the pad id 0 (a real embedding row) or 9.0 for features, far from the drawn values: a target
that reads the padding shows it. Only valid positions are compared (zero_padding).

TARGETS_WITH_MASKS lists the targets whose generated predict()/train_step() take lengths; the
other columns run the batch unpadded (all full length) and say so in their cell.
"""
from __future__ import annotations

import numpy as np

from . import ir

TARGETS_WITH_MASKS = frozenset({"pytorch", "gluon", "tf-estimator", "keras", "cntk", "onnx"})
PAD_FEATURE = 9.0


def checks_padding(target: str, graph: ir.Graph) -> bool:
    """Whether the target's column runs this model on the padded batch. Not on CNTK under a 1-D window over
    time: CNTK's sequences end at their lengths, so the window sees zeros past a sequence's end where netdsl
    (and the other targets) read the batch's padding, which no CNTK sequence holds (docs/targets.md)."""
    from .emit.common import is_1d_window

    if target not in TARGETS_WITH_MASKS:
        return False
    if target == "cntk":
        return not any(layer.kind in ("Convolution", "MaxPooling", "AveragePooling") and is_1d_window(layer)
                       for layer in graph.layers)
    return True


def draw_lengths(graph: ir.Graph, inputs: dict, seed: int) -> dict:
    """{sequence input: (N,) int64 lengths}, and the padding written into `inputs` (in place)."""
    rng = np.random.default_rng(seed + 7)
    lengths = {}
    for inp in graph.inputs:
        if not inp.type.seq:
            continue
        x = inputs[inp.name]
        n, T = x.shape[:2]
        lens = rng.integers(1, T + 1, n).astype(np.int64)
        lens[0] = T
        if n > 1 and T > 1 and (lens[1:] == T).all():
            lens[1] = T - 1  # always some padding
        lengths[inp.name] = lens
        pad = ~valid(lens, T)
        x[pad] = 0 if inp.type.vocab is not None else PAD_FEATURE
    return lengths


def valid(lengths, T: int) -> np.ndarray:
    return np.arange(T)[None, :] < np.asarray(lengths)[:, None]


def output_sources(graph: ir.Graph) -> dict:
    """{sequence output: the input whose lengths it has}."""
    src = {i.name: i.name for i in graph.inputs if i.type.seq}
    for n in graph.nodes:
        if n.type.seq:
            first = next((src[v] for v in n.inputs if v in src), None)
            if first is not None:
                src[n.name] = first
    return {o: src[o] for o in graph.outputs if o in src}


def zero_padding(graph: ir.Graph, outputs: dict, lengths: dict) -> dict:
    """The outputs with every padded position of a sequence output set to 0: only valid
    positions are compared (what a target computes at padding is not defined)."""
    out = dict(outputs)
    for name, src in output_sources(graph).items():
        if src in lengths and name in out and np.asarray(out[name]).ndim >= 2:
            a = np.array(out[name], copy=True)
            if a.shape[:1] == lengths[src].shape:
                a[~valid(lengths[src], a.shape[1])] = 0
            out[name] = a
    return out
