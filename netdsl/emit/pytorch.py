"""The PyTorch target: one nn.Module subclass per model, in canonical (NCHW) layout.

Per layer kind, a function computes a TorchLayer: the nn.Module to construct
(if any), what goes around it (explicit pads, the activation, a flatten) and
where its parameters live. context() then decides the module structure: a
group whose every application is a plain chain becomes one nn.Sequential
(used once per application, so sharing is one module); everything else is an
attribute of its own, and forward() is a topological walk over both.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .. import ir
from ..errors import Diagnostic
from ..layers.common import split_activation
from ..layers.elementwise import OPS
from . import common as C
from . import pytorch_train as T
from .base import Target, ident
from .common import Code, call, lit
from .names import template_names
from .passes.masks import RECURRENCES, bidirectional_pairs, length_sources

# nn.Module attributes a submodule must not shadow (self.eval = nn.Linear(...) would be unreachable)
TEMPLATE = "pytorch/module.py.j2"
MODULE_ATTRS = frozenset("""
    T_destination add_module apply bfloat16 buffers call_super_init children compile cpu cuda double
    dump_patches eval extra_repr float forward get_buffer get_extra_state get_parameter get_submodule half
    ipu load_state_dict modules mtia named_buffers named_children named_modules named_parameters parameters
    register_backward_hook register_buffer register_forward_hook register_forward_pre_hook
    register_full_backward_hook register_full_backward_pre_hook register_load_state_dict_post_hook
    register_load_state_dict_pre_hook register_module register_parameter register_state_dict_post_hook
    register_state_dict_pre_hook requires_grad_ set_extra_state set_submodule share_memory state_dict to
    to_empty train training type xpu zero_grad reset_parameters dump_patches
