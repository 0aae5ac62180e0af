"""ONNX converters for sequences and joins: Embedding, LSTM, Splice, SelectLast/First, CosineDistance,
Elementwise, GRU, Delay."""
from __future__ import annotations

import numpy as np

from .export import DOMAIN, converter, feature_axis

# IR gate blocks i, f, g, o -> ONNX's i, o, f, c
IR_TO_ONNX_GATES = (0, 3, 1, 2)


def gates_to_onnx(a: np.ndarray) -> np.ndarray:
    n = a.shape[0] // 4
    return np.concatenate([a[k * n:(k + 1) * n] for k in IR_TO_ONNX_GATES])


def gates_from_onnx(a: np.ndarray) -> np.ndarray:
    n = a.shape[0] // 4
    blocks = [a[k * n:(k + 1) * n] for k in range(4)]  # i, o, f, c
    return np.concatenate([blocks[0], blocks[2], blocks[3], blocks[1]])


@converter("Embedding")
def embedding(b, layer, node, xs, ins, params):
    if ins[0].vocab is None:  # float vectors (one-hot words or any dense vectors): x @ E
        b.op("MatMul", [xs[0], b.param(layer, "E", params)], node.name, name=node.name)
        return
    b.op("Gather", [b.param(layer, "E", params), xs[0]], node.name, name=node.name, axis=0)


@converter("LSTM")
def lstm(b, layer, node, xs, ins, params):
    n = node.name
    u = int(layer.attr("units"))
    p = layer.name
    W = np.asarray(params[f"{p}.W"], np.float32)
    H = np.asarray(params[f"{p}.H"], np.float32)
    bias = np.asarray(params[f"{p}.b"], np.float32)
    w = b.const(f"{p}.W", gates_to_onnx(W)[None])
    r = b.const(f"{p}.H", gates_to_onnx(H)[None])
    if layer.attr("stabilize"):  # Sdh h @ H.T = h @ (Sdh H).T: the stabilizer folds into R
        r = b.op("Mul", [r, _beta(b, layer, node, "Sdh", params)], name=f"{n}/stabilized_H")
    # B = [Wb, Rb]: the IR's one bias per gate goes in Wb, zeros in Rb
    bb = b.const(f"{p}.b", np.concatenate([gates_to_onnx(bias), np.zeros(4 * u, np.float32)])[None])
    xt = b.op("Transpose", [xs[0]], name=f"{n}/to_tnf", perm=[1, 0, 2])
    lens = b.lengths.get(xs[0])
    states = _initial_states(b, layer, node, xs[0], u, 2)
    if layer.attr("peepholes"):  # input P (1, 3u), ONNX's order i, o, f; no initial states (refused with peepholes)
        # one initializer each, joined by a Concat that importers fold; C * (S c) = (S C) * c folds the stabilizers
        peeps = [b.const(f"{p}.{k}", np.asarray(params[f"{p}.{k}"], np.float32)[None]) for k in ("Ci", "Co", "Cf")]
        if layer.attr("stabilize"):
            beta_dc, beta_c = (_beta(b, layer, node, k, params) for k in ("Sdc", "Sct"))
            peeps = [b.op("Mul", [v, beta], name=f"{n}/stabilized_{k}")
                     for v, beta, k in zip(peeps, (beta_dc, beta_c, beta_dc), ("Ci", "Co", "Cf"))]
        states = ["", "", b.op("Concat", peeps, name=f"{n}/peepholes", axis=1)]
    if lens is not None:  # a padded batch (onnx/lengths.py)
        _recurrence_on_lengths(b, "LSTM", layer, node, xt, [w, r, bb], lens, states, hidden_size=u)
        return
    # ONNX's reverse direction keeps outputs at their input positions, as go_backwards does
    direction = "reverse" if layer.attr("go_backwards") else "forward"
    y = b.op("LSTM", [xt, w, r, bb] + ([""] + states if states else []), name=f"{n}/lstm", hidden_size=u,
             direction=direction)
    axes = b.const(f"{n}/axes", np.array([1], np.int64))
    y = b.op("Squeeze", [y, axes], name=f"{n}/squeeze")  # (T, 1, N, u) -> (T, N, u)
    b.op("Transpose", [y], n, name=n, perm=[1, 0, 2])


