"""One handler per ONNX op the importer maps onto the IR, registered in HANDLERS (a duplicate raises)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .. import shapes
from .export import LAYER_DOC
from .importer import ACTS, Val, _Refuse, fmt_float, name_hint
from .ops_seq import gates_from_onnx, gru_gates_swap

HANDLERS: dict = {}


def handles(*ops, domain: str = ""):
    def deco(fn):
        for op in ops:
            if (domain, op) in HANDLERS:
                raise ValueError(f"ONNX import handler for {op} registered twice")
            HANDLERS[(domain, op)] = fn
        return fn
    return deco


def attrs_of(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _s(v):
    return v.decode() if isinstance(v, bytes) else v


def _layer_doc(node) -> str | None:
    """The IR layer name netdsl's exporter wrote on this op, if it did."""
    return node.doc_string[len(LAYER_DOC):] if node.doc_string.startswith(LAYER_DOC) else None


def _hint(node) -> str:
    return _layer_doc(node) or name_hint(node.name or node.output[0], node.op_type)


def _doc_key(node) -> str | None:
    """Layers without weights are shared when netdsl's exporter says they are one layer."""
    doc = _layer_doc(node)
    return None if doc is None else "layer:" + doc


def _out_hint(node) -> str:
    o = node.output[0]
    return o if o.isidentifier() else _hint(node)


def _key(w, name):
    """The weight an op reads, as the initializer it came from: the same one twice is one shared layer."""
    return w.origins.get(name)


def _image(v: Val, what: str) -> None:
    if v.type.seq or len(v.type.shape) != 3:
        raise _Refuse(f"{what} needs an image (N, C, H, W), got {v.type.describe()}")