""".split())
# what forward() refers to, so locals must not shadow them
FORWARD_NAMES = ("self", "torch", "nn", "F", "float")

# module-level names this file renders into the template (template_names reads the rest from it)
RENDERED_NAMES = frozenset({"INPUTS", "OUTPUTS", "WEIGHT_SHAPES", "compute_loss"})

ACT_MODULE = {"relu": "nn.ReLU", "sigmoid": "nn.Sigmoid", "tanh": "nn.Tanh", "softmax": "nn.Softmax",
              "elu": "nn.ELU", "softplus": "nn.Softplus", "silu": "nn.SiLU", "hard_sigmoid": "nn.Hardsigmoid"}
ACT_FN = {"relu": "F.relu", "sigmoid": "torch.sigmoid", "tanh": "torch.tanh", "softmax": "F.softmax",
          "elu": "F.elu", "softplus": "F.softplus", "silu": "F.silu", "hard_sigmoid": "F.hardsigmoid"}
INIT_FN = {  # netdsl initialiser -> (torch.nn.init function, extra arguments)
    "glorot_uniform": ("nn.init.xavier_uniform_", lambda a: {}),
    "glorot_normal": ("nn.init.xavier_normal_", lambda a: {}),
    "he_uniform": ("nn.init.kaiming_uniform_", lambda a: {"nonlinearity": "relu"}),
    "he_normal": ("nn.init.kaiming_normal_", lambda a: {"nonlinearity": "relu"}),
    "uniform": ("nn.init.uniform_", lambda a: {"a": -a, "b": a}),
    "normal": ("nn.init.normal_", lambda a: {"std": a}),
    "constant": ("nn.init.constant_", lambda a: {"val": a}),
    "zeros": ("nn.init.zeros_", lambda a: {}),
    "ones": ("nn.init.ones_", lambda a: {}),
}
# parameters whose torch default initialisation already is netdsl's (BatchNorm/LayerNorm scale 1, bias 0)
DEFAULT_INIT = {("BatchNormalization", "scale"): "ones", ("BatchNormalization", "bias"): "zeros",
                ("BatchNormalization", "running_mean"): "zeros", ("BatchNormalization", "running_var"): "ones",
                ("LayerNormalization", "scale"): "ones", ("LayerNormalization", "bias"): "zeros"}


@dataclass
class TorchLayer:
    kind: str
    module: Code | None = None  # the nn.Module that owns the parameters or does the work
    cls: str | None = None  # its class, e.g. nn.Linear
    pad: tuple | None = None  # ("zero" | "neginf", Pads) applied before the module
    activation: str | None = None  # applied after
    act_dim: int = -1
    flatten: int | None = None  # torch.flatten(x, start_dim) before the module
    params: dict = field(default_factory=dict)  # canonical name -> attribute of the module
    chainable: bool = True  # can live inside nn.Sequential
    helper: str | None = None  # a helper class the module needs
    unflatten: tuple | None = None  # the output's last axis reshaped to this (Dense((3, 4))) after the module
    channel: int | None = None  # (N, H, W) -> (N, 1, H, W) first: H, for a Convolution with reduction_rank=0
    squeeze: bool = False  # (N, 1, H, W) -> (N, H, W) after the module: a Convolution without num_filters

    def __post_init__(self):
        if self.module is not None and self.cls is None:
            self.cls = self.module.split("(", 1)[0]


def _act(layer: ir.Layer, t: ir.TensorType | None) -> dict:
    act = layer.attr("activation")
    return {"activation": act, "act_dim": C.feature_axis(t) if t is not None else -1}


def _params(layer: ir.Layer, **attrs) -> dict:
    """{canonical parameter name: attribute of the torch module} for the parameters the layer has."""
    have = {p.name for p in layer.params}
    return {f"{layer.name}.{short}": attr for short, attr in attrs.items() if f"{layer.name}.{short}" in have}


def dense(idx, layer):
    t = idx.first_input_type(layer)
    n_in = layer.param("W").shape[1]
    kwargs = {} if layer.attr("bias") else {"bias": False}
    flatten = None
    mapped = layer.attr("map_axes") or 0  # input_rank/map_rank: nn.Linear maps over the kept leading axes itself
    if len(t.shape) - mapped > 1:
        flatten = (2 if t.seq else 1) + mapped
    shape = layer.attr("out_shape")
    return TorchLayer("Dense", call("nn.Linear", n_in, layer.attr("units"), **kwargs), flatten=flatten,
                      params=_params(layer, W="weight", b="bias"), **_act(layer, t),
                      unflatten=tuple(shape) if shape is not None else None)


def convolution(idx, layer):
    t = idx.first_input_type(layer)
    if C.is_1d_window(layer):
        return convolution_1d(idx, layer, t)
    pads = C.Pads.of(layer.attr("pads"))
    kwargs = {"kernel_size": C.int_or_pair(layer.attr("kernel"))}
    if tuple(layer.attr("strides")) != (1, 1):
        kwargs["stride"] = C.int_or_pair(layer.attr("strides"))
    pad = None
    if pads.symmetric and not pads.zero:
        kwargs["padding"] = pads.pair
    elif not pads.symmetric:
        pad = ("zero", pads)
    if not layer.attr("bias"):
        kwargs["bias"] = False
    if layer.attr("reduction_rank") == 0 or layer.attr("no_filter_axis"):  # (H, W) in or out: no channel axis
        rank0 = layer.attr("reduction_rank") == 0
        return TorchLayer("Convolution", call("nn.Conv2d", layer.param("W").shape[1], layer.attr("filters"),
                                              **kwargs), pad=pad, params=_params(layer, W="weight", b="bias"),
                          activation=layer.attr("activation"), act_dim=1, channel=t.shape[0] if rank0 else None,
                          squeeze=bool(layer.attr("no_filter_axis")))
    return TorchLayer("Convolution", call("nn.Conv2d", t.shape[0], layer.attr("filters"), **kwargs), pad=pad,
                      params=_params(layer, W="weight", b="bias"), **_act(layer, t))


def _pool_args(layer):
    window = tuple(layer.attr("window"))
    strides = tuple(layer.attr("strides"))
    kwargs = {}
    if strides != window:
        kwargs["stride"] = C.int_or_pair(strides)
    return C.int_or_pair(window), kwargs, C.Pads.of(layer.attr("pads")), window


def _fits_torch_padding(pads: C.Pads, window) -> bool:
    """nn.MaxPool2d/AvgPool2d take only symmetric padding of at most half the window."""
    return pads.symmetric and 2 * pads.top <= window[0] and 2 * pads.left <= window[1]


def convolution_1d(idx, layer, t):
    """nn.Conv1d over x.transpose(1, 2): the sequence's features are its channels; W (O, F, k) as is."""
    (before, after), = layer.attr("pads")
    kwargs = {"kernel_size": layer.attr("kernel")[0]}
    if layer.attr("strides")[0] != 1:
        kwargs["stride"] = layer.attr("strides")[0]
    pad = None
    if before == after and before:
        kwargs["padding"] = before
    elif before != after:
        pad = ("zero", C.Pads(0, 0, before, after))
    if not layer.attr("bias"):
        kwargs["bias"] = False
    return TorchLayer("Convolution", call("nn.Conv1d", t.shape[0], layer.attr("filters"), **kwargs), pad=pad,
                      params=_params(layer, W="weight", b="bias"), chainable=False,
                      activation=layer.attr("activation"), act_dim=-1)


def pooling_1d(fn):
    """A 1-D pooling runs as the 2-D one on x.transpose(1, 2).unsqueeze(2) (N, F, 1, T), window 1 x k:
    nn.MaxPool1d/AvgPool1d have no asymmetric pads and no count of the real cells."""
    def f(idx, layer):
        if not C.is_1d_window(layer):
            return fn(idx, layer)
        tl = fn(idx, C.as_2d_window(layer))
        tl.chainable = False
        return tl
    return f


def max_pooling(idx, layer):
    k, kwargs, pads, window = _pool_args(layer)
    pad = None
    if not pads.zero:
        if _fits_torch_padding(pads, window):
            kwargs["padding"] = pads.pair  # max_pool2d pads with -inf itself
        else:
            pad = ("neginf", pads)
    return TorchLayer("MaxPooling", call("nn.MaxPool2d", k, **kwargs), pad=pad)