def _beta(b, layer, node, short: str, params) -> str:
    """A self-stabilizer's beta = softplus(4 alpha) / 4 (a scalar) from its initializer `<layer>.<short>`."""
    n = f"{node.name}/{short}"
    alpha = b.const(f"{layer.name}.{short}", np.asarray(params[f"{layer.name}.{short}"], np.float32))
    four = b.const(f"{n}/steepness", np.asarray(4.0, np.float32))
    z = b.op("Softplus", [b.op("Mul", [alpha, four], name=f"{n}/scaled")], name=f"{n}/softplus")
    return b.op("Div", [z, four], name=f"{n}/beta")


def _initial_states(b, layer, node, x, units: int, count: int) -> list:
    """Recurrence's initial_state as the op's initial_h (and initial_c): an initializer of (1, 1, units)
    expanded to the batch of x (N, T, F); [] when it is 0 (the op's own default). Import reads the value
    back from the initializer the Expand reads (import_ops.initial_state)."""
    value = layer.attr("initial_state", 0.0)
    if not value:
        return []
    n = node.name
    zero = b.const(f"{n}/state_batch_axis", np.array([0], np.int64))
    one = b.const(f"{n}/state_one", np.array([1], np.int64))
    batch = b.op("Gather", [b.op("Shape", [x], name=f"{n}/state_shape"), zero], name=f"{n}/state_batch", axis=0)
    dims = b.op("Concat", [one, batch, one], name=f"{n}/state_dims", axis=0)
    state = b.const(f"{layer.name}.initial_state", np.full((1, 1, units), value, np.float32))
    h0 = b.op("Expand", [state, dims], name=f"{n}/initial_state")
    return [h0] * count


def _recurrence_on_lengths(b, op, layer, node, xt, weights, lens, states=(), **attrs):
    """op (LSTM or GRU) over time-major xt with sequence_lens (and initial states); go_backwards as
    ReverseSequence of each sample's valid steps around a forward run (onnx.reference ignores sequence_lens)."""
    n = node.name
    back = bool(layer.attr("go_backwards"))
    if back:
        xt = b.op("ReverseSequence", [xt, lens.lengths], name=f"{n}/reverse_in", batch_axis=1, time_axis=0)
    y = b.op(op, [xt, *weights, lens.lengths32, *states], name=f"{n}/{op.lower()}", direction="forward", **attrs)
    axes = b.const(f"{n}/axes", np.array([1], np.int64))
    y = b.op("Squeeze", [y, axes], name=f"{n}/squeeze")  # (T, 1, N, u) -> (T, N, u)
    if back:
        y = b.op("ReverseSequence", [y, lens.lengths], name=f"{n}/reverse_out", batch_axis=1, time_axis=0)
    b.op("Transpose", [y], n, name=n, perm=[1, 0, 2])


@converter("Splice")
def splice(b, layer, node, xs, ins, params):
    b.op("Concat", xs, node.name, name=node.name, axis=feature_axis(ins[0]))


def _select(index):
    def convert(b, layer, node, xs, ins, params):
        lens = b.lengths.get(xs[0]) if index == -1 else None
        if lens is not None:  # a padded batch: each sample's step lengths - 1
            b.op("GatherND", [xs[0], lens.last], node.name, name=node.name, batch_dims=1)
            return
        i = b.const(f"{node.name}/index", np.array(index, np.int64))
        b.op("Gather", [xs[0], i], node.name, name=node.name, axis=1)  # a scalar index drops the time axis
    return convert


converter("SelectLast")(_select(-1))
converter("SelectFirst")(_select(0))


