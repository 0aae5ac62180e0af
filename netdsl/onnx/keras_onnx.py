"""Keras 3 models (Sequential or functional) as ONNX in netdsl's canonical layout, for importer.py.

Converted from each layer's config and weights, not through tf2onnx. Keras is channels-last;
the ONNX written here is NCHW, so the imported .net takes NCHW images (transpose a Keras batch
with x.transpose(0, 3, 1, 2)). Two places need more than a transpose of the kernel:
- Flatten of an image flattens (H, W, C) in Keras but (C, H, W) in the IR: the Dense that reads it
  gets its kernel rows permuted (through Dropout/Activation in between); anything else reading a
  flattened image is refused.
- padding='same' is TF's rule (the smaller half first), written as explicit pads.
Keras LSTM gates are i, f, c, o: the IR's order already. Keras GRU gates are z, r, h: ONNX's order.
"""
from __future__ import annotations

import numpy as np

from .export import LAYER_DOC, Builder
from .ops_seq import gates_to_onnx
from .sources import source_error

ACT = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softmax": "Softmax", "linear": None}


def load_keras(source: str):
    import keras

    try:
        return keras.saving.load_model(source, compile=False)
    except Exception as e:  # noqa: BLE001 -- keras raises many types for a file it cannot read
        raise source_error(source, f"cannot load the Keras model: {str(e).splitlines()[0][:300]}") from None