def average_pooling(idx, layer):
    k, kwargs, pads, window = _pool_args(layer)
    if pads.zero:
        return TorchLayer("AveragePooling", call("nn.AvgPool2d", k, **kwargs))
    if _fits_torch_padding(pads, window):
        return TorchLayer("AveragePooling", call("nn.AvgPool2d", k, **kwargs, padding=pads.pair, count_include_pad=False))
    stride = C.int_or_pair(layer.attr("strides"))
    return TorchLayer("AveragePooling", call("AvgPool2dExcludePad", k, stride, pads.ltrb), helper="avgpool")


def dropout(idx, layer):
    return TorchLayer("Dropout", call("nn.Dropout", layer.attr("rate")))


def embedding(idx, layer):
    p = layer.param("E")
    if idx.first_input_type(layer).vocab is None:  # float vectors: x @ E (VectorEmbedding, module.py.j2)
        return TorchLayer("Embedding", call("VectorEmbedding", p.shape[0], p.shape[1]),
                          params=_params(layer, E="weight"), helper="vector_embedding")
    return TorchLayer("Embedding", call("nn.Embedding", p.shape[0], p.shape[1]), params=_params(layer, E="weight"))


def lstm(idx, layer):
    t = idx.first_input_type(layer)
    if layer.attr("peepholes") or layer.attr("stabilize"):  # nn.LSTM has neither: the CNTKLSTM helper, a loop
        opts = {} if layer.attr("cell") is None else {"proj_size": layer.attr("units")}
        opts.update({k: True for k, attr in (("peepholes", "peepholes"), ("stabilize", "stabilize")) if layer.attr(attr)})
        cell = layer.attr("cell") or layer.attr("units")
        return TorchLayer("LSTM", call("CNTKLSTM", t.shape[0], cell, **opts),
                          params=_params(layer, W="weight_ih", H="weight_hh", b="bias_ih", Ci="peephole_i",
                                         Cf="peephole_f", Co="peephole_o", P="weight_hr", Sdh="alpha_dh",
                                         Sdc="alpha_dc", Sct="alpha_c", Sht="alpha_hr"),
                          chainable=False, helper="cntk_lstm")
    if layer.attr("cell") is not None:  # cell_shape: nn.LSTM's proj_size, h = weight_hr_l0 @ (o * tanh(c))
        return TorchLayer("LSTM", call("nn.LSTM", t.shape[0], layer.attr("cell"), batch_first=True,
                                       proj_size=layer.attr("units")),
                          params=_params(layer, W="weight_ih_l0", H="weight_hh_l0", b="bias_ih_l0", P="weight_hr_l0"),
                          chainable=False)
    return TorchLayer("LSTM", call("nn.LSTM", t.shape[0], layer.attr("units"), batch_first=True),
                      params=_params(layer, W="weight_ih_l0", H="weight_hh_l0", b="bias_ih_l0"), chainable=False)


def bidirectional_lstm(idx, fwd, bwd):
    """One nn.LSTM(bidirectional=True) for a spliced forward/backward pair: its output is the splice,
    [forward, backward] on the feature axis, and on a packed batch its backward half starts at
    each sample's last valid step."""
    t = idx.first_input_type(fwd)
    return TorchLayer("LSTM", call("nn.LSTM", t.shape[0], fwd.attr("units"), batch_first=True, bidirectional=True),
                      params={**_params(fwd, W="weight_ih_l0", H="weight_hh_l0", b="bias_ih_l0"),
                              **_params(bwd, W="weight_ih_l0_reverse", H="weight_hh_l0_reverse",
                                        b="bias_ih_l0_reverse")}, chainable=False)


def batch_norm(idx, layer):
    t = idx.first_input_type(layer)
    cls = "nn.BatchNorm2d" if C.is_image(t) else "nn.BatchNorm1d"
    channels = layer.param("scale").shape[0]
    return TorchLayer("BatchNormalization",
                      call(cls, channels, eps=layer.attr("epsilon"), momentum=layer.attr("momentum")),
                      params=_params(layer, scale="weight", bias="bias", running_mean="running_mean",
                                     running_var="running_var"),
                      chainable=not t.seq)


def layer_norm(idx, layer):
    shape = tuple(layer.param("scale").shape)
    return TorchLayer("LayerNormalization",
                      call("nn.LayerNorm", shape[0] if len(shape) == 1 else shape, eps=layer.attr("epsilon")),
                      params=_params(layer, scale="weight", bias="bias"))


def activation(idx, layer):
    t = idx.first_input_type(layer)
    return TorchLayer("Activation", **_act(layer, t))


def flatten(idx, layer):
    t = idx.first_input_type(layer)
    start = None
    if len(t.shape) > 1:
        start = 2 if t.seq else 1
    return TorchLayer("Flatten", flatten=start)


