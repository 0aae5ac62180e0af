"""The Keras 3 target: keras.Sequential for plain stacks, the functional API otherwise.

Inside Keras images are channels_last (NHWC), so the generated module
converts at its edges: predict/train_step take and return canonical arrays,
and load/export_netdsl_weights convert the weights (Dense kernels transposed,
OIHW -> HWIO, and a Dense after an NHWC flatten gets its input rows reordered).

Per layer kind, a function lists the Keras layers a netdsl layer becomes and
where its weights go; context() decides what the per-layer functions cannot
see: flatten order, LSTM + select_last fusion, sharing, Sequential or not.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

from .. import ir
from ..layers.common import split_activation
from . import common as C
from . import keras_training
from .base import EmitBug, Target, ident
from .common import Code, call, lit
from .names import template_names
from .passes.keras_flatten import flatten_modes
from .passes.lstm_fusion import fused_lstms
from .passes.masks import RECURRENCES, length_sources

TEMPLATE = "keras/module.py.j2"
BUILD_NAMES = ("keras", "layers", "ops", "np", "float", "NegInfPadding2D", "AveragePooling2DExcludePad",
               "TorchBatchNormalization", "GRUInputBias", "Delay", "LengthMask", "SelectLast", "ProjectedLSTMCell",
               "CNTKLSTMCell", "CNTKGRUCell")

INIT_DEFAULTS = {"kernel_initializer": "glorot_uniform", "bias_initializer": "zeros",
                 "recurrent_initializer": "orthogonal", "embeddings_initializer": "uniform"}


@functools.lru_cache(maxsize=None)
def keras_init(init: str):
    kind, arg = C.parse_init(init)
    if kind in ("glorot_uniform", "he_uniform", "zeros", "ones"):
        return kind
    if kind == "glorot_normal":  # Keras's own glorot_normal is truncated; netdsl's (and PyTorch's) is not
        return call("keras.initializers.VarianceScaling", 1.0, "fan_avg", "untruncated_normal")
    if kind == "he_normal":
        return call("keras.initializers.VarianceScaling", 2.0, "fan_in", "untruncated_normal")
    if kind == "uniform":
        return call("keras.initializers.RandomUniform", -arg, arg)
    if kind == "normal":
        return call("keras.initializers.RandomNormal", stddev=arg)
    if kind == "constant":
        return call("keras.initializers.Constant", arg)
    raise EmitBug(f"no Keras initialiser for {init}")


def init_kwargs(layer: ir.Layer, **which) -> dict:
    """{keras argument: initialiser} for the parameters whose netdsl initialiser is not Keras's default."""
    out = {}
    params = {p.name: p for p in layer.params}
    for short, arg in which.items():
        p = params.get(f"{layer.name}.{short}")
        if p is None:
            continue
        value = keras_init(p.init)
        if value != INIT_DEFAULTS[arg]:
            out[arg] = value
    return out


@dataclass
class KLayer:
    """One Keras layer: layers.<cls>(args..., kwargs..., name=<netdsl name><suffix>)."""

    suffix: str  # "" for the layer that owns the weights
    func: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    comment: str = ""


@dataclass
class KerasView:
    kind: str
    layers: list = field(default_factory=list)  # KLayer, applied in order
    weights: list = field(default_factory=list)  # (canonical name, conversion) in layer.get_weights() order
    after: str | None = None  # an op applied to the result in the functional API ("flip")
    helper: str | None = None  # a helper class the code needs


# IR activations whose Keras 3 string is the same function (Keras 3's hard_sigmoid is relu6(x + 3) / 6 and
# its gelu the exact erf form, as the IR's); the others become a layer of their own (_act_layer)
KERAS_ACTS = ("relu", "sigmoid", "tanh", "softmax", "elu", "softplus", "silu", "hard_sigmoid",
              "gelu(approximate=False)")


def _act_kwargs(layer: ir.Layer) -> dict:
    act = layer.attr("activation")
    return {"activation": act.split("(")[0]} if act in KERAS_ACTS else {}


def _act_layer(act: str | None, suffix: str) -> list:
    """The Keras layer for an IR activation no Keras activation string spells with its parameters."""
    if act is None or act in KERAS_ACTS:
        return []
    name, params = split_activation(act)
    if name == "leaky_relu":  # the IR's slope, never Keras's defaults (0.3 for the layer, 0.2 for the function)
        return [KLayer(suffix, "layers.LeakyReLU", (), {"negative_slope": params["alpha"]})]
    if name == "gelu":
        return [KLayer(suffix, "layers.Activation", (Code(f"lambda v: keras.ops.gelu(v, approximate={params['approximate']})"),))]
    raise EmitBug(f"no Keras spelling for the activation {act}")


def _first_type(idx, layer) -> ir.TensorType:
    return idx.first_input_type(layer)


def _max_norm(layer: ir.Layer, axis) -> dict:
    """max_norm as Keras's own MaxNorm constraint, which its optimizers apply after every update (the
    IR's definition: per output unit, epsilon 1e-7, the bias untouched)."""
    m = layer.attr("max_norm")
    return {} if m is None else {"kernel_constraint": call("keras.constraints.MaxNorm", m, axis=axis)}


