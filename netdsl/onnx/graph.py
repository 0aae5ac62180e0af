"""`netdsl graph`: a picture of the model with graphviz.

Every application of a layer is a node; the edges between them carry the value's shape. A layer
applied more than once (shared weights) is drawn once, as a box of its own, and each of its
applications points to it with a dashed edge. The composites the user wrote (Sequential,
LayerStack) are clusters, nested as written. For ONNX files, use netron (https://netron.app).
"""
from __future__ import annotations

import itertools
from collections import Counter

from .. import ir


def _fmt(v) -> str:
    if isinstance(v, tuple):
        return "x".join(_fmt(x) for x in v) if all(not isinstance(x, tuple) for x in v) else str(v)
    return str(v)


def describe(layer: ir.Layer) -> str:
    a = dict(layer.attrs)
    k = layer.kind
    if k == "Dense":
        text = f"Dense {_fmt(a['out_shape']) if a.get('out_shape') else a['units']}"
    elif k == "Convolution":
        text = f"Conv {_fmt(a['kernel'])} x{a['filters']}"
    elif k in ("MaxPooling", "AveragePooling"):
        text = f"{'Max' if k == 'MaxPooling' else 'Avg'}Pool {_fmt(a['window'])}"
    elif k == "LSTM":
        text = f"LSTM {a['units']}" + (" backwards" if a.get("go_backwards") else "")
    elif k == "GRU":
        text = f"GRU {a['units']}" + (" backwards" if a.get("go_backwards") else "")
    elif k == "Embedding":
        text = f"Embedding {a['dim']}"
    elif k == "Dropout":
        text = f"Dropout {a['rate']:g}"
    elif k == "Activation":
        text = a["activation"]
    elif k == "Rescale":
        text = f"Rescale x{a['scale']:.4g}"
    else:
        text = k
    if k in ("Convolution", "MaxPooling", "AveragePooling"):
        if tuple(a["strides"]) != (1, 1):
            text += f" /{_fmt(a['strides'])}"
        if a.get("pads") not in (None, ((0, 0), (0, 0))):
            text += f" pad {a['pads']}"
    if a.get("activation") and k != "Activation":
        text += f" {a['activation']}"
    return text


def _quote_id(prefix: str, name: str) -> str:
    return f"{prefix}__{name}"  # no colon: graphviz reads node:port


def build(graph: ir.Graph):
    import graphviz

    g = graphviz.Digraph(graph.name, graph_attr={"rankdir": "TB", "fontname": "Helvetica", "label": graph.name,
                                                  "labelloc": "t"},
                         node_attr={"fontname": "Helvetica", "fontsize": "11"},
                         edge_attr={"fontname": "Helvetica", "fontsize": "9"})
    layers = {l.name: l for l in graph.layers}
    uses = Counter(n.layer for n in graph.nodes)
    shared = {name for name, k in uses.items() if k > 1}
    outputs = set(graph.outputs)
    producer = {i.name: _quote_id("in", i.name) for i in graph.inputs}

    # what goes into each cluster: application nodes of single-use layers, boxes of shared ones
    placed: dict = {}
    stmts: dict = {}

    def put(group, fn):
        placed.setdefault(group, []).append(fn)

    for i in graph.inputs:
        g.node(_quote_id("in", i.name), f"{i.name}\nInput {i.type.describe()}", shape="box", style="rounded,filled",
               fillcolor="#dbeafe")
    for name in dict.fromkeys(n.layer for n in graph.nodes if n.layer in shared):
        layer = layers[name]
        n_params = sum(p.size for p in layer.params)
        label = f"{name}\n{describe(layer)}\nshared: {uses[name]} uses, {n_params:,} params"
        box = _quote_id("layer", name)
        put(layer.group, lambda c, i=box, lbl=label: c.node(
            i, lbl, shape="box3d", style="filled", fillcolor="#fde68a"))
    for node in graph.nodes:
        layer = layers[node.layer]
        nid = _quote_id("app", node.name)
        attrs = {"shape": "box", "style": "filled", "fillcolor": "#f3f4f6"}
        if node.name in outputs:
            attrs["peripheries"] = "2"
        if node.layer in shared:
            label = f"{node.name} = {node.layer}(...)"
            attrs.update(shape="ellipse", fillcolor="#fef3c7")
            stmts.setdefault("top", []).append(lambda c, i=nid, lbl=label, a=attrs: c.node(i, lbl, **a))
        else:
            title = node.name if node.name == layer.name else f"{node.name} ({layer.name})"
            label = f"{title}\n{describe(layer)}"
            put(layer.group, lambda c, i=nid, lbl=label, a=attrs: c.node(i, lbl, **a))
        producer[node.name] = nid

    groups = {gr.name: gr for gr in graph.groups}
    children: dict = {}
    for gr in graph.groups:
        children.setdefault(gr.parent, []).append(gr.name)

    def emit(container, group_name):
        for fn in placed.get(group_name, []):
            fn(container)
        for child in children.get(group_name, []):
            gr = groups[child]
            with container.subgraph(name=f"cluster_{child}") as c:
                kind = gr.kind + (f" x{gr.repeat}" if gr.repeat else "")
                c.attr(label=f"{child} ({kind})", style="rounded,dashed", color="#6b7280", fontname="Helvetica")
                emit(c, child)

    emit(g, None)
    for fn in stmts.get("top", []):
        fn(g)
    for node in graph.nodes:
        nid = producer[node.name]
        for inp in node.inputs:
            g.edge(producer[inp], nid, label=graph.value_type(inp).describe())
        if node.layer in shared:
            g.edge(nid, _quote_id("layer", node.layer), style="dashed", arrowhead="odot", color="#b45309",
                   constraint="false")
    # stack the shared layers in the order of their first use, beside the applications
    order = [n.layer for n in graph.nodes if n.layer in shared]
    firsts = list(dict.fromkeys(order))
    for a, b in itertools.pairwise(firsts):
        g.edge(_quote_id("layer", a), _quote_id("layer", b), style="invis")
    for o in graph.outputs:
        g.node(_quote_id("out", o), "output", shape="plaintext")
        g.edge(producer[o], _quote_id("out", o), label=graph.value_type(o).describe())
    return g


def render(graph: ir.Graph, fmt: str):
    """The picture as .dot text, or .svg/.png bytes (via graphviz's dot)."""
    g = build(graph)
    if fmt == "dot":
        return g.source
    return g.pipe(format=fmt)
