"""IR -> ONNX. One converter per IR kind, registered in CONVERTERS (a duplicate raises).

Layout: ONNX works in the canonical layout already (NCHW, OIHW), so most kinds are one op.
Initializers carry the canonical parameter names (`conv1.W`); kinds whose ONNX op wants
another layout (LSTM: gates i,o,f,c and B = [Wb, Rb]) store it under the same name in
ONNX's layout, and the importer converts back. Node names are `<ir node>` for the op that
makes a node's value and `<ir node>/<what>` for helpers, which the importer reads back.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import ir
from ..errors import Diagnostic, NetdslError

DEFAULT_OPSET = 17
DOMAIN = "netdsl"  # model-local functions (CosineDistance)

LAYER_DOC = "netdsl layer "  # doc_string of the op that makes an IR node's value

CONVERTERS: dict = {}


def converter(kind: str):
    """Register fn(builder, layer, node, xs, in_types) -> None; it must write the value node.name."""
    def deco(fn):
        if kind in CONVERTERS:
            raise ValueError(f"ONNX converter for {kind} registered twice")
        CONVERTERS[kind] = fn
        return fn
    return deco


@dataclass
class Builder:
    opset: int
    nodes: list = field(default_factory=list)
    inits: dict = field(default_factory=dict)  # name -> np.ndarray
    functions: dict = field(default_factory=dict)  # name -> FunctionProto
    _count: int = 0
    lengths: dict = field(default_factory=dict)  # sequence value -> its input's Lengths (padded batches)

    def op(self, op_type: str, inputs: list, output: str | None = None, name: str = "", domain: str = "",
           **attrs) -> str:
        from onnx import helper

        if output is None:
            self._count += 1
            output = f"{name or op_type}:{self._count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=name or output, domain=domain,
                                           **attrs))
        return output

    def const(self, name: str, value) -> str:
        """An initializer; the same name twice must be the same array (shared layers)."""
        arr = np.asarray(value)
        if name in self.inits:
            if not np.array_equal(self.inits[name], arr):
                raise ValueError(f"initializer {name} given twice with different values")
            return name
        self.inits[name] = arr
        return name

    def param(self, layer: ir.Layer, short: str, params: dict) -> str:
        name = f"{layer.name}.{short}"
        return self.const(name, np.asarray(params[name], np.float32))


def feature_axis(t: ir.TensorType) -> int:
    """Channels for images (axis 1 of NCHW), else the last axis."""
    return 1 if (not t.seq and len(t.shape) == 3) else -1


def activation(b: Builder, x: str, act, t: ir.TensorType, out: str, name: str) -> str:
    if act is None:
        return b.op("Identity", [x], out, name=name)
    ops = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}
    if act in ops:
        return b.op(ops[act], [x], out, name=name)
    if act == "softmax":
        return b.op("Softmax", [x], out, name=name, axis=feature_axis(t))
    return extra_activation(b, x, act, out, name)


# the IR's activations without an ONNX op of their own at opset 17 (Gelu is opset 20): model-local functions
# of standard ops, which the importer reads back by name
ACT_FUNCTIONS = {
    "silu": ("Silu", [("Sigmoid", ["x"], ["s"]), ("Mul", ["x", "s"], ["y"])]),
    "gelu(approximate=False)": ("Gelu", [  # x * (1 + erf(x / sqrt 2)) / 2
        ("Constant", [], ["r2"], {"value_float": 1.4142135623730951}), ("Constant", [], ["one"], {"value_float": 1.0}),
        ("Constant", [], ["half"], {"value_float": 0.5}), ("Div", ["x", "r2"], ["u"]), ("Erf", ["u"], ["e"]),
        ("Add", ["e", "one"], ["p"]), ("Mul", ["x", "p"], ["xp"]), ("Mul", ["xp", "half"], ["y"])]),
    "gelu(approximate=True)": ("GeluTanh", [  # x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))) / 2
        ("Constant", [], ["k"], {"value_float": 0.7978845608028654}), ("Constant", [], ["c"], {"value_float": 0.044715}),
        ("Constant", [], ["one"], {"value_float": 1.0}), ("Constant", [], ["half"], {"value_float": 0.5}),
        ("Mul", ["x", "x"], ["x2"]), ("Mul", ["x2", "x"], ["x3"]), ("Mul", ["x3", "c"], ["cx3"]),
        ("Add", ["x", "cx3"], ["inner"]), ("Mul", ["inner", "k"], ["u"]), ("Tanh", ["u"], ["t"]),
        ("Add", ["t", "one"], ["p"]), ("Mul", ["x", "p"], ["xp"]), ("Mul", ["xp", "half"], ["y"])]),
}


def extra_activation(b: Builder, x: str, act: str, out: str, name: str) -> str:
    """elu, leaky_relu, softplus, hard_sigmoid as ONNX ops; silu and gelu as model-local functions."""
    from onnx import helper

    from ..layers.common import split_activation

    kind, params = split_activation(act)
    if kind == "elu":
        return b.op("Elu", [x], out, name=name, alpha=1.0)
    if kind == "leaky_relu":
        return b.op("LeakyRelu", [x], out, name=name, alpha=params["alpha"])
    if kind == "softplus":
        return b.op("Softplus", [x], out, name=name)
    if kind == "hard_sigmoid":  # the IR's relu6(x + 3) / 6
        return b.op("HardSigmoid", [x], out, name=name, alpha=1 / 6, beta=0.5)
    fname, steps = ACT_FUNCTIONS[act]
    if fname not in b.functions:
        nodes = [helper.make_node(s[0], s[1], s[2], **(s[3] if len(s) > 3 else {})) for s in steps]
        b.functions[fname] = helper.make_function(DOMAIN, fname, ["x"], ["y"], nodes, [helper.make_opsetid("", b.opset)])
    return b.op(fname, [x], out, name=name, domain=DOMAIN)


def unsupported(graph: ir.Graph) -> list:
    """Every layer (and activation) ONNX export cannot express, as diagnostics."""
    diags = []
    for layer in graph.layers:
        if layer.kind not in CONVERTERS:
            diags.append(Diagnostic("E801", f"target 'onnx' cannot express layer '{layer.name}' ({layer.kind})",
                                    layer.span or graph.span))
        elif layer.attr("activation") not in (None, "relu", "sigmoid", "tanh", "softmax", "elu", "softplus",
                                              "hard_sigmoid", *ACT_FUNCTIONS) \
                and not layer.attr("activation").startswith("leaky_relu("):
            diags.append(Diagnostic("E802", f"target 'onnx' has no activation {layer.attr('activation')!r} "
                                            f"(layer {layer.name})", layer.span or graph.span))
        elif layer.kind == "LSTM" and layer.attr("cell") is not None:
            diags.append(Diagnostic("E802", f"target 'onnx' cannot express layer '{layer.name}' (LSTM): ONNX's "
                                            "LSTM operator has no projection (cell_shape)", layer.span or graph.span))
        elif layer.kind == "GRU" and layer.attr("stabilize"):
            # CNTK's step interpolates with the stabilized h_prev, z * (beta h): no weight of ONNX's GRU scales that
            diags.append(Diagnostic("E802", f"target 'onnx' cannot express layer '{layer.name}' (GRU): ONNX's GRU "
                                            "operator has no self-stabilizer (enable_self_stabilization)",
                                    layer.span or graph.span))
    return diags


def value_info(name: str, t: ir.TensorType):
    from onnx import TensorProto, helper

    dims = ["N"] + (([t.length] if t.length is not None else ["T"]) if t.seq else []) + list(t.shape)
    elem = TensorProto.INT64 if t.vocab is not None else TensorProto.FLOAT
    return helper.make_tensor_value_info(name, elem, dims)


def to_onnx(graph: ir.Graph, params: dict, opset: int = DEFAULT_OPSET):
    """The ONNX ModelProto computing `graph` (inference mode) with `params`."""
    import onnx
    from onnx import helper, numpy_helper

    diags = unsupported(graph)
    if diags:
        raise NetdslError(diags)
    if opset < DEFAULT_OPSET:
        raise ValueError(f"ONNX export needs opset {DEFAULT_OPSET} or newer (LayerNormalization), got {opset}")
    b = Builder(opset)
    types = {i.name: i.type for i in graph.inputs}
    from .lengths import add_lengths

    length_inputs = add_lengths(b, graph)
    for node in graph.nodes:
        layer = graph.layer(node.layer)
        in_types = [types[i] for i in node.inputs]
        CONVERTERS[layer.kind](b, layer, node, list(node.inputs), in_types, params)
        for made in b.nodes[::-1]:  # the op that makes the value names its layer: sharing survives import
            if node.name in made.output:
                made.doc_string = f"{LAYER_DOC}{layer.name}"
                break
        types[node.name] = node.type
    inits = [numpy_helper.from_array(v, k) for k, v in b.inits.items()]
    g = helper.make_graph(b.nodes, graph.name, [value_info(i.name, i.type) for i in graph.inputs] + length_inputs,
                          [value_info(o, types[o]) for o in graph.outputs], inits)
    imports = [helper.make_opsetid("", opset)]
    if b.functions:
        imports.append(helper.make_opsetid(DOMAIN, 1))
    model = helper.make_model(g, opset_imports=imports, functions=list(b.functions.values()),
                              producer_name="netdsl", doc_string=f"from {graph.source}")
    # the oldest IR version that carries these opsets, so older runtimes load the file
    model.ir_version = helper.find_min_ir_version_for(imports, True)
    onnx.checker.check_model(model, full_check=True)
    return model


# the converters register themselves into CONVERTERS when their modules load
from . import ops_basic, ops_seq  # noqa: F401
