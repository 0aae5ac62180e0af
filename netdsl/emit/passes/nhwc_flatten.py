"""tf-estimator pass: images run NHWC, so a Flatten whose every reader is a Dense flattens in NHWC
order and those Dense layers get their canonical weight rows permuted on load and export."""
from __future__ import annotations

from ..legacy import Legacy, is_image


def flatten_orders(lg: Legacy) -> dict:
    """Node name -> (C, H, W) for every value that is an NHWC image flattened in NHWC order.

    A Flatten keeps NHWC order only when every reader is a Dense (whose rows get permuted);
    otherwise it transposes to NCHW first and its output is canonical."""
    readers = lg.consumers
    out = {}
    for node in lg.graph.nodes:
        layer = lg.layer(node.layer)
        if layer.kind == "Flatten":
            t = lg.value_type(node.inputs[0])
            if is_image(t) and readers.get(node.name) and \
                    all(lg.layer(r.layer).kind == "Dense" for r in readers[node.name]):
                out[node.name] = tuple(t.shape)
    return out


def dense_rows(lg: Legacy) -> dict:
    """Dense layer -> (C, H, W) when it reads NHWC-ordered images (its rows are permuted), else None;
    plus the layers whose applications disagree."""
    orders = flatten_orders(lg)
    rows, conflicts = {}, []
    for node in lg.graph.nodes:
        layer = lg.layer(node.layer)
        if layer.kind != "Dense":
            continue
        t = lg.value_type(node.inputs[0])
        chw = tuple(t.shape) if is_image(t) and not layer.attr("map_axes") else orders.get(node.inputs[0])
        if layer.name in rows and rows[layer.name] != chw:
            conflicts.append(layer)
        rows[layer.name] = chw
    return rows, conflicts