def dense(idx, layer):
    kwargs = _act_kwargs(layer)
    if not layer.attr("bias"):
        kwargs["use_bias"] = False
    kwargs.update(init_kwargs(layer, W="kernel_initializer", b="bias_initializer"))
    kwargs.update(_max_norm(layer, 0))  # the (in, out) kernel: each unit's column
    weights = [(layer.param("W").name, "dense")] + ([(layer.param("b").name, None)] if layer.attr("bias") else [])
    shape = layer.attr("out_shape")  # Dense((3, 4)): Keras's Reshape is row-major, as the IR
    lead = (-1,) if idx.first_input_type(layer).seq else ()  # the time axis, when a sequence
    reshape = [] if shape is None else [KLayer("_shape", "layers.Reshape", (lead + tuple(shape),))]
    return KerasView("Dense", [KLayer("", "layers.Dense", (layer.attr("units"),), kwargs)]
                     + reshape + _act_layer(layer.attr("activation"), "_act"), weights)


def convolution(idx, layer):
    if C.is_1d_window(layer):
        return convolution_1d(idx, layer)
    pads = C.Pads.of(layer.attr("pads"))
    kernel, strides = tuple(layer.attr("kernel")), tuple(layer.attr("strides"))
    kwargs = {}
    if strides != (1, 1):
        kwargs["strides"] = strides
    out = []
    if layer.attr("reduction_rank") == 0:  # a row-major (H, W) value: the one-channel NHWC image (H, W, 1)
        out.append(KLayer("_channel", "layers.Reshape", (tuple(idx.first_input_type(layer).shape) + (1,),)))
    if pads.zero:
        pass
    elif C.same_is_exact(pads, kernel, strides):
        kwargs["padding"] = "same"
    else:
        out.append(KLayer("_pad", "layers.ZeroPadding2D", (pads.keras,)))
    kwargs.update(_act_kwargs(layer))
    if not layer.attr("bias"):
        kwargs["use_bias"] = False
    kwargs.update(init_kwargs(layer, W="kernel_initializer", b="bias_initializer"))
    kwargs.update(_max_norm(layer, [0, 1, 2]))  # the HWIO kernel: each filter's H, W, I
    out.append(KLayer("", "layers.Conv2D", (layer.attr("filters"), kernel), kwargs))
    if layer.attr("no_filter_axis"):  # num_filters left out: (H', W', 1) is the row-major rank-2 (H', W')
        out.append(KLayer("_squeeze", "layers.Reshape", (tuple(idx.applications[layer.name][0].type.shape),)))
    out += _act_layer(layer.attr("activation"), "_act")
    weights = [(layer.param("W").name, "conv")] + ([(layer.param("b").name, None)] if layer.attr("bias") else [])
    return KerasView("Convolution", out, weights)


