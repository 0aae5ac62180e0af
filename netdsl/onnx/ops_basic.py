"""ONNX converters for the feed-forward kinds: Dense, Convolution, pooling, normalisation, Dropout, Activation,
Rescale, Flatten, Stabilizer."""
from __future__ import annotations

import numpy as np

from .export import DOMAIN, activation, converter, feature_axis


def _flat_pads(pads) -> list:
    (t, bo), (l, r) = pads
    return [int(t), int(l), int(bo), int(r)]  # ONNX: all begins, then all ends


@converter("Dense")
def dense(b, layer, node, xs, ins, params):
    (x,), (t,) = xs, ins
    n = node.name
    W = b.param(layer, "W", params)
    act = layer.attr("activation")
    out_shape = layer.attr("out_shape")  # Dense((3, 4)): the 2-D product, then a row-major Reshape
    z = n if act is None and out_shape is None else None
    mapped = layer.attr("map_axes") or 0  # input_rank/map_rank: MatMul maps over the leading axes
    if t.seq or mapped:
        if len(t.shape) - mapped != 1:
            shape = b.const(f"{n}/flatten_shape", np.array([0, 0, -1], np.int64))
            x = b.op("Reshape", [x, shape], name=f"{n}/flatten")
        wt = b.op("Transpose", [W], name=f"{n}/W_t", perm=[1, 0])
        if layer.attr("bias"):
            y = b.op("MatMul", [x, wt], name=f"{n}/matmul")
            z = b.op("Add", [y, b.param(layer, "b", params)], z, name=n if z == n else f"{n}/bias")
        else:
            z = b.op("MatMul", [x, wt], z, name=n if z == n else f"{n}/matmul")
    else:
        if len(t.shape) != 1:
            x = b.op("Flatten", [x], name=f"{n}/flatten", axis=1)
        inputs = [x, W] + ([b.param(layer, "b", params)] if layer.attr("bias") else [])
        z = b.op("Gemm", inputs, z, name=n if z == n else f"{n}/gemm", transB=1)
    if out_shape is not None:  # 0 keeps the batch (and time) axis
        to = b.const(f"{n}/shape", np.array([0] * (2 if t.seq else 1) + list(out_shape), np.int64))
        z = b.op("Reshape", [z, to], n if act is None else None, name=n if act is None else f"{n}/reshape")
    if act is not None:
        activation(b, z, act, node.type, n, n)


def _over_time(b, n, x, op, inputs, out, **attrs):
    """A 1-D window over a sequence: ONNX's 1-D Conv/MaxPool/AveragePool take (N, C, T), so (N, T, F) is
    transposed to (N, F, T) and back (the pair the importer reads, as around BatchNormalization)."""
    xt = b.op("Transpose", [x], name=f"{n}/to_nct", perm=[0, 2, 1])
    y = b.op(op, [xt] + inputs, name=f"{n}/{op.lower()}", **attrs)
    return b.op("Transpose", [y], out, name=f"{n}/to_ntc", perm=[0, 2, 1])


def _window_1d(layer, key):
    (before, after), = layer.attr("pads")
    return {"kernel_shape": [int(layer.attr(key)[0])], "strides": [int(layer.attr("strides")[0])],
            "pads": [int(before), int(after)]}


@converter("Convolution")
def convolution(b, layer, node, xs, ins, params):
    n, act = node.name, layer.attr("activation")
    if len(layer.attr("kernel")) == 1:
        weights = [b.param(layer, "W", params)] + ([b.param(layer, "b", params)] if layer.attr("bias") else [])
        z = _over_time(b, n, xs[0], "Conv", weights, n if act is None else None, **_window_1d(layer, "kernel"))
        if act is not None:
            activation(b, z, act, node.type, n, n)
        return
    x = xs[0]
    if layer.attr("reduction_rank") == 0:  # (N, H, W) without a channel axis: the (N, 1, H, W) image
        x = b.op("Unsqueeze", [x, b.const(f"{n}/channel_axis", np.array([1], np.int64))], name=f"{n}/channel")
    inputs = [x, b.param(layer, "W", params)] + ([b.param(layer, "b", params)] if layer.attr("bias") else [])
    squeeze = layer.attr("no_filter_axis")  # num_filters left out: a Squeeze of axis 1, before the activation
    z = b.op("Conv", inputs, n if act is None and not squeeze else None,
             name=n if act is None and not squeeze else f"{n}/conv",
             kernel_shape=list(layer.attr("kernel")), strides=list(layer.attr("strides")),
             pads=_flat_pads(layer.attr("pads")))
    if squeeze:
        z = b.op("Squeeze", [z, b.const(f"{n}/filter_axis", np.array([1], np.int64))], n if act is None else None,
                 name=n if act is None else f"{n}/squeeze")
    if act is not None:
        activation(b, z, act, node.type, n, n)


@converter("MaxPooling")
def max_pooling(b, layer, node, xs, ins, params):
    # ONNX MaxPool pads with -inf, as the IR does
    if len(layer.attr("window")) == 1:
        # the pads as a Pad op of -inf in front: onnx's reference evaluator ignores a 1-D MaxPool's own pads
        n, a = node.name, _window_1d(layer, "window")
        xt = b.op("Transpose", [xs[0]], name=f"{n}/to_nct", perm=[0, 2, 1])
        if a["pads"] != [0, 0]:
            pads = b.const(f"{n}/pads", np.array([0, 0, a["pads"][0], 0, 0, a["pads"][1]], np.int64))
            xt = b.op("Pad", [xt, pads, b.const(f"{n}/neginf", np.array(-np.inf, np.float32))], name=f"{n}/pad",
                      mode="constant")
        y = b.op("MaxPool", [xt], name=f"{n}/maxpool", kernel_shape=a["kernel_shape"], strides=a["strides"])
        b.op("Transpose", [y], n, name=f"{n}/to_ntc", perm=[0, 2, 1])
        return
    b.op("MaxPool", xs, node.name, name=node.name, kernel_shape=list(layer.attr("window")),
         strides=list(layer.attr("strides")), pads=_flat_pads(layer.attr("pads")))


