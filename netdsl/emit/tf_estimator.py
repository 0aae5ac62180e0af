"""--target tf-estimator: a TF1-style model_fn for tf.estimator (TensorFlow 2.15, tf.compat.v1).

The model_fn is written node by node with tf.compat.v1.layers (conv2d,
max_pooling2d, average_pooling2d, dense, dropout with training=mode == TRAIN,
batch_normalization) and tf.keras.layers.LSTM where tf.compat.v1.layers has
no recurrent layer. Images run NHWC (TF's CPU kernels): canonical NCHW inputs
are transposed on entry and image outputs on exit; a Dense that reads a
flattened NHWC image gets its canonical weight rows permuted on load and
export. A layer applied twice reuses its variables (reuse=AUTO_REUSE).

Padding: "same" where the layer's pads equal TF's SAME split (TF puts the odd
pixel at the end, netdsl puts (k-1)//2 first: they differ at stride 2),
"valid" where there are none, and an explicit tf.pad otherwise (-inf for max
pooling, a sum/count average for average pooling so padding is never
counted).

Canonical weights enter through a checkpoint: load_netdsl_weights builds the
TRAIN graph, assigns the converted arrays and saves model.ckpt-0 into the
Estimator's model_dir (optimizer slots zero, global_step 0), which every
later train/evaluate/predict restores; export_netdsl_weights reads the
latest checkpoint back.
"""
from __future__ import annotations

from .. import ir
from .base import Target
from .gluon import (cannot, common_context, in_type, is_image, nodes_of, rescale_terms, structure_diagnostics,
                    top_entity, var)

ACT = {None: None, "relu": "tf.nn.relu", "sigmoid": "tf.nn.sigmoid", "tanh": "tf.nn.tanh", "softmax": "tf.nn.softmax"}


