"""ONNX -> IR: fold constants, list every op the IR cannot hold (all at once), then map the rest onto layers.

The walk keeps, for each ONNX value, a `Val`: the IR value it stands for, its IR type, and its layout
(`c` canonical; `tnf` time-major and `y4` an LSTM's (T, 1, N, n) output, as ONNX's LSTM spells them;
`nft` a sequence transposed for BatchNormalization). Exporter spellings that are not layers
(Transpose pairs, Squeeze, Identity, Flatten before a Dense, MatMul + Add) become no layer or part
of the next one. The result is written as a .net file by netwriter.py.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from .. import layers as kinds
from .. import shapes
from ..errors import Diagnostic, NetdslError, Span
from ..ir import TensorType

E_READ = "E820"  # the file is not a readable, valid ONNX model
E_UNSUPPORTED = "E821"  # ONNX ops (or uses of them) the IR cannot hold; all are listed


@dataclass
class Val:
    name: str | None  # IR value name; None while `pending`
    type: TensorType | None  # None: poisoned by an earlier error
    layout: str = "c"
    pending: tuple | None = None  # ("flatten", src, helper, hint, key) or ("rescale", input, scale, mean, std)
    app: int | None = None  # index in Walk.apps of the application that made it
    done: tuple = ()  # steps a shared layer already does that ONNX still spells next: "bias", activations
    rev: bool = False  # each sample's valid steps reversed (a ReverseSequence on lengths, onnx/lengths.py)


@dataclass
class LayerDef:
    name: str
    kind: str
    attrs: dict  # resolved IR attrs (as shapes.RULES wants them)
    params: dict = field(default_factory=dict)  # short -> array
    uses: int = 0


@dataclass
class App:
    out: str
    layer: str | None  # a LayerDef name, or None for functions
    func: str | None  # splice, select_last, select_first, cosine_distance, add, sub, mul (Elementwise)
    inputs: list


@dataclass
class InputDef:
    name: str
    type: TensorType
    rescale: tuple | None = None


ACTS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Softmax": "softmax"}


def ident(text: str, fallback: str = "v") -> str:
    s = re.sub(r"\W+", "_", text).strip("_")
    s = re.sub(r"_+", "_", s)
    if not s or not s[0].isalpha():
        s = f"{fallback}_{s}" if s else fallback
    return s[:60]


def name_hint(node_name: str, op_type: str) -> str:
    """'/layer1/conv1/Conv' -> 'layer1_conv1'; 'conv1/gemm' (netdsl's helpers) -> 'conv1'."""
    parts = [p for p in re.split(r"[/.:]", node_name) if p and p != op_type]
    if "/" in node_name and not node_name.startswith("/"):
        parts = parts[:1]
    out = []
    for p in parts:
        if not out or out[-1] != p:
            out.append(p)
    return ident("_".join(out), op_type.lower())


def fmt_float(v) -> float:
    """float32 attributes back to the decimal a user wrote (0.8999999762 -> 0.9)."""
    return float(f"{float(v):.6g}")


def read_model(path):
    import onnx

    from ..fsutil import is_regular_readable

    span = Span(str(path), 1, 1, 1, 1)
    if not is_regular_readable(path):
        raise NetdslError(Diagnostic(E_READ, "not a regular, readable file", span))
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001 -- onnx raises many types for a bad file; all mean "not a valid model"
        raise NetdslError(Diagnostic(E_READ, f"not a valid ONNX model: {str(e).splitlines()[0][:300]}", span)) from None
    return model


def fold_constants(model) -> tuple[dict, set, set]:
    """The initializers and Constant nodes, and the nodes that compute only from constants.

    `Shape` counts as constant: every sample axis is static in the IR, and the batch (or an
    unknown time) axis is given as 0, which Reshape reads as "keep this axis" -- exactly the
    `x.view(x.size(0), -1)` idiom. Those nodes are evaluated during the walk (Walk.fold)."""
    from onnx import numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    known = set(consts)
    foldable = set()
    for k, node in enumerate(model.graph.node):
        std = node.domain in ("", "ai.onnx")
        ins = [i for i in node.input if i]
        if std and (node.op_type in ("Constant", "Shape") or (
                ins and all(i in known for i in ins) and node.op_type != "Dropout")):
            foldable.add(k)  # by position: protobuf wrappers are not stable objects
            known.update(o for o in node.output if o)
    return consts, foldable, known


def _eval_node(model, node, consts):
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    inits = [numpy_helper.from_array(np.asarray(consts[i]), i) for i in node.input if i]
    g = helper.make_graph([node], "fold", [], [helper.make_tensor_value_info(o, 0, None) for o in node.output], inits)
    m = helper.make_model(g, opset_imports=list(model.opset_import))
    return ReferenceEvaluator(m).run(None, {})


class Walk:
    def __init__(self, model, source: str):
        self.model = model
        self.source = source
        self.span = Span(source, 1, 1, 1, 1)
        self.consts, self.foldable, self.known = fold_constants(model)
        self.origins = {k: k for k in self.consts}
        self.nodes = list(model.graph.node)
        self.vals: dict = {}
        self.inputs: list = []
        self.layers: dict = {}  # name -> LayerDef
        self.keys: dict = {}  # weight initializer name -> layer name (sharing)
        self.apps: list = []
        self.names: set = set()
        self.diags: list = []
        self.uses: dict = {}
        # a padded batch's lengths (onnx/lengths.py): the optional input x_lens and the nodes named
        # x_lens/..., which compute from it what LSTM, GRU, select_last and Delay read: no IR values
        names = {vi.name for vi in model.graph.input}
        lens = [n for n in names if n.endswith("_lens") and n[:-len("_lens")] in names]
        self.length_nodes = {k for k, node in enumerate(self.nodes) if any(node.name.startswith(f"{n}/") for n in lens)}
        self.foldable -= self.length_nodes
        for k, node in enumerate(self.nodes):
            if k in self.foldable or k in self.length_nodes:
                continue
            for i in node.input:
                self.uses[i] = self.uses.get(i, 0) + 1
        for o in model.graph.output:
            self.uses[o.name] = self.uses.get(o.name, 0) + 1

    # ---------------------------------------------------------------- names and errors
    def fresh(self, hint: str) -> str:
        from .netwriter import taken

        base = ident(hint)
        name, k = base, 2
        while name in self.names or taken(name):
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def fail(self, node, why: str) -> None:
        self.diags.append(Diagnostic(E_UNSUPPORTED, f"node '{node.name or node.output[0]}' ({node.op_type}): {why}",
                                     self.span))
        for o in node.output:
            self.vals[o] = Val(None, None)

    # ---------------------------------------------------------------- values
    def const(self, name: str):
        return self.consts.get(name) if name else None

    def need(self, v: Val, node) -> Val:
        """The value as an IR value: materialise a pending Flatten or Rescale."""
        if v.done:
            raise _Refuse(f"a shared layer here is followed by different ops than where it was first used "
                          f"(expected {', '.join(v.done)})")
        if v.layout != "c":
            raise _Refuse(f"its input is in a transposed layout ({v.layout}) the IR has no value for")
        if v.rev:
            raise _Refuse("its input has each sample's steps reversed (ReverseSequence), which the IR has no value for")
        if v.pending is None:
            return v
        if v.pending[0] == "flatten":
            src = self.need(v.pending[1], node)
            _, _, _, hint, key = v.pending
            return self.apply("Flatten", {}, [src], hint, hint, key=key)
        _, inp, scale, mean, std = v.pending
        if self.uses.get(inp.name, 0) > 1 or inp.rescale is not None:
            raise _Refuse("an input is rescaled here but also used as it is; the IR rescales an input for all uses")
        inp.rescale = (fmt_float(scale), fmt_float(mean), fmt_float(std))
        return Val(inp.name, inp.type)

    def layer(self, kind: str, attrs: dict, params: dict, hint: str, key: str | None) -> LayerDef:
        if key is not None and key in self.keys:
            existing = self.layers[self.keys[key]]
            same = existing.kind == kind and all(
                np.array_equal(existing.params.get(k), v) for k, v in params.items() if k != "b") and (
                params or existing.attrs == attrs)
            if same:
                return existing
        if key is not None and "." in key and not key.startswith("layer:"):
            # 'conv1.W', 'conv1.weight': the layer's own name
            hint = key.rsplit(".", 1)[0]
        layer = LayerDef(self.fresh(hint), kind, attrs, params)
        self.layers[layer.name] = layer
        if key is not None:
            self.keys[key] = layer.name
        return layer

    def apply(self, kind_or_layer, attrs, ins: list, out_hint: str, hint: str, params=None, key=None,
              func: str | None = None) -> Val:
        types = [v.type for v in ins]
        if func is not None:
            kind, layer = {"splice": "Splice", "select_last": "SelectLast", "select_first": "SelectFirst",
                           "cosine_distance": "CosineDistance", "add": "Elementwise", "sub": "Elementwise",
                           "mul": "Elementwise"}[func], None
            try:
                out, _, _ = kinds.get(kind).shape({"op": func} if kind == "Elementwise" else {}, types)
            except shapes.ShapeError as e:
                raise _Refuse(str(e)) from None
        else:
            layer = self.layer(kind_or_layer, attrs, params or {}, hint, key)
            try:
                out, pshapes, _ = kinds.get(layer.kind).shape(dict(layer.attrs), types)
            except shapes.ShapeError as e:
                raise _Refuse(str(e)) from None
            for short, shape in pshapes.items():
                if short in layer.params and tuple(layer.params[short].shape) != tuple(shape):
                    raise _Refuse(f"parameter {short} has shape {layer.params[short].shape}, the IR wants {shape}")
            layer.uses += 1
        name = self.fresh(out_hint)
        self.apps.append(App(name, layer.name if layer else None, func, [v.name for v in ins]))
        done = ()
        if layer is not None and layer.uses > 1:
            done = tuple(x for x in (("bias" if layer.attrs.get("_bias_from_add") else None),
                                     ("reshape" if layer.attrs.get("out_shape") else None),
                                     layer.attrs.get("activation")) if x)
        return Val(name, out, app=len(self.apps) - 1, done=done)

    def rename(self, v: Val, onnx_name: str) -> Val:
        """The value an app makes takes the name of the ONNX op that ends it (after fusing)."""
        app = self.apps[v.app]
        new = self.fresh(onnx_name)
        self.names.discard(app.out)
        app.out = new
        return Val(new, v.type, app=v.app)

    # ---------------------------------------------------------------- the walk
    def run(self):
        from .import_ops import HANDLERS

        init_names = set(self.consts)
        for vi in self.model.graph.input:
            if vi.name in init_names:
                continue
            self.inputs.append(self.graph_input(vi))
        unsupported = [(n, self.why_not(n)) for k, n in enumerate(self.nodes)
                       if k not in self.foldable and k not in self.length_nodes]
        unsupported = [(n, why) for n, why in unsupported if why]
        if unsupported:
            listed = ", ".join(f"'{n.name or n.output[0]}' ({n.op_type})" for n, _ in unsupported)
            raise NetdslError([Diagnostic(
                E_UNSUPPORTED, f"{len(unsupported)} ONNX node{'s' if len(unsupported) > 1 else ''} "
                f"the IR cannot hold: {listed}", self.span)] + [
                Diagnostic(E_UNSUPPORTED, f"node '{n.name or n.output[0]}' ({n.op_type}): {why}", self.span)
                for n, why in unsupported])
        for k, node in enumerate(self.nodes):
            if k in self.length_nodes:
                for o in node.output:
                    self.vals[o] = Val(None, TensorType(()), layout="lens")
                continue
            if k in self.foldable:
                try:
                    self.fold(node)
                except _Refuse as e:
                    self.fail(node, str(e))
                continue
            ins = [self.vals.get(i) if i else None for i in node.input]
            if any(v is not None and v.type is None for v in ins):  # an earlier node already failed
                for o in node.output:
                    self.vals[o] = Val(None, None)
                continue
            missing = [i for i, v in zip(node.input, ins) if i and v is None and i not in self.consts]
            if missing:
                self.fail(node, f"reads {missing[0]!r}, which no node makes")
                continue
            domain = node.domain if node.domain not in ("", "ai.onnx") else ""
            try:
                HANDLERS[(domain, node.op_type)](self, node)
            except _Refuse as e:
                self.fail(node, str(e))
        outs = []
        for o in self.model.graph.output:
            v = self.vals.get(o.name)
            if v is None or v.type is None:
                if v is None:
                    self.diags.append(Diagnostic(E_UNSUPPORTED, f"output {o.name!r} is a constant", self.span))
                continue
            try:
                outs.append(self.need(v, _Fake(o.name)).name)
            except _Refuse as e:
                self.diags.append(Diagnostic(E_UNSUPPORTED, f"output {o.name!r}: {e}", self.span))
        if self.diags:
            raise NetdslError(self.diags)
        return outs

    def why_not(self, node) -> str:
        """Why this node cannot become IR, judged before the walk so that every such node is listed."""
        from .import_ops import HANDLERS

        domain = node.domain if node.domain not in ("", "ai.onnx") else ""
        if (domain, node.op_type) not in HANDLERS:
            return f"unsupported op {node.op_type}" + (f" (domain {domain})" if domain else "")
        if node.op_type == "Div" and all(i not in self.known for i in node.input):
            return "an elementwise Div of two tensors has no IR kind"
        return ""

    def fold(self, node) -> None:
        if node.op_type == "Shape":
            v = self.vals.get(node.input[0])
            if v is None or v.type is None:
                raise _Refuse("the shape of an unknown value")
            t = v.type
            dims = [0] + ([t.length or 0] if t.seq else []) + list(t.shape)
            a = {x.name: x.i for x in node.attribute}
            self.consts[node.output[0]] = np.array(dims[a.get("start", 0):a.get("end", len(dims))], np.int64)
            return
        if any(i and i not in self.consts for i in node.input):
            raise _Refuse("an input of this constant expression could not be computed")
        outs = _eval_node(self.model, node, self.consts)
        for name, value in zip(node.output, outs):
            self.consts[name] = np.asarray(value)
        if node.op_type in ("Transpose", "Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze"):
            self.origins[node.output[0]] = self.origins.get(node.input[0])

    def graph_input(self, vi) -> InputDef:
        from onnx import TensorProto

        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        sample = dims[1:]
        integer = tt.elem_type in (TensorProto.INT64, TensorProto.INT32)
        if integer and len(sample) == 1:
            t = TensorType((), True, sample[0], vocab=0)  # the vocabulary comes from the Embedding that reads it
        elif len(sample) == 2 and sample[1] is not None and not integer:
            t = TensorType((sample[1],), True, sample[0])
        elif sample and all(d is not None for d in sample) and len(sample) in (1, 3) and not integer:
            t = TensorType(tuple(sample))
        else:
            self.diags.append(Diagnostic(E_UNSUPPORTED, f"input {vi.name!r} has shape {dims}: the IR takes (N, F), "
                                         f"(N, C, H, W), (N, T, F) floats or (N, T) token ids", self.span))
            t = None
        inp = InputDef(self.fresh(vi.name), t)
        self.vals[vi.name] = Val(inp.name, t)
        self.uses[inp.name] = self.uses.get(vi.name, 0)
        return inp


class _Refuse(Exception):
    """This node cannot become IR; the message says why."""


class _Fake:
    def __init__(self, name):
        self.name, self.op_type = name, "Output"


def import_model(model, source: str, name: str):
    """(inputs, layers, apps, outputs, model name) for netwriter."""
    w = Walk(model, source)
    outs = w.run()
    return w, outs
