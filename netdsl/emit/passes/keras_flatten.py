"""Keras pass: where an NHWC image is flattened, in which feature order (see flatten_modes)."""
from __future__ import annotations

from .. import common as C

TRANSPARENT = ("Dropout", "Activation", "Rescale")  # elementwise: the order of features does not matter


def flatten_modes(idx: C.GraphIndex) -> tuple:
    """Where an NHWC image is flattened, flatten as Keras does ("nhwc") or in netdsl's C, H, W order ("nchw").

    "nhwc" is the idiomatic choice and costs nothing at run time: the weights
    of the Dense layers that read the flat vector get their input rows
    reordered when loading. That works when every reader (through dropout and
    activations) is a Dense layer that sees only such vectors of one image
    shape; anywhere else (splice, outputs, normalisation, a Dense shared with
    plain vectors) the image is transposed back to channels-first before
    flattening. Returns ({site node: mode}, {dense layer: (C, H, W) or None}).
    """
    graph = idx.graph
    sites = {}
    for n in graph.nodes:
        kind = idx.layers[n.layer].kind
        mapped = kind == "Dense" and idx.layers[n.layer].attr("map_axes")  # keeps the channel axis: not flattened
        if kind in ("Flatten", "Dense") and C.is_image(idx.types[n.inputs[0]]) and not mapped:
            sites[n.name] = "nhwc" if kind == "Dense" or _only_dense_reads(n.name, idx) else "nchw"
    if not sites:
        return sites, {}
    while True:
        origin = {}  # value -> the flatten site its feature order comes from
        chw_apps: dict = {}
        for n in graph.nodes:
            kind = idx.layers[n.layer].kind
            src = n.inputs[0] if n.inputs else None
            if kind == "Flatten" and sites.get(n.name) == "nhwc":
                origin[n.name] = n.name
            elif kind in TRANSPARENT and src in origin:
                origin[n.name] = origin[src]
            elif kind == "Dense":
                if sites.get(n.name) == "nhwc":  # a Dense straight on an image flattens it itself
                    chw_apps.setdefault(n.layer, []).append((tuple(idx.types[src].shape), n.name))
                elif src in origin:
                    image = idx.producer[origin[src]].inputs[0]
                    chw_apps.setdefault(n.layer, []).append((tuple(idx.types[image].shape), origin[src]))
                else:
                    chw_apps.setdefault(n.layer, []).append((None, None))
        conflicts = [lname for lname, apps in chw_apps.items() if len({chw for chw, _ in apps}) > 1]
        if not conflicts:
            return sites, {lname: apps[0][0] for lname, apps in chw_apps.items()}
        for lname in conflicts:
            for chw, site in chw_apps[lname]:
                if site is not None:
                    sites[site] = "nchw"


def _only_dense_reads(value: str, idx: C.GraphIndex) -> bool:
    if value in idx.outputs:
        return False
    for c in idx.consumers[value]:
        kind = idx.layers[c.layer].kind
        if kind in TRANSPARENT:
            if not _only_dense_reads(c.name, idx):
                return False
        elif kind != "Dense":
            return False
    return True