def _window_attrs(w, node, x: Val, kernel) -> tuple:
    """(strides, pads) from ONNX attributes, auto_pad resolved to explicit pads."""
    a = attrs_of(node)
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        raise _Refuse("dilations other than 1 have no IR spelling")
    if a.get("ceil_mode", 0):
        raise _Refuse("ceil_mode=1 has no IR spelling")
    strides = tuple(int(s) for s in a.get("strides", [1, 1]))
    auto = _s(a.get("auto_pad", "NOTSET"))
    _, h, wd = x.type.shape
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for size, k, s in ((h, kernel[0], strides[0]), (wd, kernel[1], strides[1])):
            out = -(-size // s)
            total = max((out - 1) * s + k - size, 0)
            small = total // 2
            pads.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
        pads = tuple(pads)
    elif auto == "VALID":
        pads = ((0, 0), (0, 0))
    else:
        p = [int(v) for v in a.get("pads", [0, 0, 0, 0])]
        pads = ((p[0], p[2]), (p[1], p[3]))
    return strides, pads


def _pad_spelling(x: Val, kernel, strides, pads):
    """True/False where the IR's own rules give these pads (readable .net), else the explicit pads."""
    _, h, wd = x.type.shape
    if pads == ((0, 0), (0, 0)):
        return False
    if pads == (shapes.same_pads(h, kernel[0], strides[0]), shapes.same_pads(wd, kernel[1], strides[1])):
        return True
    return pads


# ------------------------------------------------------------------ layers with weights
def _window_1d(w, node, x: Val, k: int) -> dict:
    """A 1-D window over the (N, F, T) transpose of a sequence: strides, pads and pad in the IR's terms."""
    a = attrs_of(node)
    if any(d != 1 for d in a.get("dilations", [1])):
        raise _Refuse("dilations other than 1 have no IR spelling")
    if a.get("ceil_mode", 0):
        raise _Refuse("ceil_mode=1 has no IR spelling")
    (s,) = (int(v) for v in a.get("strides", [1]))
    auto, size = _s(a.get("auto_pad", "NOTSET")), x.type.length
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        if size is None:
            raise _Refuse(f"auto_pad={auto} over a sequence of unknown length")
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads = (total // 2, total - total // 2) if auto == "SAME_UPPER" else (total - total // 2, total // 2)
    elif auto == "VALID":
        pads = (0, 0)
    else:
        p = [int(v) for v in a.get("pads", [0, 0])]
        pads = (p[0], p[1])
    same = shapes.same_pads(size if size is not None else k, k, s) if size is not None or s == 1 else None
    pad = False if pads == (0, 0) else True if pads == same else (pads,)
    return {"strides": (s,), "pads": (pads,), "pad": pad}


def _sequence_conv(w, node, v: Val):
    """Conv on the (N, F, T) transpose of a sequence: a 1-D Convolution; its result stays transposed until
    the Transpose that ends the pair."""
    x = w.need(replace(v, layout="c"), node)
    if attrs_of(node).get("group", 1) != 1:
        raise _Refuse("grouped convolution has no IR spelling")
    W = w.const(node.input[1])
    if W is None or W.ndim != 3:
        raise _Refuse("the weight of a 1-D Conv must be a constant (O, C, k) kernel")
    B = w.const(node.input[2]) if len(node.input) > 2 else None
    if len(node.input) > 2 and node.input[2] and B is None:
        raise _Refuse("the bias must be a constant")
    attrs = {"kernel": (int(W.shape[2]),), "filters": int(W.shape[0]), "activation": None, "bias": B is not None,
             **_window_1d(w, node, x, int(W.shape[2]))}
    params = {"W": W.astype(np.float32)} | ({"b": B.astype(np.float32)} if B is not None else {})
    y = w.apply("Convolution", attrs, [x], _out_hint(node), _hint(node), params, _key(w, node.input[1]))
    w.vals[node.output[0]] = replace(y, layout="nft")


@handles("Conv")
def conv(w, node):
    if w.vals[node.input[0]].layout == "nft":
        return _sequence_conv(w, node, w.vals[node.input[0]])
    no_channel = w.vals[node.input[0]].layout == "hw1"  # the Unsqueeze of a rank-2 value: reduction_rank=0
    x = w.need(replace(w.vals[node.input[0]], layout="c"), node) if no_channel else w.need(w.vals[node.input[0]], node)
    if not no_channel:
        _image(x, "Conv")
    a = attrs_of(node)
    if a.get("group", 1) != 1:
        raise _Refuse("grouped convolution has no IR spelling")
    W = w.const(node.input[1])
    if W is None or W.ndim != 4:
        raise _Refuse("the weight must be a constant 2-D kernel (O, C, kh, kw)")
    B = w.const(node.input[2]) if len(node.input) > 2 else None
    if len(node.input) > 2 and node.input[2] and B is None:
        raise _Refuse("the bias must be a constant")
    kernel = tuple(int(k) for k in W.shape[2:])
    image = replace(x, type=replace(x.type, shape=(1,) + tuple(x.type.shape))) if no_channel else x
    strides, pads = _window_attrs(w, node, image, kernel)
    attrs = {"kernel": kernel, "filters": int(W.shape[0]), "strides": strides, "pads": pads, "activation": None,
             "bias": B is not None}
    attrs["pad"] = _pad_spelling(image, kernel, strides, pads)
    if no_channel:
        attrs["reduction_rank"] = 0
    params = {"W": W.astype(np.float32)}
    if B is not None:
        params["b"] = B.astype(np.float32)
    w.vals[node.output[0]] = w.apply("Convolution", attrs, [x], _out_hint(node), _hint(node), params,
                                     _key(w, node.input[1]))


def _dense(w, node, x: Val, Wmat, bias, key, bias_from_add=False):
    # MatMul on a rank-2 value (N, A, B) maps over A: Dense(n, input_rank=1); after netdsl's own flatten
    # helper it is the plain Dense of the value before it
    maps = node.op_type == "MatMul" and x.pending is None and x.type is not None and len(x.type.shape) == 2
    if x.pending is not None and x.pending[0] == "flatten" and x.pending[2]:
        x = w.need(x.pending[1], node)  # netdsl's own Flatten before a Dense: the IR Dense flattens itself
    else:
        x = w.need(x, node)
    if x.type.vocab is not None:
        raise _Refuse("a Dense needs float features")
    attrs = {"units": int(Wmat.shape[0]), "activation": None, "bias": bias is not None}
    if maps:
        attrs["input_rank"] = 1
    params = {"W": np.ascontiguousarray(Wmat, np.float32)}
    if bias is not None:
        params["b"] = np.asarray(bias, np.float32).reshape(-1)
    return w.apply("Dense", attrs, [x], _out_hint(node), _hint(node), params, key)


@handles("Gemm")
def gemm(w, node):
    a = attrs_of(node)
    if a.get("transA", 0) or fmt_float(a.get("alpha", 1.0)) != 1.0 or fmt_float(a.get("beta", 1.0)) != 1.0:
        raise _Refuse("only Gemm with transA=0, alpha=1, beta=1 is a Dense")
    B = w.const(node.input[1])
    if B is None:
        raise _Refuse("the weight must be a constant")
    Wmat = B if a.get("transB", 0) else B.T
    C = w.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if C is not None and C.size != Wmat.shape[0]:
        raise _Refuse(f"bias of shape {C.shape} does not broadcast per unit")
    w.vals[node.output[0]] = _dense(w, node, w.vals[node.input[0]], Wmat, C, _key(w, node.input[1]))


@handles("MatMul")
def matmul(w, node):
    B = w.const(node.input[1])
    if B is None or B.ndim != 2:
        raise _Refuse("only a value times a constant 2-D weight is a Dense")
    w.vals[node.output[0]] = _dense(w, node, w.vals[node.input[0]], B.T, None, _key(w, node.input[1]))


@handles("Add")
def add(w, node):
    a, b = node.input[0], node.input[1]
    if w.const(a) is not None:
        a, b = b, a
    v, bias = w.vals.get(a), w.const(b)
    if bias is None and w.vals.get(b) is not None:
        return _two_tensors("add")(w, node)
    if v is not None and v.pending is not None and v.pending[0] == "rescale":
        return _rescale_step("Add")(w, node)
    if v is None or bias is None:
        raise _Refuse("an Add of a value and something that is neither a value nor a constant")
    if v.done and v.done[0] == "bias":
        w.vals[node.output[0]] = replace(v, done=v.done[1:])
        return
    layer = w.layers[w.apps[v.app].layer] if v.app is not None and w.apps[v.app].layer else None
    if (layer is None or layer.kind != "Dense" or layer.attrs["bias"] or layer.uses != 1 or v.done
            or w.uses.get(a, 0) != 1 or bias.size != layer.attrs["units"]):
        raise _Refuse("adding a constant is only a Dense's bias (MatMul + Add), used once")
    layer.attrs.update(bias=True, _bias_from_add=True)
    layer.params["b"] = np.asarray(bias, np.float32).reshape(-1)
    w.vals[node.output[0]] = w.rename(v, _out_hint(node))


@handles("Gather")
def gather(w, node):
    axis = attrs_of(node).get("axis", 0)
    E, idx = w.const(node.input[0]), w.const(node.input[1])
    if E is not None and idx is None:  # an embedding lookup
        ids = w.vals[node.input[1]]
        if axis != 0 or E.ndim != 2 or ids.type.vocab is None or ids.app is not None:
            raise _Refuse("only a lookup of a graph input's token ids in a 2-D table is an Embedding")
        if ids.type.vocab not in (0, E.shape[0]):
            raise _Refuse(f"token ids are already used with a vocabulary of {ids.type.vocab}")
        t = replace(ids.type, vocab=int(E.shape[0]))
        for inp in w.inputs:
            if inp.name == ids.name:
                inp.type = t
        ids = replace(ids, type=t)
        w.vals[node.output[0]] = w.apply("Embedding", {"dim": int(E.shape[1])}, [ids], _out_hint(node),
                                         _hint(node), {"E": E.astype(np.float32)}, _key(w, node.input[0]))
        return
    if idx is not None and idx.ndim == 0:
        x = w.need(w.vals[node.input[0]], node)
        i = int(idx)
        if x.type.seq and axis == 1 and (i == 0 or i == -1 or (x.type.length and i == x.type.length - 1)):
            func = "select_first" if i == 0 else "select_last"
            w.vals[node.output[0]] = w.apply(None, None, [x], _out_hint(node), _hint(node), func=func)
            return
    raise _Refuse("only an embedding lookup or the first/last time step of a sequence has an IR kind")


@handles("BatchNormalization")
def batch_norm(w, node):
    v = w.vals[node.input[0]]
    a = attrs_of(node)
    if a.get("training_mode", 0) or len(node.output) > 1 and any(node.output[1:]):
        raise _Refuse("training-mode BatchNormalization (with running-stat outputs) is not an inference model")
    consts = [w.const(i) for i in node.input[1:5]]
    if any(c is None for c in consts):
        raise _Refuse("scale, bias, mean and variance must be constants")
    transposed = v.layout == "nft"
    x = w.need(replace(v, layout="c") if transposed else v, node)
    if transposed and not x.type.seq:
        raise _Refuse("a transposed input must be a sequence")
    attrs = {"epsilon": fmt_float(a.get("epsilon", 1e-5)), "momentum": fmt_float(1.0 - a.get("momentum", 0.9))}
    params = dict(zip(("scale", "bias", "running_mean", "running_var"), (c.astype(np.float32) for c in consts)))
    if not transposed and x.type.seq:
        raise _Refuse("BatchNormalization of (N, T, F) normalises axis 1 (time); the IR normalises features")
    y = w.apply("BatchNormalization", attrs, [x], _out_hint(node), _hint(node), params, _key(w, node.input[1]))
    w.vals[node.output[0]] = replace(y, layout="nft") if transposed else y


@handles("LayerNormalization")
def layer_norm(w, node):
    x = w.need(w.vals[node.input[0]], node)
    a = attrs_of(node)
    rank = len(x.type.shape) + 1 + (1 if x.type.seq else 0)
    axis = a.get("axis", -1) % rank
    want = rank - 1 if x.type.seq else 1
    if axis != want:
        raise _Refuse(f"LayerNormalization from axis {axis}: the IR normalises axes {want}.. of this value")
    scale, bias = w.const(node.input[1]), w.const(node.input[2]) if len(node.input) > 2 else None
    if scale is None or bias is None:
        raise _Refuse("scale and bias must be constants")
    shape = x.type.shape
    params = {"scale": np.broadcast_to(scale, shape).astype(np.float32),
              "bias": np.broadcast_to(bias, shape).astype(np.float32)}
    w.vals[node.output[0]] = w.apply("LayerNormalization", {"epsilon": fmt_float(a.get("epsilon", 1e-5))}, [x],
                                     _out_hint(node), _hint(node), params, _key(w, node.input[1]))


@handles("LSTM")
def lstm(w, node):
    a = attrs_of(node)
    v = w.vals[node.input[0]]
    batch_first = a.get("layout", 0) == 1
    if (v.layout != "tnf") if not batch_first else (v.layout != "c"):
        raise _Refuse("the input must be the (T, N, F) transpose of a sequence (or layout=1 on the sequence)")
    direction = _s(a.get("direction", "forward"))
    if direction == "bidirectional":
        raise _Refuse("a bidirectional LSTM: write two Recurrence(LSTM) (one go_backwards) and splice them")
    peep = w.const(node.input[7]) if len(node.input) > 7 and node.input[7] else None
    extra = [i for k, i in enumerate(node.input[4:], 4)
             if i and k not in (5, 6) and not _lengths(w, i, k) and not (k == 7 and peep is not None)]
    state = initial_state(w, node, (5, 6))
    if extra or a.get("clip") is not None or a.get("input_forget", 0) or "activations" in a:
        raise _Refuse("sequence_lens, initial states, non-constant peepholes, clip and custom activations have no "
                      "IR spelling")
    if peep is not None and state:
        raise _Refuse("an LSTM with both peepholes and initial states has no IR spelling yet")
    if v.rev and direction != "forward":
        raise _Refuse("a reverse recurrence over reversed steps")
    if any(node.output[1:]) and any(w.uses.get(o, 0) for o in node.output[1:] if o):
        raise _Refuse("Y_h / Y_c are used: the IR's LSTM gives the hidden sequence (select_last for the last state)")
    W, R = w.const(node.input[1]), w.const(node.input[2])
    B = w.const(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    if W is None or R is None:
        raise _Refuse("W and R must be constants")
    n = int(a.get("hidden_size", R.shape[-1]))
    bias = np.zeros(4 * n, np.float32) if B is None else B[0, :4 * n] + B[0, 4 * n:]
    params = {"W": gates_from_onnx(W[0]).astype(np.float32), "H": gates_from_onnx(R[0]).astype(np.float32),
              "b": gates_from_onnx(bias).astype(np.float32)}
    if peep is not None:  # P (1, 3n): ONNX's order i, o, f
        ci, co, cf = (peep[0, k * n:(k + 1) * n].astype(np.float32) for k in range(3))
        params.update(Ci=ci, Cf=cf, Co=co)
        state = {**state, "peepholes": True}
    x = w.need(replace(v, layout="c", rev=False), node)
    attrs = {"units": n, "go_backwards": direction == "reverse" or v.rev, **state}
    y = w.apply("LSTM", attrs, [x], _out_hint(node), _hint(node), params, _key(w, node.input[1]))
    w.vals[node.output[0]] = replace(y, layout="y4b" if batch_first else "y4", rev=v.rev)


def initial_state(w, node, inputs: tuple) -> dict:
    """{"initial_state": v} when the op's initial states (inputs `inputs`: initial_h, and an LSTM's initial_c)
    all start every component at one constant v, {} for 0 or none; refused otherwise. A constant, or an
    Expand of one to the batch (netdsl's export; torch's zeros are batch-sized from Shape, folded to empty)."""
    values = []
    for k in inputs:
        name = node.input[k] if len(node.input) > k else ""
        if not name:
            values.append(0.0)
            continue
        src = next((nd for nd in w.nodes if name in nd.output), None)
        if src is not None and src.op_type == "Expand":
            name = src.input[0]
        c = w.const(name)
        flat = None if c is None else np.ravel(c)
        if flat is None or (flat.size and not np.all(flat == flat[0])):
            raise _Refuse("initial states other than one constant for every component have no IR spelling")
        values.append(float(flat[0]) if flat.size else 0.0)
    if any(v != values[0] for v in values):
        raise _Refuse("an LSTM whose initial h and c differ has no IR spelling (Recurrence's initial_state sets both)")
    return {"initial_state": fmt_float(values[0])} if values[0] else {}


def _lengths(w, name: str, k: int) -> bool:
    """Input k of an LSTM/GRU is sequence_lens from a padded batch's lengths (onnx/lengths.py)."""
    v = w.vals.get(name)
    return k == 4 and v is not None and v.layout == "lens"


@handles("ReverseSequence")
def reverse_sequence(w, node):
    """Each sample's valid steps reversed, around a forward recurrence: its go_backwards (onnx/lengths.py)."""
    v, lens = w.vals[node.input[0]], w.vals.get(node.input[1])
    a = attrs_of(node)
    if lens is None or lens.layout != "lens" or v.layout != "tnf" or (a.get("batch_axis"), a.get("time_axis")) != (1, 0):
        raise _Refuse("only a time-major reversal on a padded batch's lengths, around an LSTM or GRU, has an IR spelling")
    w.vals[node.output[0]] = replace(v, rev=not v.rev)


@handles("GatherND")
def gather_nd(w, node):
    """select_last on a padded batch: each sample's step lengths - 1 (onnx/lengths.py)."""
    lens = w.vals.get(node.input[1])
    if lens is None or lens.layout != "lens" or attrs_of(node).get("batch_dims", 0) != 1:
        raise _Refuse("only a padded batch's select_last (its lengths - 1, batch_dims=1) has an IR kind")
    x = w.need(w.vals[node.input[0]], node)
    if not x.type.seq:
        raise _Refuse("select_last reads a sequence")
    w.vals[node.output[0]] = w.apply(None, None, [x], _out_hint(node), _hint(node), func="select_last")


@handles("GRU")
def gru(w, node):
    a = attrs_of(node)
    v = w.vals[node.input[0]]
    batch_first = a.get("layout", 0) == 1
    if (v.layout != "tnf") if not batch_first else (v.layout != "c"):
        raise _Refuse("the input must be the (T, N, F) transpose of a sequence (or layout=1 on the sequence)")
    direction = _s(a.get("direction", "forward"))
    if direction == "bidirectional":
        raise _Refuse("a bidirectional GRU: write two Recurrence(GRU) (one go_backwards) and splice them")
    extra = [i for k, i in enumerate(node.input[4:], 4) if i and k != 5 and not _lengths(w, i, k)]
    state = initial_state(w, node, (5,))
    if extra or a.get("clip") is not None or "activations" in a:
        raise _Refuse("sequence_lens, initial states, clip and custom activations have no IR spelling")
    if v.rev and direction != "forward":
        raise _Refuse("a reverse recurrence over reversed steps")
    if any(node.output[1:]) and any(w.uses.get(o, 0) for o in node.output[1:] if o):
        raise _Refuse("Y_h is used: the IR's GRU gives the hidden sequence (select_last for the last state)")
    W, R = w.const(node.input[1]), w.const(node.input[2])
    B = w.const(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    if W is None or R is None:
        raise _Refuse("W and R must be constants")
    n = int(a.get("hidden_size", R.shape[-1]))
    B = np.zeros((1, 6 * n), np.float32) if B is None else B
    reset_after = bool(a.get("linear_before_reset", 0))
    params = {"W": gru_gates_swap(W[0]).astype(np.float32), "H": gru_gates_swap(R[0]).astype(np.float32)}
    if reset_after:
        params["b"] = gru_gates_swap(B[0, :3 * n]).astype(np.float32)
        params["bh"] = gru_gates_swap(B[0, 3 * n:]).astype(np.float32)
    else:  # every recurrent bias is outside the reset gate then: one bias
        params["b"] = gru_gates_swap(B[0, :3 * n] + B[0, 3 * n:]).astype(np.float32)
    x = w.need(replace(v, layout="c", rev=False), node)
    attrs = {"units": n, "go_backwards": direction == "reverse" or v.rev, "reset_after": reset_after, **state}
    y = w.apply("GRU", attrs, [x], _out_hint(node), _hint(node), params, _key(w, node.input[1]))
    w.vals[node.output[0]] = replace(y, layout="y4b" if batch_first else "y4", rev=v.rev)


# ------------------------------------------------------------------ layers without weights
def _sequence_pool(w, node, kind):
    """MaxPool/AveragePool on the (N, F, T) transpose of a sequence: a 1-D pooling (see _sequence_conv).
    A MaxPool may read a Pad of -inf (layout "nft-pad:<before>:<after>"), the exporter's form of its pads."""
    v = w.vals[node.input[0]]
    x = w.need(replace(v, layout="c"), node)
    a = attrs_of(node)
    if len(node.output) > 1 and any(node.output[1:]):
        raise _Refuse("the Indices output has no IR spelling")
    if len(a["kernel_shape"]) != 1:
        raise _Refuse("a pooling of a transposed sequence must have a 1-D window")
    k = int(a["kernel_shape"][0])
    attrs = {"window": (k,), **_window_1d(w, node, x, k)}
    if v.layout.startswith("nft-pad:"):
        if kind != "MaxPooling" or attrs["pads"] != ((0, 0),):
            raise _Refuse("a Pad of -inf in front of a pooling that pads as well (or averages) has no IR spelling")
        before, after = (int(d) for d in v.layout.split(":")[1:])
        attrs["pads"] = ((before, after),)
        same = shapes.same_pads(x.type.length or k, k, attrs["strides"][0])
        attrs["pad"] = True if (x.type.length is not None or attrs["strides"][0] == 1) and (before, after) == same \
            else attrs["pads"]
    if kind == "AveragePooling" and a.get("count_include_pad", 0) and attrs["pads"] != ((0, 0),):
        raise _Refuse("count_include_pad=1 with padding: the IR's average excludes the pads")
    y = w.apply(kind, attrs, [x], _out_hint(node), _hint(node), key=_doc_key(node))
    w.vals[node.output[0]] = replace(y, layout="nft")


@handles("Pad")
def pad(w, node):
    """A constant Pad of -inf on the time axis of a transposed sequence: the pads of the MaxPool after it."""
    v = w.vals[node.input[0]]
    a = attrs_of(node)
    pads = w.const(node.input[1]) if len(node.input) > 1 else None
    value = w.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    ok = (v.layout == "nft" and _s(a.get("mode", "constant")) == "constant" and pads is not None
          and value is not None and float(value) == -np.inf and len(node.input) < 4)
    p = [int(d) for d in pads] if ok else []
    if not ok or len(p) != 6 or p[0] or p[1] or p[3] or p[4]:
        raise _Refuse("only a Pad of -inf on the time axis of a transposed sequence, before a MaxPool, has an IR "
                      "spelling")
    w.vals[node.output[0]] = replace(v, layout=f"nft-pad:{p[2]}:{p[5]}")


def _pool(kind):
    def handler(w, node):
        if w.vals[node.input[0]].layout == "nft" or w.vals[node.input[0]].layout.startswith("nft-pad:"):
            return _sequence_pool(w, node, kind)
        x = w.need(w.vals[node.input[0]], node)
        _image(x, node.op_type)
        a = attrs_of(node)
        if len(node.output) > 1 and any(node.output[1:]):
            raise _Refuse("the Indices output has no IR spelling")
        if a.get("storage_order", 0):
            raise _Refuse("storage_order=1 has no IR spelling")
        window = tuple(int(k) for k in a["kernel_shape"])
        strides, pads = _window_attrs(w, node, x, window)
        if kind == "AveragePooling" and a.get("count_include_pad", 0) and pads != ((0, 0), (0, 0)):
            raise _Refuse("count_include_pad=1 with padding: the IR's average excludes the pads")
        attrs = {"window": window, "strides": strides, "pads": pads}
        attrs["pad"] = _pad_spelling(x, window, strides, pads)
        w.vals[node.output[0]] = w.apply(kind, attrs, [x], _out_hint(node), _hint(node), key=_doc_key(node))
    return handler


handles("MaxPool")(_pool("MaxPooling"))
handles("AveragePool")(_pool("AveragePooling"))


def _global_pool(kind):
    def handler(w, node):
        x = w.need(w.vals[node.input[0]], node)
        _image(x, node.op_type)
        window = tuple(x.type.shape[1:])
        attrs = {"window": window, "strides": (1, 1), "pads": ((0, 0), (0, 0)), "pad": False}
        w.vals[node.output[0]] = w.apply(kind, attrs, [x], _out_hint(node), _hint(node), key=_doc_key(node))
    return handler


handles("GlobalAveragePool")(_global_pool("AveragePooling"))
handles("GlobalMaxPool")(_global_pool("MaxPooling"))


@handles("Relu", "Sigmoid", "Tanh", "Softmax")
def activation(w, node):
    apply_activation(w, node, ACTS[node.op_type])


def apply_activation(w, node, act):
    """The IR activation act (its spelling) on the node's input: fused into the Dense or Convolution before
    it when netdsl's exporter wrote it that way, else an Activation layer."""
    v = w.vals[node.input[0]]
    if v.done and v.done[0] == act:
        w.vals[node.output[0]] = replace(v, done=v.done[1:])
        return
    if act == "softmax" and v.type is not None:
        rank = len(v.type.shape) + 1 + (1 if v.type.seq else 0)
        axis = attrs_of(node).get("axis", -1) % rank
        if axis != (1 if (not v.type.seq and len(v.type.shape) == 3) else rank - 1):
            raise _Refuse(f"softmax over axis {axis}: the IR's softmax runs over the feature axis")
    app = w.apps[v.app] if v.app is not None and not v.done and v.pending is None and v.layout == "c" else None
    layer = w.layers.get(app.layer) if app and app.layer else None
    doc = _layer_doc(node)  # netdsl's exporter names the layer an op belongs to: an Activation layer stays one
    if (layer is not None and layer.kind in ("Dense", "Convolution") and layer.attrs["activation"] is None
            and layer.uses == 1 and w.uses.get(node.input[0], 0) == 1 and doc in (None, layer.name)):
        layer.attrs["activation"] = act
        w.vals[node.output[0]] = w.rename(v, _out_hint(node))
        return
    x = w.need(v, node)
    w.vals[node.output[0]] = w.apply("Activation", {"activation": act}, [x], _out_hint(node), _hint(node),
                                     key=_doc_key(node))


@handles("Dropout")
def dropout(w, node):
    if len(node.input) > 2 and node.input[2]:
        mode = w.const(node.input[2])
        if mode is None or bool(mode):
            raise _Refuse("training_mode must be a constant false")
    ratio = w.const(node.input[1]) if len(node.input) > 1 and node.input[1] else attrs_of(node).get("ratio", 0.5)
    if ratio is None:
        raise _Refuse("the ratio must be a constant")
    x = w.need(w.vals[node.input[0]], node)
    w.vals[node.output[0]] = w.apply("Dropout", {"rate": fmt_float(ratio)}, [x], _out_hint(node), _hint(node),
                                     key=_doc_key(node))


@handles("Identity")
def identity(w, node):
    w.vals[node.output[0]] = w.vals[node.input[0]]


@handles("Flatten")
def flatten(w, node):
    v = w.vals[node.input[0]]
    if attrs_of(node).get("axis", 1) != 1 or v.type.seq:
        raise _Refuse("only Flatten(axis=1) of a non-sequence has an IR kind")
    w.vals[node.output[0]] = Val(None, replace(v.type, shape=(int(np.prod(v.type.shape)),)),
                                 pending=("flatten", v, node.name.endswith("/flatten"), _hint(node), _doc_key(node)))


@handles("Reshape")
def reshape(w, node):
    v = w.vals[node.input[0]]
    shape = w.const(node.input[1])
    if shape is None:
        raise _Refuse("the target shape must be a constant")
    shape = [int(s) for s in shape]
    size = int(np.prod(v.type.shape))
    lead = [0, 0] if v.type.seq else [0]
    if _dense_to_tensor(w, node, v, shape, lead):
        return
    ok_lead = all(s in (0, -1) for s in shape[:len(lead)]) and shape.count(-1) <= 1
    if len(shape) == len(lead) + 1 and ok_lead and shape[-1] in (-1, size) and (shape[-1] != -1 or -1 not in shape[:-1]):
        w.vals[node.output[0]] = Val(None, replace(v.type, shape=(size,)),
                                     pending=("flatten", v, node.name.endswith("/flatten"), _hint(node), _doc_key(node)))
        return
    raise _Refuse(f"only a flatten of each sample (shape {lead + [-1]}) has an IR kind, got {shape}")


def _dense_to_tensor(w, node, v: Val, shape: list, lead: list) -> bool:
    """A Dense's (N, 12) output reshaped to (N, 3, 4), as netdsl's exporter writes Dense((3, 4)): the Dense gets
    out_shape (before its activation, which the exporter spells after the Reshape)."""
    if v.done and v.done[0] == "reshape":  # a shared Dense((3, 4)) already makes the tensor
        w.vals[node.output[0]] = replace(v, done=v.done[1:])
        return True
    app = w.apps[v.app] if v.app is not None and not v.done and v.pending is None and v.layout == "c" else None
    layer = w.layers.get(app.layer) if app and app.layer else None
    dims = shape[len(lead):]
    if (layer is None or layer.kind != "Dense" or layer.attrs.get("out_shape") or layer.attrs.get("input_rank")
            or layer.attrs["activation"] is not None or layer.uses != 1 or w.uses.get(node.input[0], 0) != 1
            or shape[:len(lead)] != lead or len(dims) != 2 or any(d <= 0 for d in dims)
            or v.type.shape != (layer.attrs["units"],) or dims[0] * dims[1] != layer.attrs["units"]):
        return False
    layer.attrs["out_shape"] = tuple(dims)
    r = w.rename(v, _out_hint(node))
    w.vals[node.output[0]] = replace(r, type=replace(v.type, shape=tuple(dims)))
    return True


@handles("Transpose")
def transpose(w, node):
    v = w.vals[node.input[0]]
    perm = tuple(attrs_of(node).get("perm", ()))
    moves = {((1, 0, 2), "c"): "tnf", ((1, 0, 2), "tnf"): "c", ((0, 2, 1), "c"): "nft", ((0, 2, 1), "nft"): "c"}
    if v.type is not None and v.type.seq and (perm, v.layout) in moves and not v.rev:
        base = w.need(v, node) if v.layout == "c" else v
        out = replace(base, layout=moves[(perm, v.layout)])
        if out.layout == "c" and out.app is not None:  # the end of the pair names the layer's value
            out = replace(w.rename(out, _out_hint(node)), type=out.type)
        w.vals[node.output[0]] = out
        return
    raise _Refuse(f"a Transpose {list(perm)} that is not half of a pair around an LSTM or BatchNormalization")


@handles("Squeeze")
def squeeze(w, node):
    v = w.vals[node.input[0]]
    axes = w.const(node.input[1]) if len(node.input) > 1 else attrs_of(node).get("axes")
    axes = [int(a) for a in np.atleast_1d(axes)] if axes is not None else None
    if v.layout == "y4" and axes in ([1], [-3]):
        w.vals[node.output[0]] = replace(v, layout="tnf")
    elif v.layout == "y4b" and axes in ([2], [-2]):
        w.vals[node.output[0]] = replace(v, layout="c")
    elif not _conv_without_filter_axis(w, node, v, axes):
        raise _Refuse("only the num_directions axis of an LSTM's output, or the one filter axis of a Conv's, "
                      "can be squeezed")


def _conv_without_filter_axis(w, node, v: Val, axes) -> bool:
    """A one-filter Conv's (N, 1, H', W') output squeezed to (N, H', W'), as netdsl's exporter writes a
    Convolution without num_filters: the Convolution gets no_filter_axis (before its activation)."""
    app = w.apps[v.app] if v.app is not None and not v.done and v.pending is None and v.layout == "c" else None
    layer = w.layers.get(app.layer) if app and app.layer else None
    if (layer is None or layer.kind != "Convolution" or len(layer.attrs["kernel"]) != 2
            or layer.attrs.get("no_filter_axis") or layer.attrs["activation"] is not None or layer.uses != 1
            or w.uses.get(node.input[0], 0) != 1 or axes not in ([1], [-3]) or layer.attrs["filters"] != 1):
        return False
    layer.attrs["no_filter_axis"] = True
    r = w.rename(v, _out_hint(node))
    w.vals[node.output[0]] = replace(r, type=replace(v.type, shape=tuple(v.type.shape[1:])))
    return True


@handles("Concat")
def concat(w, node):
    xs = [w.need(w.vals[i], node) for i in node.input]
    t = xs[0].type
    rank = len(t.shape) + 1 + (1 if t.seq else 0)
    axis = attrs_of(node)["axis"] % rank
    if axis != (1 if (not t.seq and len(t.shape) == 3) else rank - 1):
        raise _Refuse(f"Concat along axis {axis}: the IR's splice joins channels (images) or features")
    w.vals[node.output[0]] = w.apply(None, None, xs, _out_hint(node), _hint(node), func="splice")


def _two_tensors(func):
    """Add, Sub or Mul of two values of one type: an Elementwise node (`a + b` in the .net)."""
    def handler(w, node):
        xs = [w.need(w.vals[i], node) for i in node.input]
        w.vals[node.output[0]] = w.apply(None, None, xs, _out_hint(node), _hint(node), func=func)
    return handler


def _rescale_step(op):
    def handler(w, node):
        a, b = node.input[0], node.input[1]
        c = w.const(b)
        v = w.vals.get(a)
        if op in ("Sub", "Mul") and c is None and w.const(a) is None and w.vals.get(b) is not None:
            return _two_tensors(op.lower())(w, node)
        if c is None or c.size != 1 or v is None:
            raise _Refuse(f"{op} of two tensors, or of a non-scalar constant, has no IR kind "
                          f"(only Input scale/mean/std)")
        c = float(c.reshape(()))
        inp = next((i for i in w.inputs if i.name == v.name and v.app is None and v.pending is None), None)
        if op == "Mul" and inp is not None:
            w.vals[node.output[0]] = Val(None, v.type, pending=("rescale", inp, c, 0.0, 1.0))
            return
        p = v.pending
        if p is None or p[0] != "rescale":
            raise _Refuse(f"{op} by a constant is only the scaling of an input (Input(..., scale=, mean=, std=))")
        _, inp, scale, mean, std = p
        if op == "Sub" and std == 1.0 and mean == 0.0:
            mean = c
        elif op == "Add" and std == 1.0 and mean == 0.0:
            mean = -c
        elif op == "Div" and std == 1.0:
            std = c
        else:
            raise _Refuse(f"{op} after this input's scaling is not (x * scale - mean) / std")
        w.vals[node.output[0]] = Val(None, v.type, pending=("rescale", inp, scale, mean, std))
    return handler


handles("Mul")(_rescale_step("Mul"))
handles("Sub")(_rescale_step("Sub"))
handles("Div")(_rescale_step("Div"))


@handles("CosineDistance", domain="netdsl")
def cosine(w, node):
    xs = [w.need(w.vals[i], node) for i in node.input]
    w.vals[node.output[0]] = w.apply(None, None, xs, _out_hint(node), _hint(node), func="cosine_distance")


@handles("Stabilizer", domain="netdsl")
def stabilizer(w, node):
    alpha, steepness = w.const(node.input[1]), w.const(node.input[2])
    if alpha is None or steepness is None or np.shape(alpha) != () or np.shape(steepness) != ():
        raise _Refuse("alpha and steepness must be scalar constants")
    x = w.need(w.vals[node.input[0]], node)
    w.vals[node.output[0]] = w.apply("Stabilizer", {"steepness": fmt_float(steepness)}, [x], _out_hint(node),
                                     _hint(node), {"alpha": np.asarray(alpha, np.float32)}, _key(w, node.input[1]))


@handles("Delay", "DelayOnLengths", domain="netdsl")
def delay(w, node):
    """netdsl's own Delay function: T and initial_state read back from its pads and pad value."""
    pads, value = w.const(node.input[1]), w.const(node.input[2])
    if pads is None or value is None or np.shape(pads) != (6,) or np.shape(value) != ():
        raise _Refuse("pads and the pad value must be constants")
    before, after = int(pads[1]), int(pads[4])
    if (before > 0) == (after > 0) or any(int(pads[k]) for k in (0, 2, 3, 5)):
        raise _Refuse("exactly one end of the time axis must be padded")
    x = w.need(w.vals[node.input[0]], node)
    attrs = {"T": before or -after, "initial_state": fmt_float(value)}
    w.vals[node.output[0]] = w.apply("Delay", attrs, [x], _out_hint(node), _hint(node), key=_doc_key(node))


def _reduce_positions(kind):
    """ReduceMean / ReduceMax over the positions of an image, keepdims=0: the global pools."""
    def handler(w, node):
        x = w.need(w.vals[node.input[0]], node)
        _image(x, node.op_type)
        a = attrs_of(node)
        axes = a.get("axes")
        if axes is None and len(node.input) > 1:
            axes = w.const(node.input[1])
        axes = None if axes is None else sorted(int(v) % 4 for v in np.ravel(axes))
        if axes != [2, 3] or a.get("keepdims", 1) != 0:
            raise _Refuse("only a reduction over the positions (axes 2 and 3, keepdims=0) has an IR spelling")
        w.vals[node.output[0]] = w.apply(kind, {}, [x], _out_hint(node), _hint(node), key=_doc_key(node))
    return handler


handles("ReduceMean")(_reduce_positions("GlobalAveragePooling"))
handles("ReduceMax")(_reduce_positions("GlobalMaxPooling"))


@handles("Elu", "LeakyRelu", "Softplus", "HardSigmoid")
def activation_with_attributes(w, node):
    from ..layers.common import spell_activation

    a = attrs_of(node)
    if node.op_type == "Elu":
        if abs(a.get("alpha", 1.0) - 1.0) > 1e-6:
            raise _Refuse("an Elu alpha other than 1 has no IR spelling (the IR's elu is CNTK's, alpha 1)")
        act = "elu"
    elif node.op_type == "LeakyRelu":
        alpha = fmt_float(a.get("alpha", 0.01))
        if not 0 <= alpha <= 1:
            raise _Refuse(f"LeakyRelu alpha {alpha} is outside the IR's [0, 1]")
        act = spell_activation("leaky_relu", {"alpha": alpha})
    elif node.op_type == "HardSigmoid":
        if abs(a.get("alpha", 0.2) - 1 / 6) > 1e-6 or abs(a.get("beta", 0.5) - 0.5) > 1e-6:
            raise _Refuse("only HardSigmoid(alpha=1/6, beta=0.5) is the IR's hard_sigmoid (relu6(x + 3) / 6)")
        act = "hard_sigmoid"
    else:
        act = "softplus"
    apply_activation(w, node, act)


@handles("Silu", "Gelu", "GeluTanh", domain="netdsl")
def activation_function(w, node):
    apply_activation(w, node, {"Silu": "silu", "Gelu": "gelu(approximate=False)",
                               "GeluTanh": "gelu(approximate=True)"}[node.op_type])


@handles("Unsqueeze")
def unsqueeze(w, node):
    """Axis 1 of a rank-2 (N, H, W) value, as netdsl's exporter writes a Convolution with reduction_rank=0:
    the Conv that reads it takes the value itself."""
    v = w.vals[node.input[0]]
    axes = w.const(node.input[1]) if len(node.input) > 1 else attrs_of(node).get("axes")
    axes = [int(a) for a in np.atleast_1d(axes)] if axes is not None else None
    if v.layout != "c" or v.type is None or v.type.seq or v.type.vocab is not None or len(v.type.shape) != 2 \
            or axes not in ([1], [-3]):
        raise _Refuse("only axis 1 of a rank-2 value, in front of a Conv, can be unsqueezed")
    w.vals[node.output[0]] = replace(v, layout="hw1")