def act_module(act: str, dim: int) -> Code:
    """The nn.Module of an IR activation spelling (its parameters given explicitly)."""
    name, params = split_activation(act)
    if name == "softmax":
        return call("nn.Softmax", dim=dim)
    if name == "leaky_relu":
        return call("nn.LeakyReLU", params["alpha"])
    if name == "gelu":
        return call("nn.GELU", approximate="tanh") if params["approximate"] else call("nn.GELU")
    return call(ACT_MODULE[name])


def act_call(act: str, expr: str, dim: int) -> str:
    """An IR activation applied to expr, functionally."""
    name, params = split_activation(act)
    if name == "softmax":
        return f"F.softmax({expr}, dim={dim})"
    if name == "leaky_relu":
        return f"F.leaky_relu({expr}, {params['alpha']!r})"
    if name == "gelu":
        return f'F.gelu({expr}, approximate="tanh")' if params["approximate"] else f"F.gelu({expr})"
    return f"{ACT_FN[name]}({expr})"


def stabilizer(idx, layer):
    return TorchLayer("Stabilizer", call("Stabilizer", layer.attr("steepness")), params=_params(layer, alpha="alpha"),
                      helper="stabilizer")


def gru(idx, layer):
    t = idx.first_input_type(layer)
    if layer.attr("reset_after"):  # nn.GRU's own convention: reset after the recurrent product, two biases
        return TorchLayer("GRU", call("nn.GRU", t.shape[0], layer.attr("units"), batch_first=True),
                          params=_params(layer, W="weight_ih_l0", H="weight_hh_l0", b="bias_ih_l0", bh="bias_hh_l0"),
                          chainable=False)
    # enable_self_stabilization: alpha_dh in the same helper loop
    stabilize = {"stabilize": True} if layer.attr("stabilize") else {}
    return TorchLayer("GRU", call("GRUResetBefore", t.shape[0], layer.attr("units"), **stabilize),
                      params=_params(layer, W="weight_ih", H="weight_hh", b="bias_ih", Sdh="alpha_dh"), chainable=False,
                      helper="gru_reset_before")


def delay_expr(x: str, layer: ir.Layer) -> str:
    """Delay on (N, L, F): pad |T| steps of initial_state on the time axis, then keep L steps."""
    shift, value = int(layer.attr("T")), float(layer.attr("initial_state"))
    fill = f", value={value!r}" if value else ""
    if shift > 0:
        return f"F.pad({x}, (0, 0, {shift}, 0){fill})[:, :-{shift}]"
    return f"F.pad({x}, (0, 0, 0, {-shift}){fill})[:, {-shift}:]"


def delay(idx, layer):
    # T < 0 on a padded batch: delay_future() refills the steps that would read padding
    return TorchLayer("Delay", chainable=False, helper="delay_future" if layer.attr("T") < 0 else None)


def global_pooling(idx, layer):
    # (N, C, H, W) -> (N, C): the adaptive pool to 1x1, then the unit axes dropped (the IR's vector)
    pool = "nn.AdaptiveAvgPool2d" if layer.kind == "GlobalAveragePooling" else "nn.AdaptiveMaxPool2d"
    return TorchLayer(layer.kind, call("nn.Sequential", call(pool, 1), call("nn.Flatten")))


def functional(kind):
    def f(idx, layer):
        return TorchLayer(kind, chainable=False)
    return f


LAYERS = {
    "Dense": dense,
    "Convolution": convolution,
    "MaxPooling": pooling_1d(max_pooling),
    "AveragePooling": pooling_1d(average_pooling),
    "Dropout": dropout,
    "Embedding": embedding,
    "LSTM": lstm,
    "BatchNormalization": batch_norm,
    "LayerNormalization": layer_norm,
    "Activation": activation,
    "Flatten": flatten,
    "Rescale": functional("Rescale"),
    "Splice": functional("Splice"),
    "SelectLast": functional("SelectLast"),
    "SelectFirst": functional("SelectFirst"),
    "CosineDistance": functional("CosineDistance"),
    "Stabilizer": stabilizer,
    "Elementwise": functional("Elementwise"),
    "GRU": gru,
    "Delay": delay,
    "GlobalAveragePooling": global_pooling,
    "GlobalMaxPooling": global_pooling,
}


# ------------------------------------------------------------------ sequential
def sequential_modules(tl: TorchLayer) -> list:
    """The nn.Sequential entries for one layer; index of the parameter-owning module is the `module` one."""
    mods = []
    if tl.channel is not None:
        mods.append(call("nn.Unflatten", 1, (1, tl.channel)))
    if tl.pad is not None:
        how, pads = tl.pad
        mods.append(call("nn.ZeroPad2d", pads.ltrb) if how == "zero"
                    else call("nn.ConstantPad2d", pads.ltrb, Code('float("-inf")')))
    if tl.flatten is not None:
        mods.append(call("nn.Flatten") if tl.flatten == 1 else call("nn.Flatten", tl.flatten))
    if tl.module is not None:
        mods.append(tl.module)
    if tl.squeeze:
        mods.append(call("nn.Flatten", 1, 2))
    if tl.unflatten is not None:
        mods.append(call("nn.Unflatten", -1, tl.unflatten))
    if tl.activation is not None:
        mods.append(act_module(tl.activation, tl.act_dim))
    return mods


