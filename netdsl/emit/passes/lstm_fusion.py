"""Pass: an LSTM whose every application feeds only a select_last (select_first when it runs
backwards) can be one framework LSTM that returns its last state only (Keras: return_sequences off)."""
from __future__ import annotations

from .. import common as C


def fused_lstms(idx: C.GraphIndex) -> set:
    """The names of the LSTM layers that can return their last state instead of the sequence."""
    fused = set()
    for lname, apps in idx.applications.items():
        layer = idx.layers[lname]
        if layer.kind != "LSTM":
            continue
        want = "SelectFirst" if layer.attr("go_backwards") else "SelectLast"
        if all(n.name not in idx.outputs and len(idx.consumers[n.name]) == 1
               and idx.layers[idx.consumers[n.name][0].layer].kind == want for n in apps):
            fused.add(lname)
    return fused
