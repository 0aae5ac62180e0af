"""--target gluon: an MXNet Gluon HybridBlock (mxnet 1.9) from the IR.

The generated `Net` is a HybridBlock whose children are the user's groups as
nested HybridSequentials (a LayerStack is a HybridSequential of its repeats)
and the layers outside any group; `hybrid_forward` applies them in node order,
so a group applied twice (DSSM) shares one set of parameters.

Layouts are netdsl's canonical ones (NCHW, NTC with layout='NTC', OIHW, Dense
(out, in), LSTM gates i, f, g, o), so weights load unchanged except for the
LSTM's second bias: the canonical `b` goes to `i2h_bias`, `h2h_bias` is zero
and frozen (grad_req='null'), which keeps the one-bias LSTM of netdsl exact
in training too. Asymmetric pads become an explicit F.pad (-inf for max
pooling); average pooling uses count_include_pad=False.
"""
from __future__ import annotations

import keyword

from .. import ir
from ..errors import Diagnostic
from .base import Target
from .common import dataset_plan, training_dict

# ---------------------------------------------------------------------------
# Structure helpers shared by the three legacy targets (gluon, tf-estimator,
# cntk). They read the IR only; nothing here knows a framework.

RESERVED = frozenset({"F", "C", "tf", "np", "nd", "mx", "nn", "rnn", "gluon", "autograd", "self", "x", "xs",
                      "mode", "params", "features", "labels", "training", "model", "inputs", "outputs",
                      "argv", "args", "os", "sys", "math", "time", "gzip", "struct", "argparse", "tempfile",
                      "shutil", "json", "i", "net"})


def var(name: str) -> str:
    """A Python variable for an IR value name that cannot shadow the generated code's own names."""
    return name + "_" if (keyword.iskeyword(name) or name in RESERVED) else name