def _apply_act(expr: str, tl: TorchLayer) -> str:
    if tl.squeeze:
        expr = f"{expr}.squeeze(1)"
    if tl.unflatten is not None:
        expr = f"{expr}.unflatten(-1, {lit(tl.unflatten)})"
    if tl.activation is None:
        return expr
    return act_call(tl.activation, expr, tl.act_dim)


def _pre(expr: str, tl: TorchLayer) -> str:
    if tl.channel is not None:
        expr = f"{expr}.unsqueeze(1)"
    if tl.pad is not None:
        how, pads = tl.pad
        value = ', value=float("-inf")' if how == "neginf" else ""
        expr = f"F.pad({expr}, {lit(pads.ltrb)}{value})"
    if tl.flatten is not None:
        expr = f"torch.flatten({expr}, {tl.flatten})"
    return expr


def node_statements(node: ir.Node, layer: ir.Layer, tl: TorchLayer, attr: str | None, args: list, out: str,
                    idx: C.GraphIndex, lengths: str | None = None) -> list:
    """The forward() lines for one node, given its inputs' locals, its output local and the local
    holding its input's (N,) lengths (docs/ir.md; None: the model takes none)."""
    kind = layer.kind
    t = idx.types[node.inputs[0]]
    x = args[0]
    if kind == "Rescale":
        return [f"{out} = {rescale(x, layer)}"]
    if kind == "Splice":
        return [f"{out} = torch.cat([{', '.join(args)}], dim={C.feature_axis(t)})"]
    if kind == "SelectLast" and lengths:
        return [f"{out} = select_last({x}, {lengths})"]
    if kind in ("SelectLast", "SelectFirst"):
        return [f"{out} = {x}[:, {-1 if kind == 'SelectLast' else 0}]"]
    if kind == "CosineDistance":
        a, b = (f"torch.flatten({v}, 1)" if len(idx.types[name].shape) > 1 else v
                for v, name in zip(args, node.inputs))
        return [f"{out} = F.cosine_similarity({a}, {b}, dim=1, eps=1e-8).unsqueeze(1)"]
    if kind == "Elementwise":
        return [f"{out} = {args[0]} {OPS[layer.attr('op')]} {args[1]}"]
    if kind in RECURRENCES and lengths:  # every recurrence kind runs through run_recurrence()
        backwards = ", go_backwards=True" if layer.attr("go_backwards") else ""
        state = f", state={_initial_state(x, layer)}" if layer.attr("initial_state") else ""
        return [C.layout(f"{out} = run_recurrence(self.{attr}, {x}, {lengths}{backwards}{state})", 8)]
    if kind in ("LSTM", "GRU"):
        state = f", {_initial_state(x, layer)}" if layer.attr("initial_state") else ""
        if layer.attr("go_backwards"):
            return [C.layout(f"{out}, _ = self.{attr}({x}.flip(1){state})", 8),
                    f"{out} = {out}.flip(1)  # the state computed at input t goes back to position t"]
        return [C.layout(f"{out}, _ = self.{attr}({x}{state})", 8)]
    if kind == "Delay" and lengths and layer.attr("T") < 0:
        n, value = -int(layer.attr("T")), float(layer.attr("initial_state"))
        return [f"{out} = delay_future({delay_expr(x, layer)}, {n}, {lengths}, {value!r})"]
    if kind == "Delay":
        return [f"{out} = {delay_expr(x, layer)}"]
    if kind == "BatchNormalization" and t.seq:
        return [f"{out} = self.{attr}({x}.transpose(1, 2)).transpose(1, 2)"]
    if kind == "Convolution" and t.seq:  # a 1-D convolution over time: (N, T, F) <-> (N, F, T)
        inner = _pre(f"{x}.transpose(1, 2)", tl)
        return [C.layout(f"{out} = self.{attr}({inner})", 8), f"{out} = {_apply_act(f'{out}.transpose(1, 2)', tl)}"]
    if kind in ("MaxPooling", "AveragePooling") and t.seq:  # the 2-D pooling over (N, F, 1, T)
        inner = _pre(f"{x}.transpose(1, 2).unsqueeze(2)", tl)
        return [C.layout(f"{out} = self.{attr}({inner})", 8), f"{out} = {out}.squeeze(2).transpose(1, 2)"]
    if kind == "Activation":
        return [f"{out} = {_apply_act(x, tl)}"]
    if kind == "Flatten":
        return [f"{out} = {_pre(x, tl)}"]
    return [f"{out} = {_apply_act(f'self.{attr}({_pre(x, tl)})', tl)}"]


def _initial_state(x: str, layer: ir.Layer) -> str:
    """Recurrence's initial_state: the (h0, c0) or h0 argument of an nn.LSTM / nn.GRU call."""
    cell = ", cell=True" if layer.kind == "LSTM" else ""
    return f"initial_state({x}, {layer.attr('units')}, {C.number(layer.attr('initial_state'))}{cell})"


