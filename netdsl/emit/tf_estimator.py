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

from .base import Target
from .legacy import (
    Legacy,
    cannot,
    common_context,
    is_image,
    rescale_terms,
    structure_diagnostics,
)
from .passes.nhwc_flatten import dense_rows, flatten_orders

ACT = {None: None, "relu": "tf.nn.relu", "sigmoid": "tf.nn.sigmoid", "tanh": "tf.nn.tanh", "softmax": "tf.nn.softmax"}


def same_pads(size, k, s):
    """TF's SAME split along one axis: (before, after)."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _padding(lg, layer, kernel):
    """('same' | 'valid', explicit NHWC pads or None)."""
    it = lg.in_type(layer)
    pads = tuple(tuple(p) for p in layer.attr("pads"))
    strides = tuple(layer.attr("strides"))
    if pads == ((0, 0), (0, 0)):
        return "valid", None
    tf_same = (same_pads(it.shape[1], kernel[0], strides[0]), same_pads(it.shape[2], kernel[1], strides[1]))
    if pads == tf_same:
        return "same", None
    return "valid", [[0, 0], list(pads[0]), list(pads[1]), [0, 0]]


def _dense(lg, layer):
    return {"units": layer.attr("units"), "act": ACT[layer.attr("activation")], "bias": bool(layer.attr("bias")),
            "params": [("W", "kernel", "dense"), ("b", "bias", "identity")] if layer.attr("bias")
            else [("W", "kernel", "dense")]}


def _conv(lg, layer):
    kernel = tuple(layer.attr("kernel"))
    padding, pads = _padding(lg, layer, kernel)
    return {"filters": layer.attr("filters"), "kernel": kernel, "strides": tuple(layer.attr("strides")),
            "padding": padding, "tf_pads": pads, "act": ACT[layer.attr("activation")],
            "bias": bool(layer.attr("bias")),
            "params": [("W", "kernel", "oihw_hwio"), ("b", "bias", "identity")] if layer.attr("bias")
            else [("W", "kernel", "oihw_hwio")]}


def _pool(lg, layer):
    window = tuple(layer.attr("window"))
    padding, pads = _padding(lg, layer, window)
    return {"window": window, "strides": tuple(layer.attr("strides")), "padding": padding, "tf_pads": pads,
            "params": []}


def _bn(lg, layer):
    # Only TF's fused kernel (4-D input) updates the moving variance with the unbiased batch variance,
    # as netdsl does; vectors and sequences go through it as (-1, 1, 1, C).
    image = len(layer.param("scale").shape) == 1 and any(
        len(lg.value_type(n.inputs[0]).shape) == 3 for n in lg.nodes_of(layer))
    return {"momentum": 1.0 - float(layer.attr("momentum")), "epsilon": float(layer.attr("epsilon")),
            "image": image, "channels": layer.param("scale").shape[0],
            "params": [("scale", "gamma", "identity"), ("bias", "beta", "identity"),
                       ("running_mean", "moving_mean", "identity"),
                       ("running_var", "moving_variance", "identity")]}


def _lstm(lg, layer):
    return {"units": layer.attr("units"), "backwards": bool(layer.attr("go_backwards")),
            "local": lg.local(layer.name, layer.name),  # the Keras layer object is a local of model_fn
            "params": [("W", "lstm_cell/kernel", "transpose"), ("H", "lstm_cell/recurrent_kernel", "transpose"),
                       ("b", "lstm_cell/bias", "identity")]}


def _embedding(lg, layer):
    return {"vocab": lg.in_type(layer).vocab, "dim": layer.attr("dim"),
            "params": [("E", "embeddings", "identity")]}


def _view(fn):
    def view(lg, layer):
        v = fn(lg, layer)
        v.update(kind=layer.kind, name=layer.name, shared=len(lg.nodes_of(layer)) > 1)
        return v
    return view


LAYERS = {kind: _view(fn) for kind, fn in {
    "Dense": _dense, "Convolution": _conv, "MaxPooling": _pool, "AveragePooling": _pool,
    "Dropout": lambda lg, l: {"rate": float(l.attr("rate")), "params": []},
    "Embedding": _embedding, "LSTM": _lstm, "BatchNormalization": _bn,
    "Activation": lambda lg, l: {"act": ACT[l.attr("activation")], "params": []},
    "Rescale": lambda lg, l: dict(rescale_terms(l), params=[]),
    "Flatten": lambda lg, l: {"params": []}, "Splice": lambda lg, l: {"params": []},
    "SelectLast": lambda lg, l: {"params": []}, "SelectFirst": lambda lg, l: {"params": []},
    "CosineDistance": lambda lg, l: {"params": []},
    # listed so that check() can say why it is refused (E802), never rendered
    "LayerNormalization": lambda lg, l: {"params": []},
}.items()}


def check(lg: Legacy) -> list:
    diags = structure_diagnostics(lg, "tf-estimator")
    for layer in lg.graph.layers:
        if layer.kind == "LayerNormalization":
            diags.append(cannot(lg, layer, "tf-estimator", "tf.compat.v1.layers has no layer normalization "
                                "and this target does not write one yet"))
    _, conflicts = dense_rows(lg)
    for layer in conflicts:
        diags.append(cannot(lg, layer, "tf-estimator", "it reads flattened images in one application and "
                            "other vectors in another, so no single row order of its NHWC weights fits both"))
    return diags


def context(lg: Legacy, views: dict) -> dict:
    ctx = common_context(lg)
    rows, _ = dense_rows(lg)
    orders = flatten_orders(lg)
    params = []
    for layer in lg.graph.layers:
        for short, tf_short, conv in views[layer.name]["params"]:
            p = layer.param(short)
            chw = rows.get(layer.name) if conv == "dense" else None
            params.append({"name": p.name, "tf": f"{layer.name}/{tf_short}", "conv": "dense_nhwc" if chw else conv,
                           "chw": chw, "shape": tuple(p.shape)})
    statements, seen_calls = [], set()
    for node in lg.graph.nodes:
        layer = lg.layer(node.layer)
        v = views[layer.name]
        entity = lg.top[layer.name]
        key = node.call or node.name
        comment = None
        if entity != layer.name and key not in seen_calls:
            g = lg.groups[entity]
            comment = f"{entity}: {g.kind}" + (f" of {g.repeat}" if g.kind == "LayerStack" else "")
        seen_calls.add(key)
        it = lg.value_type(node.inputs[0])
        statements.append({
            "out": lg.var(node.name), "ins": [lg.var(i) for i in node.inputs], "v": v, "comment": comment,
            "in_image": is_image(it), "nhwc_flat": node.name in orders,
        })
    ctx.update(
        statements=statements,
        params=params,
        lstms=[v for v in views.values() if v["kind"] == "LSTM"],
        id_inputs=[i["name"] for i in ctx["inputs"] if i["ids"]],
        image_inputs=[i.name for i in lg.graph.inputs if is_image(i.type)],
        uses={kind: any(v["kind"] == kind for v in views.values()) for kind in LAYERS},
        avg_pads=any(v["kind"] == "AveragePooling" and v["tf_pads"] for v in views.values()),
    )
    return ctx


TEMPLATE = "tf_estimator/module.py.j2"
TARGET = Target(name="tf-estimator", template=TEMPLATE, layers=LAYERS, context=context, check=check,
                prepare=lambda graph: Legacy(graph, TEMPLATE, ("model_fn",)))