def same_pads(size, k, s):
    """TF's SAME split along one axis: (before, after)."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _padding(graph, layer, kernel):
    """('same' | 'valid', explicit NHWC pads or None)."""
    it = in_type(graph, layer)
    pads = tuple(tuple(p) for p in layer.attr("pads"))
    strides = tuple(layer.attr("strides"))
    if pads == ((0, 0), (0, 0)):
        return "valid", None
    tf_same = (same_pads(it.shape[1], kernel[0], strides[0]), same_pads(it.shape[2], kernel[1], strides[1]))
    if pads == tf_same:
        return "same", None
    return "valid", [[0, 0], list(pads[0]), list(pads[1]), [0, 0]]


def _dense(graph, layer):
    return {"units": layer.attr("units"), "act": ACT[layer.attr("activation")], "bias": bool(layer.attr("bias")),
            "params": [("W", "kernel", "dense"), ("b", "bias", "identity")] if layer.attr("bias")
            else [("W", "kernel", "dense")]}


def _conv(graph, layer):
    kernel = tuple(layer.attr("kernel"))
    padding, pads = _padding(graph, layer, kernel)
    return {"filters": layer.attr("filters"), "kernel": kernel, "strides": tuple(layer.attr("strides")),
            "padding": padding, "tf_pads": pads, "act": ACT[layer.attr("activation")],
            "bias": bool(layer.attr("bias")),
            "params": [("W", "kernel", "oihw_hwio"), ("b", "bias", "identity")] if layer.attr("bias")
            else [("W", "kernel", "oihw_hwio")]}


def _pool(graph, layer):
    window = tuple(layer.attr("window"))
    padding, pads = _padding(graph, layer, window)
    return {"window": window, "strides": tuple(layer.attr("strides")), "padding": padding, "tf_pads": pads,
            "params": []}


def _bn(graph, layer):
    # Only TF's fused kernel (4-D input) updates the moving variance with the unbiased batch variance,
    # as netdsl does; vectors and sequences go through it as (-1, 1, 1, C).
    image = len(layer.param("scale").shape) == 1 and any(
        len(graph.value_type(n.inputs[0]).shape) == 3 for n in graph.nodes if n.layer == layer.name)
    return {"momentum": 1.0 - float(layer.attr("momentum")), "epsilon": float(layer.attr("epsilon")),
            "image": image, "channels": layer.param("scale").shape[0],
            "params": [("scale", "gamma", "identity"), ("bias", "beta", "identity"),
                       ("running_mean", "moving_mean", "identity"),
                       ("running_var", "moving_variance", "identity")]}


def _lstm(graph, layer):
    return {"units": layer.attr("units"), "backwards": bool(layer.attr("go_backwards")),
            "params": [("W", "lstm_cell/kernel", "transpose"), ("H", "lstm_cell/recurrent_kernel", "transpose"),
                       ("b", "lstm_cell/bias", "identity")]}


def _embedding(graph, layer):
    return {"vocab": in_type(graph, layer).vocab, "dim": layer.attr("dim"),
            "params": [("E", "embeddings", "identity")]}


def _view(fn):
    def view(graph, layer):
        v = fn(graph, layer)
        v.update(kind=layer.kind, name=layer.name, shared=len(nodes_of(graph, layer)) > 1)
        return v
    return view


LAYERS = {kind: _view(fn) for kind, fn in {
    "Dense": _dense, "Convolution": _conv, "MaxPooling": _pool, "AveragePooling": _pool,
    "Dropout": lambda g, l: {"rate": float(l.attr("rate")), "params": []},
    "Embedding": _embedding, "LSTM": _lstm, "BatchNormalization": _bn,
    "Activation": lambda g, l: {"act": ACT[l.attr("activation")], "params": []},
    "Rescale": lambda g, l: dict(rescale_terms(l), params=[]),
    "Flatten": lambda g, l: {"params": []}, "Splice": lambda g, l: {"params": []},
    "SelectLast": lambda g, l: {"params": []}, "SelectFirst": lambda g, l: {"params": []},
    "CosineDistance": lambda g, l: {"params": []},
    # listed so that check() can say why it is refused (E802), never rendered
    "LayerNormalization": lambda g, l: {"params": []},
}.items()}


def _flatten_orders(graph: ir.Graph) -> dict:
    """Node name -> (C, H, W) for every value that is an NHWC image flattened in NHWC order.

    A Flatten keeps NHWC order only when every reader is a Dense (whose rows get permuted);
    otherwise it transposes to NCHW first and its output is canonical."""
    readers = {}
    for node in graph.nodes:
        for v in node.inputs:
            readers.setdefault(v, []).append(node)
    out = {}
    for node in graph.nodes:
        layer = graph.layer(node.layer)
        if layer.kind == "Flatten":
            t = graph.value_type(node.inputs[0])
            if is_image(t) and readers.get(node.name) and \
                    all(graph.layer(r.layer).kind == "Dense" for r in readers[node.name]):
                out[node.name] = tuple(t.shape)
    return out


def _dense_rows(graph: ir.Graph) -> dict:
    """Dense layer -> (C, H, W) when it reads NHWC-ordered images (its rows are permuted), else None;
    plus the layers whose applications disagree."""
    orders = _flatten_orders(graph)
    rows, conflicts = {}, []
    for node in graph.nodes:
        layer = graph.layer(node.layer)
        if layer.kind != "Dense":
            continue
        t = graph.value_type(node.inputs[0])
        chw = tuple(t.shape) if is_image(t) else orders.get(node.inputs[0])
        if layer.name in rows and rows[layer.name] != chw:
            conflicts.append(layer)
        rows[layer.name] = chw
    return rows, conflicts


def check(graph: ir.Graph) -> list:
    diags = structure_diagnostics(graph, "tf-estimator")
    for layer in graph.layers:
        if layer.kind == "LayerNormalization":
            diags.append(cannot(graph, layer, "tf-estimator", "tf.compat.v1.layers has no layer normalization "
                                "and this target does not write one yet"))
    _, conflicts = _dense_rows(graph)
    for layer in conflicts:
        diags.append(cannot(graph, layer, "tf-estimator", "it reads flattened images in one application and "
                            "other vectors in another, so no single row order of its NHWC weights fits both"))
    return diags


def context(graph: ir.Graph, views: dict) -> dict:
    ctx = common_context(graph)
    rows, _ = _dense_rows(graph)
    orders = _flatten_orders(graph)
    params = []
    for layer in graph.layers:
        for short, tf_short, conv in views[layer.name]["params"]:
            p = layer.param(short)
            chw = rows.get(layer.name) if conv == "dense" else None
            params.append({"name": p.name, "tf": f"{layer.name}/{tf_short}", "conv": "dense_nhwc" if chw else conv,
                           "chw": chw, "shape": tuple(p.shape)})
    statements, seen_calls = [], set()
    for node in graph.nodes:
        layer = graph.layer(node.layer)
        v = views[layer.name]
        entity = top_entity(graph, layer.name)
        key = node.call or node.name
        comment = None
        if entity != layer.name and key not in seen_calls:
            g = next(g for g in graph.groups if g.name == entity)
            comment = f"{entity}: {g.kind}" + (f" of {g.repeat}" if g.kind == "LayerStack" else "")
        seen_calls.add(key)
        it = graph.value_type(node.inputs[0])
        statements.append({
            "out": var(node.name), "ins": [var(i) for i in node.inputs], "v": v, "comment": comment,
            "in_image": is_image(it), "nhwc_flat": node.name in orders,
        })
    ctx.update(
        statements=statements,
        params=params,
        lstms=[v for v in views.values() if v["kind"] == "LSTM"],
        id_inputs=[i["name"] for i in ctx["inputs"] if i["ids"]],
        image_inputs=[i.name for i in graph.inputs if is_image(i.type)],
        uses={kind: any(v["kind"] == kind for v in views.values()) for kind in LAYERS},
        avg_pads=any(v["kind"] == "AveragePooling" and v["tf_pads"] for v in views.values()),
    )
    return ctx


TARGET = Target(name="tf-estimator", template="tf_estimator/module.py.j2", layers=LAYERS, context=context,
                check=check)