def rescale(x: str, layer: ir.Layer) -> str:
    """(x * scale - mean) / std, written the short way when scale is 1/n, mean 0 or std 1."""
    scale, mean, std = layer.attr("scale"), layer.attr("mean"), layer.attr("std")
    expr = x
    if scale != 1.0:
        s = C.number(scale)
        expr = f"{x} / {s[4:]}" if s.startswith("1 / ") else f"{x} * {s}"
    if mean != 0.0:
        expr = f"{expr} - {C.number(mean)}"
    if std != 1.0:
        expr = f"({expr}) / {C.number(std)}" if mean != 0.0 or scale != 1.0 else f"{expr} / {C.number(std)}"
    return expr


# -------------------------------------------------------------------- context
def context(idx: C.GraphIndex, views: dict) -> dict:
    graph = idx.graph
    # a forward/backward LSTM pair spliced together is ONE nn.LSTM(bidirectional=True) (issue 14)
    pairs = bidirectional_pairs(idx)
    paired = {}  # backward layer -> forward layer, whose module holds both
    for _, fwd, bwd in pairs:
        views[fwd.layer] = bidirectional_lstm(idx, idx.layers[fwd.layer], idx.layers[bwd.layer])
        views[bwd.layer] = TorchLayer("LSTM", chainable=False)
        paired[bwd.layer] = fwd.layer
    chains = C.group_chains(idx, lambda n: views[n.layer].chainable and idx.layers[n.layer].kind != "Rescale")
    chain_nodes = {name for cs in chains.values() for c in cs for name in c}
    # the module's own names (imports, constants, functions) and the builtins it calls: a user's value
    # that is a local of forward(), predict() or train_step() must not shadow one of them
    module_own = template_names(TEMPLATE, ()) | RENDERED_NAMES
    module_names = C.Names(module_own)
    cls = C.class_name(graph.name, module_names.taken)
    attrs = C.Names(MODULE_ATTRS)

    # __init__: one attribute per sequential group or per module-owning layer, in first-use order
    init_blocks, weights, param_ref = [], {}, {}
    seen_layers, seen_groups = set(), set()
    group_of_node = {}
    for gname, cs in chains.items():
        for c in cs:
            for name in c:
                group_of_node[name] = gname
    layer_attr = {}
    group_attr = {}
    for n in graph.nodes:
        if n.name in chain_nodes:
            gname = group_of_node[n.name]
            if gname in seen_groups:
                continue
            seen_groups.add(gname)
            a = attrs.of(gname)
            group_attr[gname] = a
            entries, pos = [], 0
            for lname in idx.group_layers(gname):
                tl = views[lname]
                mods = sequential_modules(tl)
                for m in mods:
                    comment = f"  # {ident(lname)}" if m is tl.module or (tl.module is None and m is mods[-1]) else ""
                    entries.append((str(m), comment))
                    if m is tl.module:
                        for pname, pattr in tl.params.items():
                            weights[pname] = f"{a}.{pos}.{pattr}"
                            param_ref[pname] = f"self.{a}[{pos}].{pattr}"
                    pos += 1
            init_blocks.append({"attr": a, "sequential": entries, "source": gname})
            seen_layers.update(idx.group_layers(gname))
        else:
            layer = idx.layers[n.layer]
            tl = views[n.layer]
            if n.layer in seen_layers or tl.module is None:
                continue
            seen_layers.add(n.layer)
            a = attrs.of(n.layer)
            layer_attr[n.layer] = a
            init_blocks.append({"attr": a, "module": str(tl.module), "source": layer.name})
            for pname, pattr in tl.params.items():
                weights[pname] = f"{a}.{pattr}"
                param_ref[pname] = f"self.{a}.{pattr}"

    # reset_parameters(): netdsl's initialisers, by module class where every module of a class agrees
    wanted = []  # (module class, attribute, init call with \0 for the tensor, reference to the tensor)
    lstm_biases, lstm_freeze = [], []
    pair_of = {f: b for b, f in paired.items()}
    for layer in graph.layers:
        owner = paired.get(layer.name, layer.name)
        tl = views[owner]
        # a bidirectional module's tensors are initialised one by one (cls None): an isinstance()
        # rule for nn.LSTM would also name the _reverse tensors the one-way LSTMs lack
        # and so is a projection's weight_hr_l0, which an nn.LSTM without proj_size lacks
        init_cls = None if owner in pair_of or (layer.kind == "LSTM" and layer.attr("cell") is not None) else tl.cls
        peepholes = layer.kind == "LSTM" and (layer.attr("peepholes") or layer.attr("stabilize"))
        for p in layer.params:
            if p.name not in param_ref:
                continue
            short = p.name[len(layer.name) + 1:]
            kind, arg = C.parse_init(p.init)
            if DEFAULT_INIT.get((layer.kind, short)) == kind:
                continue
            fn, extra = INIT_FN[kind]
            wanted.append((init_cls, tl.params[p.name], init_call(fn, extra(arg)), param_ref[p.name]))
        if layer.kind == "LSTM" and owner in layer_attr and not peepholes:  # CNTKLSTM has one bias
            a = layer_attr[owner]
            bias = "bias_hh_l0_reverse" if owner != layer.name else "bias_hh_l0"
            lstm_biases.append((layer.param("b").name, f"{a}.{bias}"))
            wanted.append((init_cls, bias, init_call("nn.init.zeros_", {}), f"self.{a}.{bias}"))
            lstm_freeze.append(C.layout(f"self.{a}.{bias}.requires_grad_(False)" + (
                "  # netdsl's one bias per gate is bias_ih_l0" if owner == layer.name else ""), 8))
    for layer in graph.layers:  # Embedding(weights=...): a constant, loaded from the weights file
        if layer.kind == "Embedding" and layer.attr("weights") and layer.param("E").name in param_ref:
            lstm_freeze.append(f"{param_ref[layer.param('E').name]}.requires_grad_(False)  # fixed weights=")
    init_lines = init_statements(wanted, module_counts(views, layer_attr, group_attr, idx))
    for block in init_blocks:
        if "module" in block:
            block["module"] = C.wrap_call(f"self.{block['attr']} = {block['module']}", 8)

    # forward(): the walk, with chains collapsed into one call each
    steps = C.collapse_chains(graph, C.node_steps(graph), [c for cs in chains.values() for c in cs])
    for s in steps:
        layer = idx.layers[s.node.layer]
        if len(s.nodes) == 1 and layer.kind == "Flatten" and views[layer.name].flatten is None:
            s.alias = True  # flattening a vector changes nothing
    names = C.Names(set(FORWARD_NAMES) | module_own)
    seq_inputs = [i.name for i in graph.inputs if i.type.seq]
    length_arg = {i: names.of("\0lengths:" + i, "lengths" if len(seq_inputs) == 1 else f"{ident(i)}_lengths")
                  for i in seq_inputs}
    sources = length_sources(idx)
    skip = {b.name for _, _, b in pairs} | {sp.name for sp, _, _ in pairs}
    local = C.assign_locals(idx, steps, names)
    for sp, fwd, _ in pairs:
        local[fwd.name] = local[sp.name]  # the pair's module writes the splice's value
    forward = []
    for s in steps:
        if s.alias or s.output in skip:
            continue
        args = [local[v] for v in s.inputs]
        out = local[s.output]
        if s.nodes[0].name in chain_nodes:
            forward.append(f"{out} = self.{group_attr[group_of_node[s.nodes[0].name]]}({args[0]})")
            continue
        n = s.node
        lengths = length_arg.get(sources.get(n.inputs[0])) if n.inputs else None
        forward += node_statements(n, idx.layers[n.layer], views[n.layer], layer_attr.get(n.layer), args, out, idx,
                                   lengths)
    returns = ", ".join(local[o] for o in graph.outputs)

    training = C.training_dict(graph)
    fn_names = C.Names({"model", "trainer", "inputs", "targets", "loss", "outputs", "y", "lengths", "steps", "device"}
                       | module_own)
    outputs = [{"name": o, "local": fn_names.of(o), "shape": C.batch_shape(idx.types[o])} for o in graph.outputs]
    first = outputs[0]["local"]
    call_model = ("model(*to_tensors(inputs, device), **to_lengths(lengths))" if seq_inputs
                  else "model(*to_tensors(inputs, device))")
    loss = [f"{first} = {call_model}"] if len(outputs) == 1 else [
        "# the training block's loss is on the first output", f"{first} = {call_model}[0]"]
    first_t = idx.types[graph.outputs[0]]
    source = sources.get(graph.outputs[0])
    steps = ""
    if first_t.seq and source is not None:  # the mean over valid steps only (docs/ir.md)
        loss.append(f"steps = valid_steps({first}, lengths, {lit(source)})")
        steps = "[steps]"
    target_dtype, loss_text = T.loss_expr(graph, first_t, first + steps, "targets", steps)
    if target_dtype is None:  # int class labels, or one-hot float targets of the output's shape
        loss.append("targets = torch.as_tensor(targets, device=device)")
        loss.append("targets = targets.float() if targets.is_floating_point() else targets.long()")
    else:
        loss.append(f"targets = torch.as_tensor(targets, dtype={target_dtype}, device=device)")
    loss.append(C.layout(f"loss = {loss_text}", 4))
    data = C.dataset_plan(idx)
    if data["ok"]:
        data.update(input=graph.inputs[0].name, output=graph.outputs[0])
    return {
        "model_name": graph.name,
        "class_name": ident(cls),
        "inputs": [{"name": i.name, "dtype": "torch.long" if C.is_ids(i.type) else "torch.float32"}
                   for i in graph.inputs],
        "shape_tables": C.shape_tables(idx),
        "outputs": outputs,
        "forward_args": ", ".join([local[i.name] for i in graph.inputs] + [f"{a}=None" for a in length_arg.values()]),
        "call_model": call_model,
        "length_args": [(i, a) for i, a in length_arg.items()],
        "training": training,
        "train": T.context(graph),
        "loss": loss,
        "loss_doc": T.loss_doc(graph),
        "weights": [C.table_row(p.name, tuple(p.shape), weights[p.name]) for p in graph.params()],
        "lstm_biases": lstm_biases,
        "lstm_freeze": lstm_freeze,
        "init_blocks": init_blocks,
        "init_lines": init_lines,
        "forward": forward,
        "returns": returns,
        # helper classes and functions the module defines
        "uses": {v.helper for v in views.values() if v.helper} | ({"lengths"} if seq_inputs else set())
        | ({"initial_state"} if any(la.attr("initial_state") for la in graph.layers) else set()),
        "data": data,
        "doc": C.docstring(f"{ident(graph.name)} from {C.doc_source(graph)}: {C.signature_text(idx, C.batch_shape)}.", 4),
    }


