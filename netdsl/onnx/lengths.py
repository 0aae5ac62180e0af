"""Padded batches in ONNX (docs/ir.md, variable-length sequence batches).

A sequence input `x` whose lengths a layer reads gets a second graph input `x_lens`: (N,) int64, each
in [1, T]. It is optional: its initializer is an empty array, and the graph then uses T for every
sample (onnxruntime and onnx.reference both let a feed override an initializer that is also an
input). Its helper nodes are named `x_lens/...` (the importer recognises them by that prefix):
- `x_lens/lengths` (int64) and `x_lens/lengths32` (int32, for LSTM/GRU's sequence_lens);
- `x_lens/last` (N, 1) int64, lengths - 1, for select_last's GatherND.
A go_backwards recurrence is a ReverseSequence of each sample's valid steps, a forward
recurrence with sequence_lens, and a ReverseSequence back: onnx.reference's LSTM and GRU ignore
sequence_lens, so a "reverse" recurrence would read the padding first there.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import ir
from ..emit.passes.masks import RECURRENCES  # every recurrence kind takes the lengths

SUFFIX = "_lens"


@dataclass
class Lengths:
    input: str  # the sequence input
    lengths: str  # (N,) int64
    lengths32: str  # (N,) int32
    last: str | None = None  # (N, 1) int64: lengths - 1


def users(graph: ir.Graph) -> set:
    """The sequence inputs some layer reads the lengths of: a recurrence, select_last, a future Delay."""
    sources = output_sources_all(graph)
    used = set()
    for n in graph.nodes:
        layer = graph.layer(n.layer)
        if not n.inputs or n.inputs[0] not in sources:
            continue
        if layer.kind in RECURRENCES or layer.kind == "SelectLast" or (
                layer.kind == "Delay" and layer.attr("T") < 0):
            used.add(sources[n.inputs[0]])
    return used


def output_sources_all(graph: ir.Graph) -> dict:
    """{sequence value: the sequence input whose lengths it has} (as conformance_lengths.output_sources,
    for every value, not only the outputs)."""
    src = {i.name: i.name for i in graph.inputs if i.type.seq}
    for n in graph.nodes:
        if n.type.seq:
            first = next((src[v] for v in n.inputs if v in src), None)
            if first is not None:
                src[n.name] = first
    return src


def add_lengths(b, graph: ir.Graph) -> list:
    """Make the lengths inputs and their helper nodes; fill b.lengths; the inputs' value_infos."""
    from onnx import TensorProto, helper

    used = users(graph)
    infos = []
    made = {}
    for inp in graph.inputs:
        if inp.name not in used:
            continue
        name = inp.name + SUFFIX
        b.const(name, np.zeros(0, np.int64))  # the default: every sample T long
        infos.append(helper.make_tensor_value_info(name, TensorProto.INT64, ["L"]))
        p = name + "/"
        shape = b.op("Shape", [inp.name], name=p + "shape")
        zero, one, two = (b.const(p + k, np.array([v], np.int64)) for k, v in (("0", 0), ("1", 1), ("2", 2)))
        n = b.op("Slice", [shape, zero, one], name=p + "batch")
        t = b.op("Slice", [shape, one, two], name=p + "steps")
        full = b.op("Expand", [t, n], name=p + "full")
        both = b.op("Concat", [name, full], name=p + "given_or_full", axis=0)
        lengths = b.op("Slice", [both, zero, n], p + "lengths", name=p + "lengths")
        lengths32 = b.op("Cast", [lengths], p + "lengths32", name=p + "lengths32", to=TensorProto.INT32)
        made[inp.name] = Lengths(inp.name, lengths, lengths32)
        if any(graph.layer(nd.layer).kind == "SelectLast" for nd in graph.nodes):
            last = b.op("Sub", [lengths, one], name=p + "minus_one")
            made[inp.name].last = b.op("Unsqueeze", [last, one], p + "last", name=p + "last")
    sources = output_sources_all(graph)
    b.lengths = {v: made[src] for v, src in sources.items() if src in made}
    return infos
