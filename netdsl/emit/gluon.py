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

from .. import ir
from .base import Target
from .legacy import (
    Legacy,
    block_tree,
    calls,
    cannot,
    common_context,
    prod,
    rescale_terms,
    structure_diagnostics,
)

# a HybridBlock's own attributes (mxnet 1.9): a child block must not take one of these names
BLOCK_ATTRS = frozenset("""
    apply cast collect_params export forward hybrid_forward hybridize infer_shape infer_type initialize load
    load_parameters load_params name name_scope optimize_for params prefix register_child register_forward_hook
    register_forward_pre_hook register_op_hook save save_parameters save_params summary
""".split())

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


def _dense(lg, layer):
    it, ot = lg.in_type(layer), lg.out_type(layer)
    flat = not it.seq
    in_units = prod(it.shape) if flat else it.shape[-1]
    return dict(_act(layer, ot), units=layer.attr("units"), in_units=in_units, flatten=flat,
                bias=bool(layer.attr("bias")),
                params=[("W", "weight"), ("b", "bias")] if layer.attr("bias") else [("W", "weight")])


def _conv(lg, layer):
    it, ot = lg.in_type(layer), lg.out_type(layer)
    padding, pad_width = _pads(layer.attr("pads"))
    return dict(_act(layer, ot), filters=layer.attr("filters"), kernel=tuple(layer.attr("kernel")),
                strides=tuple(layer.attr("strides")), padding=padding, pad_width=pad_width,
                in_channels=it.shape[0], bias=bool(layer.attr("bias")),
                params=[("W", "weight"), ("b", "bias")] if layer.attr("bias") else [("W", "weight")])


def _pool(lg, layer):
    padding, pad_width = _pads(layer.attr("pads"))
    return dict(window=tuple(layer.attr("window")), strides=tuple(layer.attr("strides")),
                padding=padding, pad_width=pad_width, params=[])


def _bn(lg, layer):
    it = lg.in_type(layer)
    axis = 1 if not it.seq else 2
    return dict(axis=axis, channels=it.shape[0] if not it.seq else it.shape[-1], seq=it.seq,
                per_sample=prod(it.shape[1:]) if not it.seq else 1,
                momentum=1.0 - float(layer.attr("momentum")), epsilon=float(layer.attr("epsilon")),
                params=[("scale", "gamma"), ("bias", "beta"), ("running_mean", "running_mean"),
                        ("running_var", "running_var")])


def _ln(lg, layer):
    it = lg.in_type(layer)
    return dict(channels=it.shape[-1], epsilon=float(layer.attr("epsilon")),
                params=[("scale", "gamma"), ("bias", "beta")])


def _lstm(lg, layer):
    it = lg.in_type(layer)
    return dict(units=layer.attr("units"), input_size=it.shape[-1], backwards=bool(layer.attr("go_backwards")),
                params=[("W", "l0_i2h_weight"), ("H", "l0_h2h_weight"), ("b", "l0_i2h_bias", "l0_h2h_bias")])


def _embedding(lg, layer):
    it = lg.in_type(layer)
    return dict(vocab=it.vocab, dim=layer.attr("dim"), params=[("E", "weight")])


def _activation(lg, layer):
    return dict(_act(layer, lg.out_type(layer)), params=[])


def _rescale(lg, layer):
    return dict(rescale_terms(layer), params=[])


def _splice(lg, layer):
    t = lg.out_type(layer)
    return dict(axis=1 if (len(t.shape) == 3 and not t.seq) else -1, params=[])


def _plain(lg, layer):
    return dict(params=[])


def _view(fn):
    def view(lg, layer):
        v = fn(lg, layer)
        v.update(kind=layer.kind, name=layer.name, prefix=layer.name + "_")
        return v
    return view


LAYERS = {kind: _view(fn) for kind, fn in {
    "Dense": _dense, "Convolution": _conv, "MaxPooling": _pool, "AveragePooling": _pool,
    "Dropout": lambda lg, l: dict(rate=float(l.attr("rate")), params=[]),
    "Embedding": _embedding, "LSTM": _lstm, "BatchNormalization": _bn, "LayerNormalization": _ln,
    "Activation": _activation, "Rescale": _rescale, "Flatten": _plain, "Splice": _splice,
    "SelectLast": _plain, "SelectFirst": _plain, "CosineDistance": _plain,
}.items()}


def check(lg: Legacy) -> list:
    diags = structure_diagnostics(lg, "gluon")
    for layer in lg.graph.layers:
        if layer.kind == "LayerNormalization" and len(lg.in_type(layer).shape) > 1:
            diags.append(cannot(lg, layer, "gluon", "LayerNormalization over an image (gluon's "
                                       "LayerNorm normalises one axis; netdsl normalises C, H and W together)"))
    return diags


def context(lg: Legacy, views: dict) -> dict:
    ctx = common_context(lg)
    params = []
    for layer in lg.graph.layers:
        for entry in views[layer.name]["params"]:
            short, names = entry[0], entry[1:]
            p = layer.param(short)
            params.append({"name": p.name, "gluon": [layer.name + "_" + n for n in names],
                           "shape": tuple(p.shape), "trainable": p.trainable})
    ctx.update(
        tree=block_tree(lg, views),
        calls=calls(lg),
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


TEMPLATE = "gluon/module.py.j2"
TARGET = Target(name="gluon", template=TEMPLATE, layers=LAYERS, context=context, check=check,
                prepare=lambda graph: Legacy(graph, TEMPLATE, ("Net",), BLOCK_ATTRS))