def init_call(fn: str, kwargs: dict) -> str:
    return str(call(fn, Code("\0"), **kwargs))


def module_counts(views: dict, layer_attr: dict, group_attr: dict, idx: C.GraphIndex) -> dict:
    """How many modules of each class the model has (a layer applied twice is one module)."""
    counts: dict = {}
    owners = list(layer_attr) + [name for g in group_attr for name in idx.group_layers(g)]
    for name in owners:
        cls = views[name].cls
        if cls:
            counts[cls] = counts.get(cls, 0) + 1
    return counts


def init_statements(wanted: list, counts: dict) -> list:
    """reset_parameters()'s body (indented 8 = relative 0).

    When every module of a class is initialised alike, one isinstance() branch
    of a loop over self.modules() does it, the way people write it; the rest
    are listed tensor by tensor, grouped by initialiser.
    """
    rules: dict = {}
    for cls, attr, init, _ in wanted:
        rules.setdefault(cls, {}).setdefault(attr, set()).add(init)
    uniform = {cls for cls, attrs in rules.items()
               if cls is not None and all(len(inits) == 1 for inits in attrs.values())}
    branches: dict = {}  # rule -> [classes]
    seen = {}
    for cls, attr, init, _ in wanted:
        if cls in uniform and cls not in seen:
            seen[cls] = True
            present = {a: sum(1 for c, a2, _, _ in wanted if c == cls and a2 == a) for a in rules[cls]}
            rule = tuple((a, next(iter(rules[cls][a])), present[a] < counts.get(cls, 0)) for a in rules[cls])
            branches.setdefault(rule, []).append(cls)
    lines = []
    if branches:
        lines.append("for module in self.modules():")
        for k, (rule, classes) in enumerate(branches.items()):
            kinds = classes[0] if len(classes) == 1 else "(" + ", ".join(classes) + ")"
            lines.append(f"    {'if' if k == 0 else 'elif'} isinstance(module, {kinds}):")
            for attr, init, optional in rule:
                stmt = init.replace("\0", f"module.{attr}")
                if optional:  # lines are relative to the body's indent, 8
                    lines += [f"        if module.{attr} is not None:", f"            {C.layout(stmt, 20)}"]
                else:
                    lines.append(f"        {C.layout(stmt, 16)}")
    by_init: dict = {}
    for cls, attr, init, ref in wanted:
        if cls not in uniform:
            by_init.setdefault(init, []).append(ref)
    for init, refs in by_init.items():
        if len(refs) == 1:
            lines.append(C.layout(init.replace("\0", refs[0]), 8))
            continue
        head = f"for tensor in ({', '.join(refs)}):"
        lines += ([head] if len(head) + 8 <= 88 else ["for tensor in ("] + [f"    {r}," for r in refs] + ["):"])
        lines.append("    " + C.layout(init.replace("\0", "tensor"), 12))
    return lines