@converter("AveragePooling")
def average_pooling(b, layer, node, xs, ins, params):
    # the IR divides by the non-padded cells: count_include_pad=0
    if len(layer.attr("window")) == 1:
        _over_time(b, node.name, xs[0], "AveragePool", [], node.name, count_include_pad=0,
                   **_window_1d(layer, "window"))
        return
    b.op("AveragePool", xs, node.name, name=node.name, kernel_shape=list(layer.attr("window")),
         strides=list(layer.attr("strides")), pads=_flat_pads(layer.attr("pads")), count_include_pad=0)


@converter("Dropout")
def dropout(b, layer, node, xs, ins, params):
    # inference: the identity. The ratio is kept so an import gives the layer back.
    ratio = b.const(f"{layer.name}.ratio", np.array(float(layer.attr("rate")), np.float32))
    b.op("Dropout", [xs[0], ratio], node.name, name=node.name)


@converter("BatchNormalization")
def batch_norm(b, layer, node, xs, ins, params):
    (x,), (t,) = xs, ins
    n = node.name
    names = [b.param(layer, s, params) for s in ("scale", "bias", "running_mean", "running_var")]
    # ONNX's momentum weighs the old statistic; the IR's weighs the new one
    attrs = {"epsilon": float(layer.attr("epsilon")), "momentum": 1.0 - float(layer.attr("momentum"))}
    if t.seq:  # channels must be axis 1: (N, T, F) -> (N, F, T) and back
        xt = b.op("Transpose", [x], name=f"{n}/to_nct", perm=[0, 2, 1])
        y = b.op("BatchNormalization", [xt] + names, name=f"{n}/bn", **attrs)
        b.op("Transpose", [y], n, name=f"{n}/to_ntc", perm=[0, 2, 1])
    else:
        b.op("BatchNormalization", [x] + names, n, name=n, **attrs)


@converter("LayerNormalization")
def layer_norm(b, layer, node, xs, ins, params):
    (t,) = ins
    # sequences normalise each step (the last axis); other samples all their axes
    b.op("LayerNormalization", [xs[0], b.param(layer, "scale", params), b.param(layer, "bias", params)],
         node.name, name=node.name, axis=-1 if t.seq else 1, epsilon=float(layer.attr("epsilon")))


@converter("Activation")
def activation_layer(b, layer, node, xs, ins, params):
    activation(b, xs[0], layer.attr("activation"), node.type, node.name, node.name)


@converter("Rescale")
def rescale(b, layer, node, xs, ins, params):
    # always the three ops, even when one is trivial, so the importer recognises the chain
    n = node.name
    f32 = np.float32
    s = b.const(f"{layer.name}.scale", np.array(layer.attr("scale"), f32))
    m = b.const(f"{layer.name}.mean", np.array(layer.attr("mean"), f32))
    d = b.const(f"{layer.name}.std", np.array(layer.attr("std"), f32))
    y = b.op("Mul", [xs[0], s], name=f"{n}/scale")
    y = b.op("Sub", [y, m], name=f"{n}/mean")
    b.op("Div", [y, d], n, name=n)


@converter("Flatten")
def flatten(b, layer, node, xs, ins, params):
    (t,) = ins
    if t.seq:
        shape = b.const(f"{node.name}/shape", np.array([0, 0, -1], np.int64))
        b.op("Reshape", [xs[0], shape], node.name, name=node.name)
    else:
        b.op("Flatten", xs, node.name, name=node.name, axis=1)


def stabilizer_function(opset: int):
    """netdsl.Stabilizer(x, alpha, steepness) = x * Softplus(steepness * alpha) / steepness (CNTK's)."""
    from onnx import helper

    nodes = [helper.make_node("Mul", ["alpha", "steepness"], ["z"]),
             helper.make_node("Softplus", ["z"], ["sp"]),
             helper.make_node("Div", ["sp", "steepness"], ["beta"]),
             helper.make_node("Mul", ["x", "beta"], ["y"])]
    return helper.make_function(DOMAIN, "Stabilizer", ["x", "alpha", "steepness"], ["y"], nodes,
                                [helper.make_opsetid("", opset)])


@converter("Stabilizer")
def stabilizer(b, layer, node, xs, ins, params):
    if "Stabilizer" not in b.functions:
        b.functions["Stabilizer"] = stabilizer_function(b.opset)
    s = b.const(f"{layer.name}.steepness", np.array(layer.attr("steepness"), np.float32))
    b.op("Stabilizer", [xs[0], b.param(layer, "alpha", params), s], node.name, name=node.name, domain=DOMAIN)


__all__ = ["feature_axis"]


@converter("GlobalAveragePooling")
def global_average_pooling(b, layer, node, xs, ins, params):
    # over the positions, keepdims=0: (N, C, H, W) -> (N, C) as the IR's (opset 17: axes an attribute)
    b.op("ReduceMean", xs, node.name, name=node.name, axes=[2, 3], keepdims=0)


@converter("GlobalMaxPooling")
def global_max_pooling(b, layer, node, xs, ins, params):
    b.op("ReduceMax", xs, node.name, name=node.name, axes=[2, 3], keepdims=0)