def cosine_function(opset: int):
    """netdsl.CosineDistance(a, b): torch's cosine_similarity(dim=1, eps=1e-8) on flattened samples, (N, 1)."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Constant", [], ["eps"], value=helper.make_tensor("eps", TensorProto.FLOAT, [], [1e-8])),
        helper.make_node("Constant", [], ["one"], value=helper.make_tensor("one", TensorProto.INT64, [1], [1])),
    ]
    for v in ("a", "b"):
        nodes += [
            helper.make_node("Flatten", [v], [f"{v}2"], axis=1),
            helper.make_node("Mul", [f"{v}2", f"{v}2"], [f"{v}sq"]),
            helper.make_node("ReduceSum", [f"{v}sq", "one"], [f"{v}ss"], keepdims=1),
            helper.make_node("Sqrt", [f"{v}ss"], [f"{v}n"]),
            helper.make_node("Max", [f"{v}n", "eps"], [f"{v}c"]),
            helper.make_node("Div", [f"{v}2", f"{v}c"], [f"{v}u"]),
        ]
    nodes += [helper.make_node("Mul", ["au", "bu"], ["p"]),
              helper.make_node("ReduceSum", ["p", "one"], ["y"], keepdims=1)]
    return helper.make_function(DOMAIN, "CosineDistance", ["a", "b"], ["y"], nodes,
                                [helper.make_opsetid("", opset)])


@converter("CosineDistance")
def cosine(b, layer, node, xs, ins, params):
    if "CosineDistance" not in b.functions:
        b.functions["CosineDistance"] = cosine_function(b.opset)
    b.op("CosineDistance", xs, node.name, name=node.name, domain=DOMAIN)


ONNX_OPS = {"add": "Add", "sub": "Sub", "mul": "Mul"}  # Elementwise's op -> the ONNX op


@converter("Elementwise")
def elementwise(b, layer, node, xs, ins, params):
    b.op(ONNX_OPS[layer.attr("op")], xs, node.name, name=node.name)


def gru_gates_swap(a: np.ndarray) -> np.ndarray:
    """GRU gate blocks r, z, n (IR) <-> z, r, h (ONNX): the first two thirds trade places."""
    n = a.shape[0] // 3
    return np.concatenate([a[n:2 * n], a[:n], a[2 * n:]])


@converter("GRU")
def gru(b, layer, node, xs, ins, params):
    n = node.name
    u = int(layer.attr("units"))
    p = layer.name
    W = np.asarray(params[f"{p}.W"], np.float32)
    H = np.asarray(params[f"{p}.H"], np.float32)
    reset_after = bool(layer.attr("reset_after"))
    wb = gru_gates_swap(np.asarray(params[f"{p}.b"], np.float32))
    w = b.const(f"{p}.W", gru_gates_swap(W)[None])
    r = b.const(f"{p}.H", gru_gates_swap(H)[None])
    # B = [Wb, Rb]: reset_after's bh is Rb (one initializer each, joined by a Concat that importers fold);
    # without it Rb is zero (ONNX adds Rb_h outside the reset gate there)
    if reset_after:
        rb = b.const(f"{p}.bh", gru_gates_swap(np.asarray(params[f"{p}.bh"], np.float32))[None])
        bb = b.op("Concat", [b.const(f"{p}.b", wb[None]), rb], name=f"{n}/bias", axis=1)
    else:
        bb = b.const(f"{p}.b", np.concatenate([wb, np.zeros(3 * u, np.float32)])[None])
    xt = b.op("Transpose", [xs[0]], name=f"{n}/to_tnf", perm=[1, 0, 2])
    lens = b.lengths.get(xs[0])
    states = _initial_states(b, layer, node, xs[0], u, 1)
    if lens is not None:  # a padded batch (onnx/lengths.py)
        _recurrence_on_lengths(b, "GRU", layer, node, xt, [w, r, bb], lens, states, hidden_size=u,
                               linear_before_reset=int(reset_after))
        return
    direction = "reverse" if layer.attr("go_backwards") else "forward"
    y = b.op("GRU", [xt, w, r, bb] + ([""] + states if states else []), name=f"{n}/gru", hidden_size=u,
             direction=direction, linear_before_reset=int(reset_after))
    axes = b.const(f"{n}/axes", np.array([1], np.int64))
    y = b.op("Squeeze", [y, axes], name=f"{n}/squeeze")  # (T, 1, N, u) -> (T, N, u)
    b.op("Transpose", [y], n, name=n, perm=[1, 0, 2])


def delay_function(opset: int):
    """netdsl.Delay(x, pads, value, starts, ends, axes) = Slice(Pad(x, pads, value), starts, ends, axes):
    |T| steps of initial_state padded on the time axis of (N, L, F), then L steps kept."""
    from onnx import helper

    nodes = [helper.make_node("Pad", ["x", "pads", "value"], ["padded"], mode="constant"),
             helper.make_node("Slice", ["padded", "starts", "ends", "axes"], ["y"])]
    return helper.make_function(DOMAIN, "Delay", ["x", "pads", "value", "starts", "ends", "axes"], ["y"], nodes,
                                [helper.make_opsetid("", opset)])


@converter("Delay")
def delay(b, layer, node, xs, ins, params):
    if "Delay" not in b.functions:
        b.functions["Delay"] = delay_function(b.opset)
    shift, n, p = int(layer.attr("T")), abs(int(layer.attr("T"))), layer.name
    pads = [0, shift, 0, 0, 0, 0] if shift > 0 else [0, 0, 0, 0, n, 0]
    starts, ends = ([0], [-n]) if shift > 0 else ([n], [np.iinfo(np.int64).max])
    args = [xs[0], b.const(f"{p}.pads", np.array(pads, np.int64)),
            b.const(f"{p}.initial_state", np.array(layer.attr("initial_state"), np.float32)),
            b.const(f"{p}.starts", np.array(starts, np.int64)), b.const(f"{p}.ends", np.array(ends, np.int64)),
            b.const(f"{p}.axes", np.array([1], np.int64))]
    lens = b.lengths.get(xs[0]) if shift < 0 else None
    if lens is not None:  # a padded batch: steps whose future step is padding read initial_state
        if "DelayOnLengths" not in b.functions:
            b.functions["DelayOnLengths"] = delay_on_lengths_function(b.opset)
        b.op("DelayOnLengths", args + [lens.lengths, b.const(f"{p}.shift", np.array(n, np.int64))], node.name,
             name=node.name, domain=DOMAIN)
        return
    b.op("Delay", args, node.name, name=node.name, domain=DOMAIN)


def delay_on_lengths_function(opset: int):
    """netdsl.DelayOnLengths(x, pads, value, starts, ends, axes, lengths, n): Delay(T = -n), then
    initial_state at every step t with t + n >= its sample's length (docs/ir.md)."""
    from onnx import TensorProto, helper

    def const(name, value):
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [], [value]))

    nodes = [helper.make_node("Pad", ["x", "pads", "value"], ["padded"], mode="constant"),
             helper.make_node("Slice", ["padded", "starts", "ends", "axes"], ["delayed"]),
             const("zero", 0), const("one", 1),
             helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "one"], ["steps"], axis=0),
             helper.make_node("Range", ["zero", "steps", "one"], ["t"]),
             helper.make_node("Add", ["t", "n"], ["reads"]),
             helper.make_node("Unsqueeze", ["lengths", "one"], ["limit"]),
             helper.make_node("GreaterOrEqual", ["reads", "limit"], ["beyond"]),  # (N, T)
             helper.make_node("Constant", [], ["last"], value=helper.make_tensor("last", TensorProto.INT64, [1], [-1])),
             helper.make_node("Unsqueeze", ["beyond", "last"], ["beyond3"]),
             helper.make_node("Where", ["beyond3", "value", "delayed"], ["y"])]
    return helper.make_function(DOMAIN, "DelayOnLengths",
                                ["x", "pads", "value", "starts", "ends", "axes", "lengths", "n"], ["y"], nodes,
                                [helper.make_opsetid("", opset)])