def check(idx: C.GraphIndex) -> list:
    graph = idx.graph
    return (C.check_inits(graph, "pytorch") + C.check_activations(graph, "pytorch") + C.check_shapes(idx, "pytorch")
            + check_projections(graph))


def check_projections(graph: ir.Graph) -> list:
    """nn.LSTM's proj_size must be below its hidden size: LSTM(n, cell_shape=c) needs c > n."""
    return [Diagnostic("E802", f"target 'pytorch' cannot express layer '{layer.name}' (LSTM): cell_shape="
                               f"{layer.attr('cell')} is not above shape={layer.attr('units')} (nn.LSTM's proj_size must "
                               "be smaller than its hidden_size)", layer.span or graph.span)
            for layer in graph.layers if layer.kind == "LSTM" and layer.attr("cell") is not None
            and layer.attr("cell") <= layer.attr("units")
            and not (layer.attr("peepholes") or layer.attr("stabilize"))]  # CNTKLSTM: any size


# the shared runtime flags (emit/base.py RUNTIME_FLAGS) this target's script honours
FLAGS = ("--device", "--amp", "--compile", "--checkpoint", "--max-steps")
TARGET = Target("pytorch", TEMPLATE, LAYERS, context, check, extras={"flags": FLAGS, "training": T.HONOURED})