def prod(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def nodes_of(graph: ir.Graph, layer: ir.Layer) -> list:
    return [n for n in graph.nodes if n.layer == layer.name]


def in_type(graph: ir.Graph, layer: ir.Layer) -> ir.TensorType:
    node = nodes_of(graph, layer)[0]
    return graph.value_type(node.inputs[0])


def in_types(graph: ir.Graph, layer: ir.Layer) -> list:
    node = nodes_of(graph, layer)[0]
    return [graph.value_type(v) for v in node.inputs]


def out_type(graph: ir.Graph, layer: ir.Layer) -> ir.TensorType:
    return nodes_of(graph, layer)[0].type


def is_image(t: ir.TensorType) -> bool:
    return len(t.shape) == 3 and not t.seq


def rescale_terms(layer: ir.Layer) -> dict:
    scale, mean, std = float(layer.attr("scale", 1.0)), float(layer.attr("mean", 0.0)), float(layer.attr("std", 1.0))
    return {"scale": scale, "mean": mean, "std": std,
            "has_scale": scale != 1.0, "has_mean": mean != 0.0, "has_std": std != 1.0}


def cannot(graph: ir.Graph, layer: ir.Layer, target: str, why: str) -> Diagnostic:
    return Diagnostic("E802", f"target '{target}' cannot express layer '{layer.name}' ({layer.kind}): {why}",
                      layer.span or graph.span)


def _groups(graph):
    return {g.name: g for g in graph.groups}


def top_entity(graph: ir.Graph, layer_name: str) -> str:
    """The outermost group a layer was built in, or the layer itself."""
    groups = _groups(graph)
    g = graph.layer(layer_name).group
    if g is None:
        return layer_name
    while groups[g].parent is not None:
        g = groups[g].parent
    return g


def flat_members(graph: ir.Graph, name: str) -> list:
    groups = _groups(graph)
    if name not in groups:
        return [name]
    out = []
    for m in groups[name].members:
        out += flat_members(graph, m)
    return out


def _call_nodes(graph: ir.Graph) -> list:
    order, by_key = [], {}
    for node in graph.nodes:
        key = node.call or ("node:" + node.name)
        if key not in by_key:
            by_key[key] = []
            order.append(key)
        by_key[key].append(node)
    return [by_key[k] for k in order]


def _call_problem(graph: ir.Graph, nodes: list):
    entity = top_entity(graph, nodes[0].layer)
    if any(top_entity(graph, n.layer) != entity for n in nodes):
        return entity, "one application mixes layers of different groups"
    if [n.layer for n in nodes] != flat_members(graph, entity):
        return entity, "it is applied on its own, apart from the group it was built in"
    for prev, node in zip(nodes, nodes[1:]):
        if tuple(node.inputs) != (prev.name,):
            return entity, "its group is not a plain chain"
    return entity, None


def calls(graph: ir.Graph) -> list:
    """The applications of top-level groups/layers in node order: entity(inputs) -> output."""
    out = []
    for nodes in _call_nodes(graph):
        entity, problem = _call_problem(graph, nodes)
        assert problem is None, problem
        out.append({"entity": entity, "inputs": [var(v) for v in nodes[0].inputs],
                    "output": var(nodes[-1].name), "nodes": [n.name for n in nodes]})
    return out


def structure_diagnostics(graph: ir.Graph, target: str) -> list:
    diags = []
    for nodes in _call_nodes(graph):
        _, problem = _call_problem(graph, nodes)
        if problem:
            layer = graph.layer(nodes[0].layer)
            diags.append(cannot(graph, layer, target, problem))
    return diags


def block_tree(graph: ir.Graph, views: dict) -> list:
    """Top-level entities in order of first use: {'type': 'layer', 'view'} or {'type': 'group', ...}."""
    groups = _groups(graph)

    def build(name):
        if name in groups:
            g = groups[name]
            return {"type": "group", "name": name, "kind": g.kind, "repeat": g.repeat,
                    "members": [build(m) for m in g.members]}
        return {"type": "layer", "name": name, "view": views[name]}

    seen, out = set(), []
    for c in calls(graph):
        if c["entity"] not in seen:
            seen.add(c["entity"])
            out.append(build(c["entity"]))
    return out


def common_context(graph: ir.Graph) -> dict:
    """What every legacy template needs besides the layers: names, shapes, training, MNIST fit."""
    inputs = [{"name": i.name, "var": var(i.name), "shape": i.type.batch_shape(None), "ids": i.type.vocab is not None,
               "vocab": i.type.vocab, "seq": i.type.seq, "sample": tuple(i.type.shape), "length": i.type.length}
              for i in graph.inputs]
    outputs = []
    for name in graph.outputs:
        t = graph.value_type(name)
        outputs.append({"name": name, "var": var(name), "shape": t.batch_shape(None), "seq": t.seq,
                        "sample": tuple(t.shape), "image": is_image(t)})
    training = training_dict(graph)
    plan = dataset_plan(graph)  # shared with the PyTorch/Keras targets: how (or why not) main() reads MNIST
    mnist = tuple(plan["reshape"][1:]) if plan["ok"] else None
    return {"model_name": graph.name, "inputs": inputs, "outputs": outputs, "training": training,
            "input_shapes": {i["name"]: i["shape"] for i in inputs},
            "output_shapes": {o["name"]: o["shape"] for o in outputs},
            "loss": training["loss"], "optimizer": training["optimizer"],
            "mnist_shape": mnist, "main_reason": plan["reason"], "trainable_total": sum(p.size for p in graph.params() if p.trainable)}


# ---------------------------------------------------------------------------
# Gluon

ACT = {None: None, "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "softmax": None}


def _softmax_axis(t: ir.TensorType) -> int:
    return 1 if (len(t.shape) == 3 and not t.seq) else -1


def _act(layer: ir.Layer, out_t: ir.TensorType) -> dict:
    a = layer.attr("activation")
    return {"act": ACT[a], "softmax_axis": _softmax_axis(out_t) if a == "softmax" else None}


def _pads(pads):
    """(symmetric padding, or None) and the F.pad width for asymmetric pads (or None)."""
    (t, b), (l, r) = pads
    if t == b and l == r:
        return (t, l), None
    return (0, 0), (0, 0, 0, 0, t, b, l, r)


def _dense(graph, layer):
    it, ot = in_type(graph, layer), out_type(graph, layer)
    flat = not it.seq
    in_units = prod(it.shape) if flat else it.shape[-1]
    return dict(_act(layer, ot), units=layer.attr("units"), in_units=in_units, flatten=flat,
                bias=bool(layer.attr("bias")),
                params=[("W", "weight"), ("b", "bias")] if layer.attr("bias") else [("W", "weight")])


def _conv(graph, layer):
    it, ot = in_type(graph, layer), out_type(graph, layer)
    padding, pad_width = _pads(layer.attr("pads"))
    return dict(_act(layer, ot), filters=layer.attr("filters"), kernel=tuple(layer.attr("kernel")),
                strides=tuple(layer.attr("strides")), padding=padding, pad_width=pad_width,
                in_channels=it.shape[0], bias=bool(layer.attr("bias")),
                params=[("W", "weight"), ("b", "bias")] if layer.attr("bias") else [("W", "weight")])


def _pool(graph, layer):
    padding, pad_width = _pads(layer.attr("pads"))
    return dict(window=tuple(layer.attr("window")), strides=tuple(layer.attr("strides")),
                padding=padding, pad_width=pad_width, params=[])


def _bn(graph, layer):
    it = in_type(graph, layer)
    axis = 1 if not it.seq else 2
    return dict(axis=axis, channels=it.shape[0] if not it.seq else it.shape[-1], seq=it.seq,
                per_sample=prod(it.shape[1:]) if not it.seq else 1,
                momentum=1.0 - float(layer.attr("momentum")), epsilon=float(layer.attr("epsilon")),
                params=[("scale", "gamma"), ("bias", "beta"), ("running_mean", "running_mean"),
                        ("running_var", "running_var")])


def _ln(graph, layer):
    it = in_type(graph, layer)
    return dict(channels=it.shape[-1], epsilon=float(layer.attr("epsilon")),
                params=[("scale", "gamma"), ("bias", "beta")])


def _lstm(graph, layer):
    it = in_type(graph, layer)
    return dict(units=layer.attr("units"), input_size=it.shape[-1], backwards=bool(layer.attr("go_backwards")),
                params=[("W", "l0_i2h_weight"), ("H", "l0_h2h_weight"), ("b", "l0_i2h_bias", "l0_h2h_bias")])


def _embedding(graph, layer):
    it = in_type(graph, layer)
    return dict(vocab=it.vocab, dim=layer.attr("dim"), params=[("E", "weight")])


def _activation(graph, layer):
    return dict(_act(layer, out_type(graph, layer)), params=[])


def _rescale(graph, layer):
    return dict(rescale_terms(layer), params=[])


def _splice(graph, layer):
    t = out_type(graph, layer)
    return dict(axis=1 if (len(t.shape) == 3 and not t.seq) else -1, params=[])


def _plain(graph, layer):
    return dict(params=[])


def _view(fn):
    def view(graph, layer):
        v = fn(graph, layer)
        v.update(kind=layer.kind, name=layer.name, prefix=layer.name + "_")
        return v
    return view


LAYERS = {kind: _view(fn) for kind, fn in {
    "Dense": _dense, "Convolution": _conv, "MaxPooling": _pool, "AveragePooling": _pool,
    "Dropout": lambda g, l: dict(rate=float(l.attr("rate")), params=[]),
    "Embedding": _embedding, "LSTM": _lstm, "BatchNormalization": _bn, "LayerNormalization": _ln,
    "Activation": _activation, "Rescale": _rescale, "Flatten": _plain, "Splice": _splice,
    "SelectLast": _plain, "SelectFirst": _plain, "CosineDistance": _plain,
}.items()}


def check(graph: ir.Graph) -> list:
    diags = structure_diagnostics(graph, "gluon")
    for layer in graph.layers:
        if layer.kind == "LayerNormalization" and len(in_type(graph, layer).shape) > 1:
            diags.append(cannot(graph, layer, "gluon", "LayerNormalization over an image (gluon's "
                                       "LayerNorm normalises one axis; netdsl normalises C, H and W together)"))
    return diags


def context(graph: ir.Graph, views: dict) -> dict:
    ctx = common_context(graph)
    params = []
    for layer in graph.layers:
        for entry in views[layer.name]["params"]:
            short, names = entry[0], entry[1:]
            p = layer.param(short)
            params.append({"name": p.name, "gluon": [layer.name + "_" + n for n in names],
                           "shape": tuple(p.shape), "trainable": p.trainable})
    ctx.update(
        tree=block_tree(graph, views),
        calls=calls(graph),
        params=params,
        frozen=[n for p in params for n in p["gluon"][1:]],
        uses={kind: any(v["kind"] == kind for v in views.values()) for kind in LAYERS},
        backwards=any(v["kind"] == "LSTM" and v["backwards"] for v in views.values()),
        pads=any(v.get("pad_width") for v in views.values()),
        bn_vars=[{"name": v["prefix"] + "running_var", "per_sample": v["per_sample"], "seq": v["seq"],
                  "momentum": v["momentum"]} for v in views.values() if v["kind"] == "BatchNormalization"],
        seq_input=next((k for k, i in enumerate(ctx["inputs"]) if i["seq"]), None),
    )
    return ctx


TARGET = Target(name="gluon", template="gluon/module.py.j2", layers=LAYERS, context=context, check=check)