def _same_1d(pads, k: int, s: int) -> bool:
    """Keras's padding="same" at stride 1 pads (k-1)//2 before and the rest after: netdsl's pad=True."""
    return s == 1 and tuple(pads) == ((k - 1) // 2, k - 1 - (k - 1) // 2)


def convolution_1d(idx, layer):
    """Conv1D over (N, T, F), F the channels, as Keras lays a sequence out; kernel (k, F, O) is W (O, F, k)
    with its axes reversed, which is the "dense" conversion (array.T)."""
    (pads,), k, s = layer.attr("pads"), layer.attr("kernel")[0], layer.attr("strides")[0]
    kwargs = {"strides": s} if s != 1 else {}
    out = []
    if pads == (0, 0):
        pass
    elif _same_1d(pads, k, s):
        kwargs["padding"] = "same"
    else:
        out.append(KLayer("_pad", "layers.ZeroPadding1D", (tuple(pads),)))
    kwargs.update(_act_kwargs(layer))
    if not layer.attr("bias"):
        kwargs["use_bias"] = False
    kwargs.update(init_kwargs(layer, W="kernel_initializer", b="bias_initializer"))
    out.append(KLayer("", "layers.Conv1D", (layer.attr("filters"), k), kwargs))
    out += _act_layer(layer.attr("activation"), "_act")
    weights = [(layer.param("W").name, "dense")] + ([(layer.param("b").name, None)] if layer.attr("bias") else [])
    return KerasView("Convolution", out, weights)


def _pool_1d(idx, layer, cls):
    """MaxPooling1D/AveragePooling1D where Keras's own padding is netdsl's; else the 2-D pooling over the
    (N, T, 1, F) image of the sequence, window k x 1, whose helpers pad with -inf or count real cells."""
    (pads,), k, s = layer.attr("pads"), layer.attr("window")[0], layer.attr("strides")[0]
    kwargs = {} if s == k else {"strides": s}
    if pads == (0, 0) or _same_1d(pads, k, s):
        if pads != (0, 0):
            kwargs["padding"] = "same"
        return KerasView(layer.kind, [KLayer("", cls.replace("2D", "1D"), (k,), kwargs)])
    f = idx.first_input_type(layer).shape[0]
    two_d = C.with_attrs(layer, {"window": (k, 1), "strides": (s, 1), "pads": (tuple(pads), (0, 0))})
    view = _pool(idx, two_d, cls)
    view.layers = ([KLayer("_image", "layers.Reshape", ((-1, 1, f),))] + view.layers
                   + [KLayer("_seq", "layers.Reshape", ((-1, f),))])
    return view


def _pool(idx, layer, cls):
    if C.is_1d_window(layer):
        return _pool_1d(idx, layer, cls)
    pads = C.Pads.of(layer.attr("pads"))
    window, strides = tuple(layer.attr("window")), tuple(layer.attr("strides"))
    kwargs = {} if strides == window else {"strides": strides}
    view = KerasView(layer.kind)
    if pads.zero:
        pass
    elif C.same_is_exact(pads, window, strides):
        kwargs["padding"] = "same"
    elif cls == "layers.MaxPooling2D":
        view.layers.append(KLayer("_pad", "NegInfPadding2D", (((pads.top, pads.bottom), (pads.left, pads.right)),)))
        view.helper = "neginf"
    else:
        padding = ((pads.top, pads.bottom), (pads.left, pads.right))
        view.layers.append(KLayer("", "AveragePooling2DExcludePad", (window,), {"strides": strides, "padding": padding}))
        view.helper = "avgpool"
        return view
    view.layers.append(KLayer("", cls, (window,), kwargs))
    return view


def max_pooling(idx, layer):
    return _pool(idx, layer, "layers.MaxPooling2D")


def average_pooling(idx, layer):
    return _pool(idx, layer, "layers.AveragePooling2D")


def dropout(idx, layer):
    return KerasView("Dropout", [KLayer("", "layers.Dropout", (layer.attr("rate"),))])


def embedding(idx, layer):
    p = layer.param("E")
    fixed = {"trainable": False} if layer.attr("weights") else {}  # a constant, loaded from the weights file
    if idx.first_input_type(layer).vocab is None:  # float vectors: x @ E, E (V, dim) is the kernel as is
        kwargs = {"use_bias": False, **init_kwargs(layer, E="kernel_initializer"), **fixed}
        return KerasView("Embedding", [KLayer("", "layers.Dense", (p.shape[1],), kwargs)], [(p.name, None)])
    kwargs = {**init_kwargs(layer, E="embeddings_initializer"), **fixed}
    return KerasView("Embedding", [KLayer("", "layers.Embedding", (p.shape[0], p.shape[1]), kwargs)], [(p.name, None)])


def lstm(idx, layer):
    kwargs = {"return_sequences": True}
    if layer.attr("go_backwards"):
        kwargs["go_backwards"] = True
    if layer.attr("peepholes") or layer.attr("stabilize"):
        return _cntk_lstm(layer, kwargs)
    if layer.attr("cell") is not None:
        return _projected_lstm(layer, kwargs)
    kwargs.update(init_kwargs(layer, W="kernel_initializer", H="recurrent_initializer", b="bias_initializer"))
    kwargs["unit_forget_bias"] = False  # netdsl initialises the forget gate's bias like the others
    view = KerasView("LSTM", [KLayer("", "layers.LSTM", (layer.attr("units"),), kwargs)],
                     [(layer.param("W").name, "dense"), (layer.param("H").name, "dense"), (layer.param("b").name, None)])
    if layer.attr("go_backwards"):
        view.after = "flip"
    return view


def _projected_lstm(layer, kwargs):
    """LSTM(n, cell_shape=c): Keras 3's LSTM has no projection; layers.RNN over the module's
    ProjectedLSTMCell (gates i, f, c, o as Keras's LSTMCell, h = (o * tanh(c)) @ projection, no bias)."""
    inits = {}  # the cell's defaults are netdsl's: glorot_uniform, zeros for the bias
    for short, key in (("W", "kernel_initializer"), ("H", "recurrent_initializer"), ("b", "bias_initializer"),
                       ("P", "projection_initializer")):
        value = keras_init(layer.param(short).init)
        if value != ("zeros" if short == "b" else "glorot_uniform"):
            inits[key] = value
    cell = call("ProjectedLSTMCell", layer.attr("units"), layer.attr("cell"), **inits)
    view = KerasView("LSTM", [KLayer("", "layers.RNN", (cell,), kwargs)],
                     [(layer.param(s).name, None if s == "b" else "dense") for s in ("W", "H", "b", "P")],
                     helper="projected_lstm")
    if layer.attr("go_backwards"):
        view.after = "flip"
    return view


def _cntk_lstm(layer, kwargs):
    """LSTM(n, use_peepholes=True or enable_self_stabilization=True): Keras 3's LSTM has neither;
    layers.RNN over the module's CNTKLSTMCell (gates i, f, c, o as Keras's LSTMCell; peepholes i, f, o;
    the projection if cell_shape; the stabilizers' alphas)."""
    have = {p.name.rsplit(".", 1)[1] for p in layer.params}
    inits = {}  # the cell's defaults are netdsl's: glorot_uniform, zeros for the bias
    for short, key in (("W", "kernel_initializer"), ("H", "recurrent_initializer"), ("b", "bias_initializer"),
                       ("Ci", "peephole_initializer"), ("P", "projection_initializer")):
        if short in have:
            value = keras_init(layer.param(short).init)
            if value != ("zeros" if short == "b" else "glorot_uniform"):
                inits[key] = value
    opts = {k: True for k, present in (("projection", "P" in have), ("peepholes", "Ci" in have),
                                        ("stabilize", "Sdh" in have)) if present}
    cell = call("CNTKLSTMCell", layer.attr("units"), layer.attr("cell") or layer.attr("units"), **opts, **inits)
    # in the cell's weight order (build())
    order = ("W", "H", "b", "Ci", "Cf", "Co", "P", "Sdh", "Sdc", "Sct", "Sht")
    params = [(layer.param(s).name, "dense" if s in ("W", "H", "P") else None) for s in order if s in have]
    view = KerasView("LSTM", [KLayer("", "layers.RNN", (cell,), kwargs)], params, helper="cntk_lstm")
    if layer.attr("go_backwards"):
        view.after = "flip"
    return view


def _wrap(kl: KLayer, code: str, indent: int) -> list:
    """The lines of a statement building a Keras layer: a layers.RNN's cell is a call inside the
    call, which only layout() lays out the way ruff format keeps it."""
    if kl.func == "layers.RNN":  # relative to `indent`, as wrap_call's lines are
        first, *rest = C.layout(code, indent).split("\n")
        return [first] + [line[indent:] for line in rest]
    return C.wrap_call(code, indent)


def gru(idx, layer):
    # Keras's gates are z, r, n (swapped on load and export); reset_after=True has one (2, 3n) bias whose
    # rows are netdsl's b and bh
    reset_after = bool(layer.attr("reset_after"))
    kwargs = {"return_sequences": True, "reset_after": reset_after}
    if layer.attr("go_backwards"):
        kwargs["go_backwards"] = True
    kwargs.update(init_kwargs(layer, W="kernel_initializer", H="recurrent_initializer", b="bias_initializer"))
    helper = None
    if reset_after and "bias_initializer" in kwargs:  # init_bias starts b, not bh: the first row only
        kwargs["bias_initializer"] = call("GRUInputBias", kwargs["bias_initializer"])
        helper = "gru_bias"
    weights = [(layer.param("W").name, "gru"), (layer.param("H").name, "gru")]
    if reset_after:
        weights += [(layer.param("b").name, "gru_bias_in"), (layer.param("bh").name, "gru_bias_rec")]
    else:
        weights.append((layer.param("b").name, "gru_bias"))
    if layer.attr("stabilize"):  # enable_self_stabilization (reset_after=False): layers.RNN over CNTKGRUCell
        cell_keys = ("reset_after", "kernel_initializer", "recurrent_initializer", "bias_initializer")
        cell = call("CNTKGRUCell", layer.attr("units"), **{k: v for k, v in kwargs.items() if k in cell_keys})
        rnn = {k: v for k, v in kwargs.items() if k not in cell_keys}
        weights.append((layer.param("Sdh").name, None))  # after the cell's kernel, recurrent_kernel, bias
        view = KerasView("GRU", [KLayer("", "layers.RNN", (cell,), rnn)], weights, helper="cntk_gru")
    else:
        view = KerasView("GRU", [KLayer("", "layers.GRU", (layer.attr("units"),), kwargs)], weights, helper=helper)
    if layer.attr("go_backwards"):
        view.after = "flip"
    return view


def _norm_initializers(layer, kwargs):
    """gamma/beta initializers where the .net file sets them (init_scale, initial_scale, initial_bias)."""
    for short, key in (("scale", "gamma_initializer"), ("bias", "beta_initializer")):
        init = layer.param(short).init
        if init != ("ones" if short == "scale" else "zeros"):
            kwargs[key] = keras_init(init)
    return kwargs


def batch_norm(idx, layer):
    kwargs = {"momentum": round(1 - layer.attr("momentum"), 15), "epsilon": layer.attr("epsilon")}
    _norm_initializers(layer, kwargs)
    return KerasView("BatchNormalization", [KLayer("", "TorchBatchNormalization", (), kwargs)],
                     [(layer.param(s).name, None) for s in ("scale", "bias", "running_mean", "running_var")],
                     helper="batchnorm")


def layer_norm(idx, layer):
    t = _first_type(idx, layer)
    first = 2 if t.seq else 1
    axes = tuple(range(first, first + len(t.shape)))  # every sample axis (per time step for sequences)
    kwargs = {} if len(axes) == 1 else {"axis": axes}
    kwargs["epsilon"] = layer.attr("epsilon")
    _norm_initializers(layer, kwargs)
    conv = "chw" if C.is_image(t) else None
    return KerasView("LayerNormalization", [KLayer("", "layers.LayerNormalization", (), kwargs)],
                     [(layer.param("scale").name, conv), (layer.param("bias").name, conv)])


def activation(idx, layer):
    act = layer.attr("activation")
    if act not in KERAS_ACTS:
        return KerasView("Activation", _act_layer(act, ""))
    return KerasView("Activation", [KLayer("", "layers.Activation", (act.split("(")[0],))])


def rescale(idx, layer):
    scale, mean, std = layer.attr("scale"), layer.attr("mean"), layer.attr("std")
    if std == 1.0:
        s = Code(C.number(scale))
    elif scale == 1.0:
        s = Code(f"1 / {C.number(std)}")
    else:
        s = Code(f"{C.number(scale)} / {C.number(std)}")
    kwargs = {}
    if mean != 0.0:
        kwargs["offset"] = Code(C.number(-mean) if std == 1.0 else f"{C.number(-mean)} / {C.number(std)}")
    return KerasView("Rescale", [KLayer("", "layers.Rescaling", (s,), kwargs)])


def flatten(idx, layer):
    return KerasView("Flatten")  # context() decides: alias, Flatten, or Permute + Flatten


def splice(idx, layer):
    t = _first_type(idx, layer)
    axis = -1 if C.is_image(t) else C.feature_axis(t)
    return KerasView("Splice", [KLayer("", "layers.Concatenate", (), {} if axis == -1 else {"axis": axis})])


def select(kind):
    def f(idx, layer):
        return KerasView(kind)  # context(): fused into the LSTM before it, or x[:, -1] / x[:, 0]
    return f


def cosine(idx, layer):
    return KerasView("CosineDistance", [KLayer("", "layers.Dot", (), {"axes": 1, "normalize": True})])


def stabilizer(idx, layer):
    alpha = layer.param("alpha")
    kwargs = {"steepness": layer.attr("steepness"), "alpha_initializer": keras_init(alpha.init)}
    return KerasView("Stabilizer", [KLayer("", "Stabilizer", (), kwargs)], [(alpha.name, None)], helper="stabilizer")


def elementwise(idx, layer):
    func = {"add": "layers.Add", "sub": "layers.Subtract", "mul": "layers.Multiply"}[layer.attr("op")]
    return KerasView("Elementwise", [KLayer("", func)])


def delay(idx, layer):
    kwargs = {"shift": int(layer.attr("T")), "initial_state": float(layer.attr("initial_state"))}
    return KerasView("Delay", [KLayer("", "Delay", (), kwargs)], helper="delay")


def global_pooling(idx, layer):
    # NHWC inside Keras; the result is (N, C) as the IR's
    cls = "layers.GlobalAveragePooling2D" if layer.kind == "GlobalAveragePooling" else "layers.GlobalMaxPooling2D"
    return KerasView(layer.kind, [KLayer("", cls)])


LAYERS = {
    "Dense": dense,
    "Convolution": convolution,
    "MaxPooling": max_pooling,
    "AveragePooling": average_pooling,
    "Dropout": dropout,
    "Embedding": embedding,
    "LSTM": lstm,
    "BatchNormalization": batch_norm,
    "LayerNormalization": layer_norm,
    "Activation": activation,
    "Rescale": rescale,
    "Flatten": flatten,
    "Splice": splice,
    "SelectLast": select("SelectLast"),
    "SelectFirst": select("SelectFirst"),
    "CosineDistance": cosine,
    "Stabilizer": stabilizer,
    "Elementwise": elementwise,
    "GRU": gru,
    "Delay": delay,
    "GlobalAveragePooling": global_pooling,
    "GlobalMaxPooling": global_pooling,
}

# -------------------------------------------------------------------- context
@dataclass
class NodePlan:
    """The Keras layers one node becomes, after context-level decisions."""

    layers: list  # KLayer
    after: str | None = None
    op: str | None = None  # an expression template for ops ({0} = input)
    alias: bool = False
    flatten_inputs: list = field(default_factory=list)  # inputs to flatten first (cosine of images)
    lengths: str | None = None  # padded batches: "mask" (a recurrence's mask=) or "lengths" (a 2nd argument)
    initial_state: float | None = None  # a recurrence's constant initial state, when not 0 (initial_state=)


def plan_nodes(graph: ir.Graph, idx: C.GraphIndex, views: dict) -> tuple:
    sites, dense_chw = flatten_modes(idx)
    plans = {}
    fused_lstm = fused_lstms(idx)
    sources = length_sources(idx)
    for n in graph.nodes:
        layer = idx.layers[n.layer]
        view = views[n.layer]
        t = idx.types[n.inputs[0]] if n.inputs else None
        klayers = list(view.layers)
        plan = NodePlan(klayers, view.after)
        if layer.kind == "LSTM" and n.layer in fused_lstm:
            main = klayers[0]
            kwargs = {k: v for k, v in main.kwargs.items() if k != "return_sequences"}
            plan = NodePlan([KLayer("", main.func, main.args, kwargs,
                                    "  # its last state: the select_last" if not layer.attr("go_backwards") else
                                    "  # its final state, which netdsl puts at position 0: the select_first")])
        elif layer.kind in ("SelectLast", "SelectFirst"):
            if idx.producer.get(n.inputs[0]) is not None and idx.producer[n.inputs[0]].layer in fused_lstm:
                plan = NodePlan([], alias=True)
            else:
                plan = NodePlan([], op="{0}[:, %d]" % (-1 if layer.kind == "SelectLast" else 0))
        elif layer.kind == "Flatten":
            if len(t.shape) <= 1:
                plan = NodePlan([], alias=True)
            else:
                flat = _flatten_layers(t, sites.get(n.name))
                flat[-1] = KLayer("", flat[-1].func, flat[-1].args, flat[-1].kwargs, flat[-1].comment)
                plan = NodePlan(flat)
        elif layer.kind == "Dense" and len(t.shape) > 1 and not layer.attr("map_axes"):  # else: the last axis
            plan = NodePlan(_flatten_layers(t, sites.get(n.name)) + klayers)
        elif layer.kind == "Dense" and C.is_image(t):  # input_rank=2: each channel's (H, W) map, in C order
            c, h, w = t.shape
            plan = NodePlan([KLayer("_chw", "layers.Permute", ((3, 1, 2),), comment="  # netdsl's (C, H, W) order"),
                             KLayer("_flatten", "layers.Reshape", ((c, h * w),))] + klayers)
        elif layer.kind == "CosineDistance":
            plan = NodePlan(klayers, flatten_inputs=[i for i, v in enumerate(n.inputs) if len(idx.types[v].shape) > 1])
        if layer.kind in RECURRENCES and layer.attr("initial_state"):
            plan.initial_state = layer.attr("initial_state")
        if n.inputs and n.inputs[0] in sources and not plan.alias:
            plan.lengths = _length_use(layer, plan)
        plans[n.name] = plan
    return plans, dense_chw, fused_lstm


def _length_use(layer: ir.Layer, plan: NodePlan) -> str | None:
    """How a node on a padded batch reads its input's lengths (docs/ir.md), or None: a recurrence takes
    Keras's mask= (a backward one then starts at each sample's last valid step, a fused one returns the
    state there), select_last and a future Delay take the lengths themselves."""
    if layer.kind in RECURRENCES:
        return "mask"
    if layer.kind == "SelectLast":
        plan.op = None
        plan.layers = [KLayer("", "SelectLast")]
        return "lengths"
    if layer.kind == "Delay" and layer.attr("T") < 0:
        return "lengths"
    return None


def _flatten_layers(t: ir.TensorType, mode: str | None) -> list:
    if t.seq:
        return [KLayer("_flatten", "layers.Reshape", ((-1, C.sample_size(t)),))]
    if C.is_image(t) and mode == "nchw":
        return [KLayer("_chw", "layers.Permute", ((3, 1, 2),), comment="  # flatten in netdsl's (C, H, W) order"),
                KLayer("_flatten", "layers.Flatten")]
    return [KLayer("_flatten", "layers.Flatten")]


def keras_shape(t: ir.TensorType) -> tuple:
    """The Keras Input shape (no batch axis): images channels_last."""
    if C.is_image(t):
        c, h, w = t.shape
        return (h, w, c)
    return ((t.length,) if t.seq else ()) + tuple(t.shape)


def keras_batch_shape(t: ir.TensorType) -> tuple:
    return (None,) + keras_shape(t)


def context(idx: C.GraphIndex, views: dict) -> dict:
    graph = idx.graph
    plans, dense_chw, fused = plan_nodes(graph, idx, views)
    knames = C.Names()  # Keras layer names: unique strings in the whole model
    for i in graph.inputs:
        knames.of("input:" + i.name, i.name)
    for layer in graph.layers:
        knames.of(layer.name)
    for gr in graph.groups:
        knames.of("group:" + gr.name, gr.name)

    def kname(layer_name: str, kl: KLayer) -> str:
        """The Keras name of a layer's main layer (its netdsl name) or of a helper (netdsl name + suffix)."""
        return knames.of(layer_name) if not kl.suffix else knames.of("aux:" + layer_name + kl.suffix,
                                                                      layer_name + kl.suffix)

    def render(layer_name: str, kl: KLayer) -> str:
        return str(call(kl.func, *kl.args, **kl.kwargs, name=kname(layer_name, kl)))

    steps = C.node_steps(graph)
    for s in steps:
        s.alias = plans[s.output].alias
    def pure(n: ir.Node) -> bool:
        """A node that is only Keras layers applied to one input: it can go in a Sequential."""
        p = plans[n.name]
        return (not p.alias and p.op is None and p.after is None and len(n.inputs) == 1 and not p.flatten_inputs
                and p.lengths is None and p.initial_state is None)

    sequential = _is_sequential(graph, idx, steps, plans, pure)
    chains = {} if sequential else C.group_chains(idx, pure)
    group_of_layer = {lname: g for g in chains for lname in idx.group_layers(g)}

    # the weight table: canonical name -> (shape, Keras layer path, index in get_weights(), conversion)
    weights = []
    conversions = set()
    for layer in graph.layers:
        view = views[layer.name]
        path = knames.of(layer.name)
        if layer.name in group_of_layer:
            path = knames.of("group:" + group_of_layer[layer.name]) + "/" + path
        for i, (pname, conv) in enumerate(view.weights):
            if conv == "dense" and layer.kind == "Dense" and dense_chw.get(layer.name):
                conv = tuple(dense_chw[layer.name])
                conversions.add("nhwc_dense")
            elif conv:
                conversions.add(conv)
            # a reset_after GRU's bh is the second row of the bias that b is the first of
            weights.append((pname, path, i - 1 if conv == "gru_bias_rec" else i, conv))
    shapes = {p.name: tuple(p.shape) for p in graph.params()}
    order = {name: k for k, name in enumerate(shapes)}
    weights.sort(key=lambda w: order[w[0]])
    weights = [C.table_row(name, shapes[name], path, i, conv) for name, path, i, conv in weights]

    # the module's own names and the builtins it calls: a user's value is a local of build_model(),
    # predict() or train_step() and must not shadow one of them
    module_own = template_names(TEMPLATE, ()) | {"INPUTS", "OUTPUTS"}
    locals_ = C.Names(set(BUILD_NAMES) | module_own)
    inputs = [{"name": i.name, "local": locals_.of(i.name), "shape": keras_shape(i.type),
               "dtype": "int32" if C.is_ids(i.type) else None} for i in graph.inputs]
    input_lines = []
    for i in inputs:
        kwargs = {"shape": i["shape"]}
        if i["dtype"]:
            kwargs["dtype"] = i["dtype"]
        kwargs["name"] = knames.of("input:" + i["name"])
        input_lines.append(f"{i['local']} = {call('keras.Input', **kwargs)}")
    length_inputs, length_of = _length_inputs(idx, plans, knames, locals_, inputs, input_lines)

    def entry_lines(layer_name: str, kl: KLayer) -> list:
        """A layer as an entry of a Sequential list (indented 12): its comment above it, wrapped if long."""
        head = [f"# {kl.comment.strip().lstrip('#').strip()}"] if kl.comment else []
        return head + _wrap(kl, render(layer_name, kl) + ",", 12)

    body, seq_layers = [], []
    if sequential:
        for n in graph.nodes:
            for kl in plans[n.name].layers:
                seq_layers += entry_lines(n.layer, kl)
    else:
        # layers applied more than once, and groups that are plain chains, are made once, before the graph
        shared_var = {}
        for g, cs in chains.items():
            var = locals_.of("group:" + g, g)
            shared_var["group:" + g] = var
            entries = []
            for lname in idx.group_layers(g):
                n = idx.applications[lname][0]
                for kl in plans[n.name].layers:
                    entries += entry_lines(lname, kl)
            body.append({"sequential": entries, "var": var, "name": knames.of("group:" + g)})
        chain_nodes = {name: g for g, cs in chains.items() for c in cs for name in c}
        shared_lines = []
        for n in graph.nodes:
            if n.name in chain_nodes or not idx.shared(n.layer):
                continue
            for kl in plans[n.name].layers:
                key = (n.layer, kl.suffix)
                if key not in shared_var:
                    shared_var[key] = locals_.of("layer:" + kname(n.layer, kl), kname(n.layer, kl))
                    shared_lines += _wrap(kl, f"{shared_var[key]} = {render(n.layer, kl)}", 4)
        if shared_lines:
            body.append({"comment": "layers applied more than once: one set of weights"})
            body += [{"line": line} for line in shared_lines]
        steps = C.collapse_chains(graph, steps, [c for cs in chains.values() for c in cs])
        for s in steps:
            if s.nodes[0].name in chain_nodes:
                s.alias = False
        local = C.assign_locals(idx, steps, locals_)
        for s in steps:
            if s.alias:
                continue
            args = [local[v] for v in s.inputs]
            out = local[s.output]
            if s.nodes[0].name in chain_nodes:
                body.append({"line": f"{out} = {shared_var['group:' + chain_nodes[s.nodes[0].name]]}({args[0]})"})
                continue
            n = s.node
            plan = plans[n.name]
            if plan.op is not None:
                body.append({"line": f"{out} = {plan.op.format(*args)}"})
                continue
            for i in plan.flatten_inputs:
                fname = knames.of(f"aux:{n.layer}_flatten_{i}", f"{n.layer}_flatten_{i}")
                flat = locals_.of(f"flat:{n.name}:{i}", f"{args[i]}_flat")
                body.append({"line": f"{flat} = {call('layers.Flatten', name=fname)}({args[i]})"})
                args[i] = flat
            cur = args[0] if len(args) == 1 else "[" + ", ".join(args) + "]"
            state = ""
            if plan.initial_state is not None:
                state = _initial_state(n, idx.layers[n.layer], plan, cur, locals_, body)
            for k, kl in enumerate(plan.layers):
                fn = shared_var.get((n.layer, kl.suffix)) or render(n.layer, kl)
                more = state + length_of(n, plan) if not kl.suffix else ""
                if kl.comment and more:  # above the call: after it, the line would be too long
                    body.append({"comment": kl.comment.strip().lstrip("#").strip()})
                for line in _wrap(kl, f"{out} = {fn}({cur}{more})", 4):
                    body.append({"line": line})
                if kl.comment and not more:
                    body[-1]["line"] += kl.comment
                cur = out
            if plan.after == "flip":
                flip = f"{out} = ops.flip({out}, axis=1)  # Keras returns a backward LSTM's states last-first"
                body.append({"line": C.layout(flip, 4)})  # the comment goes above when the line is too long
        returns = [local[o] for o in graph.outputs]
        if length_inputs and any(idx.types[o].seq for o in graph.outputs):
            # train_step weighs the loss by the lengths itself: Keras would weigh it again by the
            # mask a recurrence's output carries, so the outputs carry none
            body.append({"comment": "outputs without Keras's mask: train_step weighs the loss by the lengths"})
            for o in dict.fromkeys(graph.outputs):
                if idx.types[o].seq:
                    body.append({"line": f"{local[o]} = ops.copy({local[o]})"})
        model = call("keras.Model", inputs=Code(_list([inp["local"] for inp in inputs]
                                                     + [li["local"] for li in length_inputs])),
                     outputs=Code(_list(returns)), name=graph.name)
        if length_inputs:  # the lengths inputs make the line long: one argument per line
            body += [{"line": line} for line in C.wrap_call(f"return {model}", 4)]
        else:
            body.append({"return": model})

    training = C.training_dict(graph)
    loss = (graph.training or ir.Training()).loss
    fn_names = C.Names({"model", "trainer", "inputs", "targets", "outputs"} | module_own)
    outputs = []
    for k, o in enumerate(graph.outputs):
        image = C.is_image(idx.types[o])
        local = fn_names.of(o)
        back = ".transpose(0, 3, 1, 2)" if image else ""
        outputs.append({"name": o, "local": local, "shape": C.batch_shape(idx.types[o]), "image": image,
                        "back": local + back, "back_multi": f"outputs[{k}]{back}"})
    # the training block's loss is on the first output (as in netdsl's native training); the others get none
    n_rest = len(outputs) - 1
    kt = keras_training.context(graph.training)
    for inp, i in zip(inputs, graph.inputs):
        x = f"inputs[{lit(i.name)}]"
        if C.is_ids(i.type):
            inp["expr"] = f"np.asarray({x}, dtype=np.int32)"
        else:
            inp["expr"] = f"np.asarray({x}, dtype=np.float32)" + (".transpose(0, 2, 3, 1)" if C.is_image(i.type) else "")
    data = C.dataset_plan(idx)
    if data["ok"]:
        data.update(input=graph.inputs[0].name, output=graph.outputs[0])
        data["one_hot"] = loss != "cross_entropy_with_softmax"  # main() trains on int labels
    helpers = {v.helper for v in views.values() if v.helper}
    helpers |= {"length_mask" for p in plans.values() if p.lengths == "mask"}
    helpers |= {"select_last" for p in plans.values() if p.lengths and p.layers and p.layers[0].func == "SelectLast"}
    loss_source = length_sources(idx).get(graph.outputs[0]) if idx.types[graph.outputs[0]].seq else None
    return {
        "model_name": graph.name,
        "inputs": inputs,
        "shape_tables": C.shape_tables(idx),
        "outputs": outputs,
        "training": training,
        "weights": weights,
        "conversions": conversions,
        "sequential": sequential,
        "seq_layers": seq_layers,
        "input_lines": input_lines,
        "body": body,
        "helpers": helpers,
        "uses_ops": True,  # TrainingLoss is written with ops
        "pointwise_strided": any(l.kind == "Convolution" and set(l.attr("kernel")) == {1}
                                 and max(l.attr("strides")) > 1 for l in graph.layers),
        "optimizer": C.wrap_call(f"trainer = {kt['optimizer_code']}", 4),
        "schedule_lines": keras_training.schedule_lines(kt["schedule"]),
        "keras_training": kt,
        "script": keras_training.script_settings(graph.training),
        "compile_call": _compile_call("loss" if not n_rest else "[loss" + ", None" * n_rest + "]"),
        "predict_line": C.layout(f"{outputs[0]['local']} = keras.ops.convert_to_numpy("
                                 "model(keras_inputs(inputs), training=False))", 4),
        "target_rank": len(C.batch_shape(idx.types[graph.outputs[0]])),
        "target_back": ".transpose(0, 2, 3, 1)" if outputs[0]["image"] else "",
        "target_return": "targets" if not n_rest else "[targets" + ", None" * n_rest + "]",
        "loss_doc": keras_training.loss_doc(graph, kt),
        "data": data,
        "doc": C.docstring(f"{ident(graph.name)} from {C.doc_source(graph)}: "
                           f"{C.signature_text(idx, keras_batch_shape)}.", 4),
        "nhwc": any(C.is_image(t) for t in idx.types.values()),
        # padded batches (docs/ir.md): predict/train_step take lengths when there are sequence inputs
        "seq_inputs": [i.name for i in graph.inputs if i.type.seq],
        "length_inputs": length_inputs,
        "loss_source": loss_source,
    }


def _compile_call(loss_arg: str) -> str:
    """make_trainer's model.compile(...) at indent 4, as ruff format keeps it: the arguments on a
    line of their own while they fit there, else one per line (layout())."""
    args = f"optimizer=trainer, loss={loss_arg}, metrics=metrics, jit_compile=jit_compile"
    if 8 + len(args) <= C.WIDTH:
        return f"model.compile(\n        {args}\n    )"
    return C.layout(f"model.compile({args})", 4)


def _length_inputs(idx: C.GraphIndex, plans: dict, knames, locals_, inputs: list, input_lines: list) -> tuple:
    """The model's (N,) int32 lengths inputs, one per sequence input some node reads the lengths of
    ([{"name", "local"}], appended to input_lines, after the data inputs, with the (N, T) masks
    LengthMask makes), and length_of(node, plan): the extra call arguments of that node."""
    sources = length_sources(idx)
    local_of = {i["name"]: i["local"] for i in inputs}
    used = {}
    for n in idx.graph.nodes:
        p = plans[n.name]
        if p.lengths:
            used.setdefault(sources[n.inputs[0]], set()).add(p.lengths)
    length_inputs, lens, masks = [], {}, {}
    for i in idx.graph.inputs:
        if i.name not in used:
            continue
        lens[i.name] = locals_.of("\0lengths:" + i.name, f"{i.name}_lengths")
        length_inputs.append({"name": i.name, "local": lens[i.name]})
        kname = knames.of("input:\0lengths:" + i.name, f"{i.name}_lengths")
        input_lines.append(f"{lens[i.name]} = {call('keras.Input', shape=(), dtype='int32', name=kname)}")
    for i in idx.graph.inputs:
        if "mask" in used.get(i.name, ()):
            masks[i.name] = locals_.of("\0mask:" + i.name, f"{i.name}_mask")
            mask_layer = call("LengthMask", name=knames.of("aux:\0mask:" + i.name, f"{i.name}_mask"))
            input_lines.append(f"{masks[i.name]} = {mask_layer}({local_of[i.name]}, {lens[i.name]})")

    def length_of(n: ir.Node, plan: NodePlan) -> str:
        if not plan.lengths:
            return ""
        src = sources[n.inputs[0]]
        return f", mask={masks[src]}" if plan.lengths == "mask" else f", {lens[src]}"
    return length_inputs, length_of


def _initial_state(n: ir.Node, layer: ir.Layer, plan: NodePlan, x: str, locals_, body: list) -> str:
    """Recurrence's initial_state as Keras's initial_state= argument: a constant (N, units) state, h and
    an LSTM's c alike, made from the batch size of the input x (a line appended to body)."""
    local = locals_.of("\0state:" + n.name, f"{n.layer}_state")
    value = C.number(plan.initial_state)
    body.append({"line": f"{local} = ops.tile(ops.full_like({x}[:, 0, :1], {value}), (1, {layer.attr('units')}))"})
    states = f"{local}, {local}" if layer.kind == "LSTM" else local
    return f", initial_state=[{states}]"


def _list(items) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else "[" + ", ".join(items) + "]"


def _is_sequential(graph, idx, steps, plans, pure) -> bool:
    """A plain stack: one input, one output, each step reads the previous one, only layers, no sharing."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        return False
    prev = graph.inputs[0].name
    for s in steps:
        n = s.node
        if s.alias:
            if n.inputs != (prev,):
                return False
            prev = n.name
            continue
        if not pure(n) or n.inputs != (prev,) or idx.shared(n.layer):
            return False
        prev = n.name
    return prev == graph.outputs[0]


def check(idx: C.GraphIndex) -> list:
    graph = idx.graph
    return C.check_inits(graph, "keras") + C.check_activations(graph, "keras") + C.check_shapes(idx, "keras")


# the shared runtime flags the script honours (emit/base.py RUNTIME_FLAGS): --device picks a Keras device,
# --amp a mixed-precision policy, --compile sets jit_compile=True, --checkpoint writes a .keras file per epoch
TARGET = Target("keras", TEMPLATE, LAYERS, context, check,
                extras={"flags": ("--device", "--amp", "--compile", "--checkpoint"),
                        "training": keras_training.HONOURED})
