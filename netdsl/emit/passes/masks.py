"""Pass: what the emitters need for variable-length sequence batches (docs/ir.md).

- length_sources: which sequence input's lengths each sequence value has (the layers that
  consume lengths -- recurrences, select_last, the loss -- read them from there);
- bidirectional_pairs: a forward and a go_backwards LSTM over the same value, spliced
  [forward, backward] and read by nothing else, which a framework can run as ONE
  bidirectional LSTM (PyTorch nn.LSTM(bidirectional=True): issue 14).
Every recurrence kind (LSTM, GRU) is listed in RECURRENCES.
"""
from __future__ import annotations

from .. import common as C

RECURRENCES = ("LSTM", "GRU")  # kinds that run over time and take the lengths


def length_sources(idx: C.GraphIndex) -> dict:
    """{sequence value name: the sequence input whose lengths it has}."""
    src = {name: name for name in idx.inputs if idx.types[name].seq}
    for n in idx.graph.nodes:
        if n.type.seq:
            first = next((src[v] for v in n.inputs if v in src), None)
            if first is not None:
                src[n.name] = first
    return src


def bidirectional_pairs(idx: C.GraphIndex, kinds=("LSTM",)) -> list:
    """[(splice node, forward node, backward node)]: the pairs one bidirectional layer computes."""
    pairs = []
    for n in idx.graph.nodes:
        if idx.layers[n.layer].kind != "Splice" or len(n.inputs) != 2:
            continue
        a, b = (idx.producer.get(v) for v in n.inputs)
        if a is None or b is None or a is b:
            continue
        la, lb = idx.layers[a.layer], idx.layers[b.layer]
        if la.kind not in kinds or lb.kind != la.kind or la.attr("units") != lb.attr("units"):
            continue
        if la.attr("cell") is not None or lb.attr("cell") is not None:  # a projected LSTM runs on its own
            continue
        if any(x.attr("peepholes") or x.attr("stabilize") for x in (la, lb)):  # so do CNTK's other options
            continue
        if la.attr("go_backwards") or not lb.attr("go_backwards") or a.inputs != b.inputs:
            continue
        if idx.shared(la.name) or idx.shared(lb.name):
            continue
        if la.attr("initial_state") or lb.attr("initial_state"):  # the pair runs as two one-way LSTMs
            continue
        if any(v in idx.outputs or len(idx.consumers[v]) != 1 for v in (a.name, b.name)):
            continue
        pairs.append((n, a, b))
    return pairs