class _Convert:
    def __init__(self, source: str):
        self.source = source
        self.b = Builder(17)
        self.meta: dict = {}  # value -> ("image", (H, W, C)) | ("vector",) | ("seq",) | ("ids",) | ("flat", (C,H,W))
        self.count: dict = {}
        self.errors: list = []

    def out_name(self, layer) -> str:
        k = self.count.get(layer.name, 0)
        self.count[layer.name] = k + 1
        return layer.name if k == 0 else f"{layer.name}_{k + 1}"

    def refuse(self, layer, why: str):
        self.errors.append(f"layer '{layer.name}' ({type(layer).__name__}): {why}")
        raise _Skip

    def act(self, layer, x: str, act: str, out: str, meta) -> str:
        op = ACT.get(act, "?")
        if op == "?":
            self.refuse(layer, f"activation {act!r} has no IR spelling")
        if op is None:
            return self.b.op("Identity", [x], out, name=f"{layer.name}/identity")
        kw = {"axis": 1 if meta[0] == "image" else -1} if op == "Softmax" else {}
        return self.b.op(op, [x], out, name=out, **kw)

    # ------------------------------------------------------------------ layers
    def layer(self, layer, ins: list) -> str:
        kind = type(layer).__name__
        fn = getattr(self, f"_{kind}", None)
        if fn is None:
            self.refuse(layer, "no IR kind for this layer")
        out = self.out_name(layer)
        y = fn(layer, ins, out)
        for made in self.b.nodes[::-1]:
            if y in made.output:
                made.doc_string = f"{LAYER_DOC}{layer.name}"
                break
        return y

    def _w(self, layer, short, array) -> str:
        return self.b.const(f"{layer.name}.{short}", np.ascontiguousarray(array, np.float32))

    def _Conv2D(self, layer, ins, out):
        c = layer.get_config()
        if c.get("data_format", "channels_last") != "channels_last" or tuple(c["dilation_rate"]) != (1, 1) \
                or c.get("groups", 1) != 1:
            self.refuse(layer, "only channels_last, undilated, ungrouped convolution")
        (x,) = ins
        h, w, _ = self.meta[x][1]
        kernel, bias = (layer.get_weights() + [None])[:2]
        kh, kw = kernel.shape[:2]
        strides = tuple(c["strides"])
        pads = _pads(c["padding"], (h, w), (kh, kw), strides)
        inputs = [x, self._w(layer, "W", kernel.transpose(3, 2, 0, 1))] + (
            [self._w(layer, "b", bias)] if c["use_bias"] else [])
        oh = (h + pads[0] + pads[2] - kh) // strides[0] + 1
        ow = (w + pads[1] + pads[3] - kw) // strides[1] + 1
        meta = ("image", (oh, ow, kernel.shape[3]))
        act = c.get("activation", "linear")
        z = self.b.op("Conv", inputs, out if act == "linear" else None, name=f"{layer.name}/conv",
                      kernel_shape=[kh, kw], strides=list(strides), pads=pads)
        self.meta[out] = meta
        return z if act == "linear" else self.act(layer, z, act, out, meta)

    def _pool(self, layer, ins, out, op):
        c = layer.get_config()
        (x,) = ins
        h, w, ch = self.meta[x][1]
        k = tuple(c["pool_size"])
        s = tuple(c["strides"] or k)
        pads = _pads(c["padding"], (h, w), k, s)
        extra = {"count_include_pad": 0} if op == "AveragePool" else {}
        self.b.op(op, [x], out, name=out, kernel_shape=list(k), strides=list(s), pads=pads, **extra)
        self.meta[out] = ("image", ((h + pads[0] + pads[2] - k[0]) // s[0] + 1,
                                    (w + pads[1] + pads[3] - k[1]) // s[1] + 1, ch))
        return out

    def _MaxPooling2D(self, layer, ins, out):
        return self._pool(layer, ins, out, "MaxPool")

    def _AveragePooling2D(self, layer, ins, out):
        return self._pool(layer, ins, out, "AveragePool")

    def _Flatten(self, layer, ins, out):
        (x,) = ins
        m = self.meta[x]
        if m[0] == "image":
            self.b.op("Flatten", [x], out, name=out, axis=1)
            self.meta[out] = ("flat", m[1])
            return out
        if m[0] == "vector":
            return self.b.op("Identity", [x], out, name=out)
        self.refuse(layer, "Flatten of a sequence")

    def _Dense(self, layer, ins, out):
        c = layer.get_config()
        (x,) = ins
        m = self.meta[x]
        kernel, bias = (layer.get_weights() + [None])[:2]
        W = kernel.T
        if m[0] == "flat":  # Keras flattened (H, W, C); the IR flattens (C, H, W)
            h, w, ch = m[1]
            W = W[:, np.arange(h * w * ch).reshape(h, w, ch).transpose(2, 0, 1).ravel()]
        elif m[0] == "image":
            self.refuse(layer, "a Dense on an image acts on the channel axis in Keras; the IR's flattens first")
        act = c.get("activation", "linear")
        wname = self._w(layer, "W", W)
        z_out = out if act == "linear" else None
        if m[0] == "seq":
            wt = self.b.op("Transpose", [wname], name=f"{layer.name}/W_t", perm=[1, 0])
            z = self.b.op("MatMul", [x, wt], None if c["use_bias"] else z_out, name=f"{layer.name}/matmul")
            if c["use_bias"]:
                z = self.b.op("Add", [z, self._w(layer, "b", bias)], z_out, name=f"{layer.name}/bias")
        else:
            inputs = [x, wname] + ([self._w(layer, "b", bias)] if c["use_bias"] else [])
            z = self.b.op("Gemm", inputs, z_out, name=f"{layer.name}/gemm", transB=1)
        meta = ("seq",) if m[0] == "seq" else ("vector",)
        self.meta[out] = meta
        return z if act == "linear" else self.act(layer, z, act, out, meta)

    def _Dropout(self, layer, ins, out):
        (x,) = ins
        ratio = self.b.const(f"{layer.name}.ratio", np.array(float(layer.get_config()["rate"]), np.float32))
        self.meta[out] = self.meta[x]  # a permuted flat vector stays permuted
        return self.b.op("Dropout", [x, ratio], out, name=out)

    def _Activation(self, layer, ins, out):
        (x,) = ins
        self.meta[out] = self.meta[x]
        return self.act(layer, x, layer.get_config()["activation"], out, self.meta[x])

    def _ReLU(self, layer, ins, out):
        c = layer.get_config()
        if c.get("max_value") is not None or c.get("negative_slope", 0) or c.get("threshold", 0):
            self.refuse(layer, "a capped, leaky or shifted ReLU")
        return self._act_layer(layer, ins, out, "relu")

    def _Softmax(self, layer, ins, out):
        if layer.get_config().get("axis", -1) not in (-1, [-1]):
            self.refuse(layer, "softmax over an axis other than the features")
        return self._act_layer(layer, ins, out, "softmax")

    def _act_layer(self, layer, ins, out, act):
        (x,) = ins
        self.meta[out] = self.meta[x]
        return self.act(layer, x, act, out, self.meta[x])

    def _BatchNormalization(self, layer, ins, out):
        c = layer.get_config()
        (x,) = ins
        m = self.meta[x]
        if c["axis"] not in (-1, [-1], [3] if m[0] == "image" else [-1]) or m[0] == "flat":
            self.refuse(layer, "BatchNormalization over an axis other than the channels/features")
        weights = layer.get_weights()
        n = weights[-1].shape[0]
        gamma = weights.pop(0) if c["scale"] else np.ones(n, np.float32)
        beta = weights.pop(0) if c["center"] else np.zeros(n, np.float32)
        mean, var = weights
        names = [self._w(layer, s, a) for s, a in (("scale", gamma), ("bias", beta), ("running_mean", mean),
                                                    ("running_var", var))]
        attrs = {"epsilon": float(c["epsilon"]), "momentum": float(c["momentum"])}  # both weigh the old statistic
        self.meta[out] = m
        if m[0] == "seq":
            xt = self.b.op("Transpose", [x], name=f"{layer.name}/to_nct", perm=[0, 2, 1])
            y = self.b.op("BatchNormalization", [xt] + names, name=f"{layer.name}/bn", **attrs)
            return self.b.op("Transpose", [y], out, name=out, perm=[0, 2, 1])
        return self.b.op("BatchNormalization", [x] + names, out, name=out, **attrs)

    def _LayerNormalization(self, layer, ins, out):
        c = layer.get_config()
        (x,) = ins
        m = self.meta[x]
        if m[0] not in ("vector", "seq") or c["axis"] not in (-1, [-1]) or c.get("rms_scaling"):
            self.refuse(layer, "only LayerNormalization over the features of a vector or sequence")
        weights = layer.get_weights()
        n = weights[-1].shape[0]
        gamma = weights.pop(0) if c["scale"] else np.ones(n, np.float32)
        beta = weights.pop(0) if c["center"] else np.zeros(n, np.float32)
        self.meta[out] = m
        return self.b.op("LayerNormalization", [x, self._w(layer, "scale", gamma), self._w(layer, "bias", beta)],
                         out, name=out, axis=-1, epsilon=float(c["epsilon"]))

    def _Embedding(self, layer, ins, out):
        (x,) = ins
        if self.meta[x][0] != "ids":
            self.refuse(layer, "an Embedding must read the integer input directly")
        self.meta[out] = ("seq",)
        return self.b.op("Gather", [self._w(layer, "E", layer.get_weights()[0]), x], out, name=out, axis=0)

    def _LSTM(self, layer, ins, out):
        c = layer.get_config()
        (x,) = ins
        if self.meta[x][0] != "seq":
            self.refuse(layer, "an LSTM needs a sequence")
        if c["activation"] != "tanh" or c["recurrent_activation"] != "sigmoid" or not c["use_bias"] \
                or c.get("return_state") or c.get("stateful") or (c["go_backwards"] and c["return_sequences"]):
            self.refuse(layer, "only tanh/sigmoid LSTMs with a bias, no state outputs, and go_backwards only "
                               "with return_sequences=False (Keras reverses the output sequence)")
        kernel, rec, bias = layer.get_weights()
        n = rec.shape[0]
        w = self.b.const(f"{layer.name}.W", gates_to_onnx(kernel.T.astype(np.float32))[None])
        r = self.b.const(f"{layer.name}.H", gates_to_onnx(rec.T.astype(np.float32))[None])
        bb = self.b.const(f"{layer.name}.b", np.concatenate([gates_to_onnx(bias.astype(np.float32)),
                                                           np.zeros(4 * n, np.float32)])[None])
        xt = self.b.op("Transpose", [x], name=f"{layer.name}/to_tnf", perm=[1, 0, 2])
        y = self.b.op("LSTM", [xt, w, r, bb], name=f"{layer.name}/lstm", hidden_size=n,
                      direction="reverse" if c["go_backwards"] else "forward")
        y = self.b.op("Squeeze", [y, self.b.const(f"{layer.name}/axes", np.array([1], np.int64))],
                      name=f"{layer.name}/squeeze")
        seq_out = out if c["return_sequences"] else None
        y = self.b.op("Transpose", [y], seq_out, name=seq_out or f"{layer.name}/to_ntf", perm=[1, 0, 2])
        if c["return_sequences"]:
            self.meta[out] = ("seq",)
            return y
        # the last output: the state at input T-1, or at input 0 going backwards
        idx = self.b.const(f"{layer.name}/index", np.array(0 if c["go_backwards"] else -1, np.int64))
        self.meta[out] = ("vector",)
        return self.b.op("Gather", [y, idx], out, name=out, axis=1)

    def _Concatenate(self, layer, ins, out):
        kinds = {self.meta[x][0] for x in ins}
        if "flat" in kinds or len(kinds) != 1 or layer.get_config()["axis"] not in (-1, 3 if "image" in kinds else -1):
            self.refuse(layer, "concatenation of different kinds of values, flattened images, or not along features")
        m = self.meta[ins[0]]
        if m[0] == "image":
            self.meta[out] = ("image", m[1][:2] + (sum(self.meta[x][1][2] for x in ins),))
        else:
            self.meta[out] = m
        return self.b.op("Concat", ins, out, name=out, axis=1 if m[0] == "image" else -1)

    def _Rescaling(self, layer, ins, out):
        c = layer.get_config()
        (x,) = ins
        scale, offset = c["scale"], c["offset"]
        if not np.isscalar(scale) or not np.isscalar(offset):
            self.refuse(layer, "per-channel rescaling")
        f32 = np.float32
        y = self.b.op("Mul", [x, self.b.const(f"{layer.name}.scale", np.array(scale, f32))], name=f"{out}/scale")
        y = self.b.op("Sub", [y, self.b.const(f"{layer.name}.mean", np.array(-offset, f32))], name=f"{out}/mean")
        self.meta[out] = self.meta[x]
        return self.b.op("Div", [y, self.b.const(f"{layer.name}.std", np.array(1.0, f32))], out, name=out)

    def _GRU(self, layer, ins, out):
        c = layer.get_config()
        (x,) = ins
        if self.meta[x][0] != "seq":
            self.refuse(layer, "a GRU needs a sequence")
        if c["activation"] != "tanh" or c["recurrent_activation"] != "sigmoid" or not c["use_bias"] \
                or c.get("return_state") or c.get("stateful") or (c["go_backwards"] and c["return_sequences"]):
            self.refuse(layer, "only tanh/sigmoid GRUs with a bias, no state outputs, and go_backwards only "
                               "with return_sequences=False (Keras reverses the output sequence)")
        kernel, rec, bias = layer.get_weights()
        n = rec.shape[0]
        after = bool(c.get("reset_after", True))
        # Keras's z, r, h is ONNX's order; reset_after's (2, 3n) bias is B = [Wb, Rb]
        bias = bias.reshape(-1) if after else np.concatenate([bias, np.zeros(3 * n, bias.dtype)])
        w = self.b.const(f"{layer.name}.W", kernel.T.astype(np.float32)[None])
        r = self.b.const(f"{layer.name}.H", rec.T.astype(np.float32)[None])
        bb = self.b.const(f"{layer.name}.b", bias.astype(np.float32)[None])
        xt = self.b.op("Transpose", [x], name=f"{layer.name}/to_tnf", perm=[1, 0, 2])
        y = self.b.op("GRU", [xt, w, r, bb], name=f"{layer.name}/gru", hidden_size=n, linear_before_reset=int(after),
                      direction="reverse" if c["go_backwards"] else "forward")
        y = self.b.op("Squeeze", [y, self.b.const(f"{layer.name}/axes", np.array([1], np.int64))],
                      name=f"{layer.name}/squeeze")
        seq_out = out if c["return_sequences"] else None
        y = self.b.op("Transpose", [y], seq_out, name=seq_out or f"{layer.name}/to_ntf", perm=[1, 0, 2])
        if c["return_sequences"]:
            self.meta[out] = ("seq",)
            return y
        idx = self.b.const(f"{layer.name}/index", np.array(0 if c["go_backwards"] else -1, np.int64))
        self.meta[out] = ("vector",)
        return self.b.op("Gather", [y, idx], out, name=out, axis=1)

    def _merge(self, layer, ins, out, op):
        """Add/Subtract/Multiply of values of one kind and shape: the IR's Elementwise, chained pairwise."""
        metas = {self.meta[x] for x in ins}
        if len(metas) != 1 or "ids" in {m[0] for m in metas}:
            self.refuse(layer, "an elementwise merge of values of different kinds or shapes (no broadcasting)")
        y = ins[0]
        for k, x in enumerate(ins[1:], 1):
            last = k == len(ins) - 1
            y = self.b.op(op, [y, x], out if last else None, name=out if last else f"{out}/{k}")
        self.meta[out] = self.meta[ins[0]]  # a flattened image stays in Keras's order: both sides are
        return y

    def _Add(self, layer, ins, out):
        return self._merge(layer, ins, out, "Add")

    def _Subtract(self, layer, ins, out):
        return self._merge(layer, ins, out, "Sub")

    def _Multiply(self, layer, ins, out):
        return self._merge(layer, ins, out, "Mul")

    def _global_pool(self, layer, ins, out, op):
        c = layer.get_config()
        (x,) = ins
        if self.meta[x][0] != "image" or c.get("keepdims") or c.get("data_format", "channels_last") != "channels_last":
            self.refuse(layer, "only global pooling of a channels-last image to a vector (keepdims=False)")
        y = self.b.op(op, [x], name=f"{layer.name}/pool")
        self.meta[out] = ("vector",)  # (C, 1, 1) flattens to C in either order
        return self.b.op("Flatten", [y], out, name=out, axis=1)

    def _GlobalAveragePooling2D(self, layer, ins, out):
        return self._global_pool(layer, ins, out, "GlobalAveragePool")

    def _GlobalMaxPooling2D(self, layer, ins, out):
        return self._global_pool(layer, ins, out, "GlobalMaxPool")


class _Skip(Exception):
    pass


def _static_check(conv, op) -> str:
    kind = type(op).__name__
    if kind == "InputLayer":
        return ""
    if not hasattr(conv, f"_{kind}"):
        return "no IR kind for this layer"
    c = op.get_config()
    if "activation" in c and kind not in ("LSTM", "GRU") and c["activation"] not in ACT:
        return f"activation {c['activation']!r} has no IR spelling"
    if kind == "Conv2D" and (c.get("data_format", "channels_last") != "channels_last"
                             or tuple(c["dilation_rate"]) != (1, 1) or c.get("groups", 1) != 1):
        return "only channels_last, undilated, ungrouped convolution"
    return ""


def _pads(padding: str, size, k, s) -> list:
    """ONNX pads [top, left, bottom, right]; 'same' by TF's rule (total // 2 first)."""
    if padding == "valid":
        return [0, 0, 0, 0]
    begin, end = [], []
    for n, kk, ss in zip(size, k, s):
        out = -(-n // ss)
        total = max((out - 1) * ss + kk - n, 0)
        begin.append(total // 2)
        end.append(total - total // 2)
    return begin + end


def keras_model_to_onnx(model, source: str):
    """The ONNX model of a Keras Sequential or functional model; every unconvertible layer is listed (E822)."""
    from onnx import TensorProto, helper

    fmodel = getattr(model, "_functional", None) or model
    if not hasattr(fmodel, "operations") or not getattr(fmodel, "inputs", None):
        raise source_error(source, "the Keras model has no inputs yet (build it with keras.Input first)")
    conv = _Convert(source)
    names, graph_inputs = {}, []
    for t in fmodel.inputs:
        shape = tuple(t.shape[1:])
        name = t.name if t.name.isidentifier() else f"input_{len(graph_inputs) + 1}"
        integer = "int" in str(t.dtype)
        if integer and len(shape) == 1:
            conv.meta[name] = ("ids",)
            dims, elem = ["N", shape[0] if shape[0] else "T"], TensorProto.INT64
        elif len(shape) == 3 and None not in shape:
            conv.meta[name] = ("image", shape)
            dims, elem = ["N", shape[2], shape[0], shape[1]], TensorProto.FLOAT
        elif len(shape) == 2 and shape[1] is not None:
            conv.meta[name] = ("seq",)
            dims, elem = ["N", shape[0] if shape[0] else "T", shape[1]], TensorProto.FLOAT
        elif len(shape) == 1 and shape[0] is not None:
            conv.meta[name] = ("vector",)
            dims, elem = ["N", shape[0]], TensorProto.FLOAT
        else:
            raise source_error(source, f"input {t.name!r} of shape {shape} is not an image, vector or sequence")
        names[id(t)] = name
        graph_inputs.append(helper.make_tensor_value_info(name, elem, dims))
    for op in fmodel.operations:  # judged before converting, so that every bad layer is listed
        why = _static_check(conv, op)
        if why:
            conv.errors.append(f"layer '{op.name}' ({type(op).__name__}): {why}")
    pending = [(op, node) for op in fmodel.operations if type(op).__name__ != "InputLayer"
               for node in op._inbound_nodes]
    while pending:
        ready = [(op, n) for op, n in pending if all(id(t) in names for t in n.input_tensors)]
        if not ready:
            break
        for op, node in ready:
            pending.remove((op, node))
            if any(e.startswith(f"layer '{op.name}' ") for e in conv.errors):
                continue
            try:
                y = conv.layer(op, [names[id(t)] for t in node.input_tensors])
            except _Skip:
                continue
            for t in node.output_tensors:
                names[id(t)] = y
    if conv.errors:  # as the ONNX importer does: a summary naming them all, then one diagnostic per layer
        from ..errors import NetdslError

        head = source_error(source, f"{len(conv.errors)} Keras layer(s) netdsl cannot import: "
                            + ", ".join(e.split(":", 1)[0].removeprefix("layer ") for e in conv.errors))
        raise NetdslError(head.diagnostics + [source_error(source, e).diagnostics[0] for e in conv.errors])
    outputs = []
    for t in fmodel.outputs:
        name = names.get(id(t))
        if name is None:
            raise source_error(source, f"output {t.name!r} is not computed from the inputs")
        if conv.meta[name][0] == "flat":
            raise source_error(source, f"output {name!r} is a flattened image, which is (H, W, C) order in Keras")
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    from onnx import numpy_helper

    inits = [numpy_helper.from_array(v, k) for k, v in conv.b.inits.items()]
    g = helper.make_graph(conv.b.nodes, model.name, graph_inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


__all__ = ["keras_model_to_onnx", "load_keras"]
