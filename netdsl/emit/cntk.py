"""--target cntk: CNTK 2.7 Layers Library code (Python 3.6), written the CNTK way.

Groups stay C.layers.Sequential; a LayerStack whose repeats have the same
layer kinds becomes C.layers.For(range(n), lambda i: [...]) with the values
that differ per repeat written as [a, b, c][i]; the default_options scope the
layers were built in is kept as a `with C.layers.default_options(...)`, and
each layer writes only the arguments the user wrote or that the scope and
CNTK's own defaults would get wrong. Sequences use C.sequence.input_variable
(token ids as sparse one-hot), LSTMs Recurrence(LSTM(n)).

CNTK computes like netdsl: NCHW-like (C, H, W) samples, Convolution W is
OIHW with bias (out, 1, 1), pad=True is netdsl's pad=True, average pooling
excludes padding. Dense W is (in..., out) (applied x @ W) and LSTM W/H are
(in, 4n) with gates i, g, f, o: weights are converted on load and export by
canonical name -> layer name -> parameter name. BatchNormalization's
momentum becomes normalization_time_constant = -N / ln(1 - momentum) samples
for the training block's batch size N, and train_step rescales the move of
the running statistics when a minibatch has another size; the running
variance is unbiased like netdsl's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from .. import ir
from ..conformance_lengths import output_sources
from ..layers.common import split_activation
from ..train_block import OPTIMIZERS
from .base import EmitBug, Target, pyrepr
from .legacy import (
    Legacy,
    cannot,
    common_context,
    is_image,
    rescale_terms,
    structure_diagnostics,
)
from .legacy import calls as legacy_calls


@dataclass
class View:
    """A layer as CNTK code: its constructor, positional and keyword arguments as code text, or, for a
    layer that is a plain function of CNTK values, `fn` (inside a Sequential) and `call` (on its own,
    a format string over {x} or {xs}); plus where its weights go."""

    ctor: str | None
    pos: list = field(default_factory=list)
    args: dict = field(default_factory=dict)
    params: list = field(default_factory=list)  # (canonical short name, CNTK name, conversion)
    always: tuple = ()  # keyword arguments written even when they equal CNTK's default
    unnamed: bool = False  # the name goes inside (an LSTM in its Recurrence)
    pattern: list | None = None  # explicit C.pad pattern in front
    pad_value: str | None = None
    fn: str | None = None
    call: str | None = None
    kind: str = ""
    name: str = ""
    explicit: set = field(default_factory=set)
    defaults: dict = field(default_factory=dict)
    around: str | None = None  # code around the layer's, at {core}: a 1-D window's (F, T) view of a sequence


ACT = {None: "None", "relu": "C.relu", "sigmoid": "C.sigmoid", "tanh": "C.tanh", "softmax": "C.softmax",
       "elu": "C.elu", "softplus": "C.softplus"}
INIT = {"glorot_uniform": "C.glorot_uniform()", "glorot_normal": "C.glorot_normal()",
        "he_uniform": "C.he_uniform()", "he_normal": "C.he_normal()", "zeros": "0", "ones": "1"}
CNTK_DEFAULTS = {"activation": "None", "init": "C.glorot_uniform()", "bias": "True", "init_bias": "0.0",
                 "pad": "False", "strides": "1"}


def init_expr(text: str) -> str:
    if text in INIT:
        return INIT[text]
    for fn in ("uniform", "normal"):
        if text.startswith(fn + "("):
            return f"C.{fn}({float(text[len(fn) + 1:-1])!r})"
    return "C.glorot_uniform()"


def _act(layer: ir.Layer, lg) -> str:
    a = layer.attr("activation")
    if a == "softmax" and is_image(lg.nodes_of(layer)[0].type):
        return "lambda x: C.softmax(x, axis=0)"
    return act_expr(a)


def act_expr(act: str | None) -> str:
    """An IR activation as a CNTK function (check() refuses exact gelu: CNTK 2.7 has no erf)."""
    if act in ACT:
        return ACT[act]
    name, params = split_activation(act)
    if name == "leaky_relu":
        return f"lambda x: C.leaky_relu(x, alpha={params['alpha']!r})"
    if name == "gelu":
        # a call at the top: layout() splits its brackets (a long `a * b` would stay one line)
        return "lambda x: C.element_times(0.5 * x, 1 + C.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))"
    if name == "silu":
        return "lambda x: x * C.sigmoid(x)"
    if name == "hard_sigmoid":  # the IR's relu6(x + 3) / 6; CNTK's own hard_sigmoid is 0.2 x + 0.5
        return "lambda x: C.clip(x / 6.0 + 0.5, 0.0, 1.0)"
    raise EmitBug(f"cntk: no spelling for the activation {act}")


def _cntk_pad(lg, layer, kernel):
    """(pad argument, explicit C.pad pattern or None): pad=True is exactly netdsl's pad=True rule."""
    pads = tuple(tuple(p) for p in layer.attr("pads"))
    if pads == ((0, 0), (0, 0)):
        return "False", None
    it = lg.in_type(layer)
    strides = tuple(layer.attr("strides"))
    same = []
    hw = it.shape[-2:]  # an image (C, H, W), or the (H, W) value of a Convolution with reduction_rank=0
    for size, k, s in zip(hw, kernel, strides):
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        same.append(((k - 1) // 2, total - (k - 1) // 2))
    # CNTK checks kernel <= input before its own padding (ValueError at build time): a window larger than
    # its input map gets the same pads explicitly
    if pads == tuple(same) and all(k <= size for size, k in zip(hw, kernel)):
        return "True", None
    return "False", [[0, 0]] * (len(it.shape) - 2) + [list(pads[0]), list(pads[1])]


def _dense(lg, layer):
    args = {"activation": _act(layer, lg), "init": init_expr(layer.attr("init")),
            "bias": repr(bool(layer.attr("bias"))), "init_bias": repr(float(layer.attr("init_bias")))}
    for key in ("input_rank", "map_rank"):  # CNTK's own arguments, as written (W (in..., out) either way)
        if layer.attr(key) is not None:
            args[key] = repr(layer.attr(key))
    p = [("W", "W", "dense")] + ([("b", "b", "identity")] if layer.attr("bias") else [])
    # Dense((3, 4)): the vector Dense, then a (row-major) reshape, so its W stays (in..., prod(shape)) as the
    # loader's "dense" conversion and max_norm expect; CNTK's own Dense((3, 4)) would make W (in..., 3, 4)
    shape = layer.attr("out_shape")
    around = None if shape is None else f"C.layers.Sequential([{{core}}, lambda x: C.reshape(x, {tuple(shape)!r})])"
    return View(ctor="C.layers.Dense", pos=[str(layer.attr("units"))], args=args, params=p, around=around)


def _conv(lg, layer):
    if len(layer.attr("kernel")) == 1:
        return _conv_1d(lg, layer)
    kernel = tuple(layer.attr("kernel"))
    pad, pattern = _cntk_pad(lg, layer, kernel)
    args = {"activation": _act(layer, lg), "init": init_expr(layer.attr("init")), "pad": pad,
            "strides": repr(tuple(layer.attr("strides"))) if tuple(layer.attr("strides")) != (1, 1) else "1",
            "bias": repr(bool(layer.attr("bias"))), "init_bias": repr(float(layer.attr("init_bias")))}
    if layer.attr("reduction_rank") == 0:  # CNTK's own: W (O, kh, kw), the IR's (O, 1, kh, kw) reshaped
        args["reduction_rank"] = "0"
    p = [("W", "W", "identity")] + ([("b", "b", "reshape")] if layer.attr("bias") else [])
    # num_filters left out is CNTK's own None: no filter axis in the output, W (C, kh, kw) (or (kh, kw))
    filters = [] if layer.attr("no_filter_axis") else [str(layer.attr("filters"))]
    return View(ctor="C.layers.Convolution", pos=[repr(kernel)] + filters, args=args,
                params=p, pattern=pattern, pad_value="0.0")


def _pool(lg, layer):
    if len(layer.attr("window")) == 1:
        return _pool_1d(lg, layer)
    window = tuple(layer.attr("window"))
    pad, pattern = _cntk_pad(lg, layer, window)
    strides = tuple(layer.attr("strides"))
    ctor = "C.layers.MaxPooling" if layer.kind == "MaxPooling" else "C.layers.AveragePooling"
    args = {"strides": repr(strides) if strides != (1, 1) else "1", "pad": pad}
    return View(ctor=ctor, pos=[repr(window)], args=args, pattern=pattern,
                pad_value="-np.inf" if layer.kind == "MaxPooling" else None)


# A 1-D window over time: CNTK pools nothing along a sequence axis (MaxPooling(sequential=True) raises
# NotImplementedError), so the sequence is unpacked to a static (T, F) tensor (T a free dimension), seen as
# (F, T) -- seed 004's (channels, spatial) -- for the static Convolution1D/pooling, and put back on the
# input's own sequence axis (to_sequence_like): check() refuses the windows that change the length.
OVER_TIME = "_over_time({core})"  # the template's helper


def keeps_length(layer) -> bool:
    """A 1-D window whose output has its input's length: stride 1 and k - 1 steps of pads."""
    k = (layer.attr("kernel") or layer.attr("window"))[0]
    (before, after), = layer.attr("pads")
    return layer.attr("strides")[0] == 1 and before + after == k - 1


def _cntk_pad_1d(lg, layer, k):
    """A 1-D window's (pad argument, explicit C.pad pattern on (F, T) or None). Always explicit: CNTK checks
    that the window fits the unpadded input (a ValueError on a short batch), and T is a free dimension."""
    (pads,) = tuple(tuple(p) for p in layer.attr("pads"))
    if pads == (0, 0):
        return "False", None
    return "False", [[0, 0], list(pads)]


def _conv_1d(lg, layer):
    k, s = layer.attr("kernel")[0], layer.attr("strides")[0]
    pad, pattern = _cntk_pad_1d(lg, layer, k)  # pad is "False": CNTK's default, so not written
    args = {"activation": _act(layer, lg), "init": init_expr(layer.attr("init")), "pad": pad,
            "strides": repr(s), "bias": repr(bool(layer.attr("bias"))), "init_bias": repr(float(layer.attr("init_bias")))}
    p = [("W", "W", "identity")] + ([("b", "b", "reshape")] if layer.attr("bias") else [])
    return View(ctor="C.layers.Convolution1D", pos=[repr((k,)), str(layer.attr("filters"))], args=args,
                params=p, pattern=pattern, pad_value="0.0", around=OVER_TIME)


def _pool_1d(lg, layer):
    k, s = layer.attr("window")[0], layer.attr("strides")[0]
    pad, pattern = _cntk_pad_1d(lg, layer, k)
    ctor = "C.layers.MaxPooling" if layer.kind == "MaxPooling" else "C.layers.AveragePooling"
    return View(ctor=ctor, pos=[repr((k,))], args={"strides": repr(s), "pad": pad}, pattern=pattern,
                pad_value="-np.inf" if layer.kind == "MaxPooling" else None, around=OVER_TIME)


def _bn(lg, layer):
    it = lg.in_type(layer)
    return View(ctor="C.layers.BatchNormalization",
                args={"map_rank": "1" if is_image(it) else "None", "epsilon": repr(float(layer.attr("epsilon"))),
                      "normalization_time_constant": f"_time_constant({float(layer.attr('momentum'))!r})",
                      **({"init_scale": repr(layer.attr("init_scale"))} if layer.attr("init_scale", 1.0) != 1 else {})},
                always=("map_rank", "epsilon", "normalization_time_constant"),
                params=[("scale", "scale", "identity"), ("bias", "bias", "identity"),
                        ("running_mean", "aggregate_mean", "identity"),
                        ("running_var", "aggregate_variance", "identity")])


def _lstm(lg, layer):
    # the name goes on the LSTM (a block holding W, H, b), not on the Recurrence around it
    # init_bias is written when given or not 0: CNTK's LSTM would otherwise take a default_options scope's
    bias = layer.attr("init_bias", 0.0)
    bias = f", init_bias={float(bias)!r}" if bias or "init_bias" in layer.explicit else ""
    # cell_shape: CNTK's own projection, a Parameter named P of shape (cell, units), applied h @ P
    cell = "" if layer.attr("cell") is None else f", cell_shape={int(layer.attr('cell'))}"
    proj = [] if layer.attr("cell") is None else [("P", "P", "dense")]
    # use_peepholes: CNTK's own, three (cell,) Parameters named Ci, Cf, Co (the same as netdsl's)
    if layer.attr("peepholes"):
        cell += ", use_peepholes=True"
        proj += [("Ci", "Ci", "identity"), ("Cf", "Cf", "identity"), ("Co", "Co", "identity")]
    # enable_self_stabilization: CNTK's own Stabilizer blocks inside the LSTM, each Parameter named alpha, found
    # through its block's name (the template's _variables reads "block/parameter")
    if layer.attr("stabilize"):
        cell += ", enable_self_stabilization=True"
        have = {p.name.rsplit(".", 1)[1] for p in layer.params}
        proj += [(k, f"{block}/alpha", "identity") for k, block in (("Sdh", "dh_stabilizer"), ("Sdc", "dc_stabilizer"),
                                                                    ("Sct", "c_stabilizer"), ("Sht", "P_stabilizer"))
                 if k in have]
    return View(ctor="C.layers.Recurrence",
                pos=[f"C.layers.LSTM({layer.attr('units')}{cell}{bias}, name={pyrepr(layer.name)})"],
                args={"go_backwards": repr(bool(layer.attr("go_backwards"))), **_initial_state(layer)}, unnamed=True,
                params=[("W", "W", "lstm"), ("H", "H", "lstm"), ("b", "b", "lstm_b")] + proj)


def _initial_state(layer) -> dict:
    """Recurrence's own initial_state (a scalar: every state component, an LSTM's h and c), written when not 0."""
    value = layer.attr("initial_state", 0.0)
    return {"initial_state": repr(float(value))} if value else {}


def _gru(lg, layer):
    units, go_back = layer.attr("units"), {"go_backwards": repr(bool(layer.attr("go_backwards"))), **_initial_state(layer)}
    if not layer.attr("reset_after"):
        # CNTK's own GRU: gates z, r, n (swapped on load and export), W (in, 3n), and H split into H (n, 2n)
        # for z and r and H1 (n, n) for the candidate (the template's GRU_H1 table loads and exports H1)
        extra = ""
        if layer.attr("init") != "glorot_uniform" or "init" in layer.explicit:
            extra += f", init={init_expr(layer.attr('init'))}"
        if layer.attr("init_bias", 0.0) or "init_bias" in layer.explicit:  # else a default_options scope's
            extra += f", init_bias={float(layer.attr('init_bias', 0.0))!r}"
        stab = []
        if layer.attr("stabilize"):  # CNTK's own Stabilizer block dh_stabilizer, its Parameter alpha (as the LSTM's)
            extra += ", enable_self_stabilization=True"
            stab = [("Sdh", "dh_stabilizer/alpha", "identity")]
        return View(ctor="C.layers.Recurrence", pos=[f"C.layers.GRU({units}{extra}, name={pyrepr(layer.name)})"],
                    args=go_back, unnamed=True,
                    params=[("W", "W", "gru_W"), ("H", "H", "gru_H"), ("b", "b", "gru_b")] + stab)
    # reset_after=True, which CNTK's GRU cannot compute: _gru (the template's step function) holds
    # netdsl's layout transposed for x @ W: W (in, 3n), H (n, 3n), gates r, z, n, b and bh
    step = (f"_gru({units}, {init_expr(layer.attr('init'))}, {float(layer.attr('init_bias', 0.0))!r}, "
            f"name={pyrepr(layer.name)})")
    return View(ctor="C.layers.Recurrence", pos=[step], args=go_back, unnamed=True,
                params=[("W", "W", "dense"), ("H", "H", "dense"), ("b", "b", "identity"), ("bh", "bh", "identity")])


def _fn(expr, call):
    """A layer written as a Python function of CNTK values: `fn` inside a Sequential, `call`
    (a format string over {x} or {xs}) when applied on its own."""
    return lambda lg, layer: View(ctor=None, fn=expr(lg, layer), call=call(lg, layer))


def _rescale(lg, layer, x="x"):
    t = rescale_terms(layer)
    e = x
    if t["has_scale"]:
        e = f"{x} * {t['scale']!r}"
    if t["has_mean"]:
        e = f"({e} - {t['mean']!r})"
    if t["has_std"]:
        e = f"{e} / {t['std']!r}"
    return e


CNTK_OPS = {"add": "C.plus", "sub": "C.minus", "mul": "C.element_times"}  # Elementwise's op


def _embedding(layer):
    if layer.attr("weights"):  # CNTK's own constant E (weights=), its value loaded from the weights file
        shape = tuple(layer.param("E").shape)
        return View(ctor="C.layers.Embedding", args={"weights": f"np.zeros({shape!r}, np.float32)"},
                    params=[("E", "E", "identity")])
    return View(ctor="C.layers.Embedding", pos=[str(layer.attr("dim"))],
                args={"init": init_expr(layer.attr("init"))}, params=[("E", "E", "identity")])


def _splice(lg, layer):
    return "lambda *xs: C.splice(*xs, axis=%d)" % _splice_axis(lg, layer)


def _splice_axis(lg, layer):
    return 0 if is_image(lg.nodes_of(layer)[0].type) else -1


LAYERS_FN = {  # one function per IR kind: the explicit registration table of this target
    "Dense": _dense, "Convolution": _conv, "MaxPooling": _pool, "AveragePooling": _pool,
    "Dropout": lambda lg, l: View(ctor="C.layers.Dropout", pos=[repr(float(l.attr("rate")))]),
    "Embedding": lambda lg, l: _embedding(l),
    "LSTM": _lstm, "BatchNormalization": _bn,
    "Activation": lambda lg, l: View(ctor="C.layers.Activation", pos=[_act(l, lg)]),
    "Rescale": _fn(lambda lg, l: "lambda x: " + _rescale(lg, l), lambda lg, l: _rescale(lg, l, "{x}")),
    "Flatten": _fn(lambda lg, l: "lambda x: C.reshape(x, (-1,))", lambda lg, l: "C.reshape({x}, (-1,))"),
    "Splice": _fn(_splice, lambda lg, l: "C.splice({xs}, axis=%d)" % _splice_axis(lg, l)),
    "SelectLast": _fn(lambda lg, l: "C.sequence.last", lambda lg, l: "C.sequence.last({x})"),
    "SelectFirst": _fn(lambda lg, l: "C.sequence.first", lambda lg, l: "C.sequence.first({x})"),
    "CosineDistance": _fn(lambda lg, l: "_cosine_similarity", lambda lg, l: "_cosine_similarity({xs})"),
    # CNTK's own Stabilizer: its scalar Parameter 'alpha' is the canonical alpha
    "Stabilizer": lambda lg, l: View(ctor="C.layers.Stabilizer", args={"steepness": repr(float(l.attr("steepness")))},
                                     params=[("alpha", "alpha", "identity")]),
    "Elementwise": _fn(lambda lg, l: CNTK_OPS[l.attr("op")], lambda lg, l: CNTK_OPS[l.attr("op")] + "({xs})"),
    "GRU": _gru,
    # CNTK's own Delay (past_value for T > 0, future_value for T < 0) on its native sequence axis;
    # initial_state always written, since a default_options scope could otherwise change it
    "Delay": lambda lg, l: View(ctor="C.layers.Delay", args={"T": repr(int(l.attr("T"))),
                                                             "initial_state": repr(float(l.attr("initial_state")))},
                                always=("T", "initial_state")),
    # CNTK's own LayerNormalization has a scalar scale and bias: _layer_norm (the template) has elementwise ones
    "LayerNormalization": lambda lg, l: View(
        ctor="_layer_norm", pos=[repr(tuple(lg.in_type(l).shape)), repr(float(l.attr("epsilon"))),
                                 repr(float(l.attr("initial_scale"))), repr(float(l.attr("initial_bias")))],
        params=[("scale", "scale", "identity"), ("bias", "bias", "identity")]),
    # CNTK's own global pools give (C, 1, 1); the IR's result is (C,)
    "GlobalAveragePooling": _fn(lambda lg, l: "lambda x: C.reshape(C.layers.GlobalAveragePooling()(x), (-1,))",
                                lambda lg, l: "C.reshape(C.layers.GlobalAveragePooling()({x}), (-1,))"),
    "GlobalMaxPooling": _fn(lambda lg, l: "lambda x: C.reshape(C.layers.GlobalMaxPooling()(x), (-1,))",
                            lambda lg, l: "C.reshape(C.layers.GlobalMaxPooling()({x}), (-1,))"),
}


def _view(fn):
    def view(lg, layer):
        return replace(fn(lg, layer), kind=layer.kind, name=layer.name, explicit=set(layer.explicit),
                       defaults=dict(layer.defaults))
    return view


LAYERS = {kind: _view(fn) for kind, fn in LAYERS_FN.items()}

# netdsl attribute names as CNTK writes them in `explicit`
EXPLICIT = {"activation": "activation", "init": "init", "bias": "bias", "init_bias": "init_bias", "pad": "pad",
            "strides": "strides", "go_backwards": "go_backwards"}


def _scope_value(key, value):
    """A default_options value as CNTK code, or None when CNTK's default_options cannot say it."""
    if key == "activation":
        return None if value == "gelu(approximate=False)" else act_expr(value)
    if key == "init":
        return init_expr(value)
    if key in ("bias",):
        return repr(bool(value))
    if key == "init_bias":
        return repr(float(value))
    if key == "pad" and isinstance(value, bool):
        return repr(value)
    return None


def _scope(lg, layers) -> dict:
    scope = {}
    for layer in layers:
        for k, v in layer.defaults:
            code = _scope_value(k, v)
            if code is None:
                continue
            if scope.get(k, code) != code:
                return {}
            scope[k] = code
    return scope


def layer_code(v: dict, scope: dict, name_expr: str) -> str:
    """The constructor call of one layer under a default_options scope."""
    if v.around is not None:
        return v.around.format(core=layer_code(replace(v, around=None), scope, name_expr))
    if v.ctor is None:
        return v.fn
    parts = list(v.pos)
    if v.kind in ("LSTM", "GRU") and "activation" in scope and parts[0].startswith(("C.layers.LSTM(", "C.layers.GRU(")):
        # CNTK's LSTM and GRU also take activation from default_options (tanh otherwise); netdsl's are tanh
        parts[0] = parts[0].replace(", name=", ", activation=C.tanh, name=", 1)
    for key, code in v.args.items():
        effective = scope.get(key, CNTK_DEFAULTS.get(key))
        if code != effective or key in v.always or (EXPLICIT.get(key) in v.explicit):
            parts.append(f"{key}={code}")
    if not v.unnamed:
        parts.append(f"name={name_expr}")
    core = f"{v.ctor}({', '.join(parts)})"
    if v.pattern and v.ctor == "C.layers.AveragePooling":
        # explicit pads must not be counted: the mean over zero-padded x divided by that over padded ones
        # is sum/count over the real cells only
        return f"_avg_pool_padded({core}, {v.pattern!r})"  # the template's helper
    if v.pattern:
        pad = f"lambda x: C.pad(x, pattern={v.pattern!r}, constant_value={v.pad_value})"
        return f"C.layers.Sequential([{pad}, {core}])"
    return core


def _same_kinds(lg, members):
    lists = [lg.flat_members(m) for m in members]
    kinds = [[lg.layer(n).kind for n in lst] for lst in lists]
    return lists if all(k == kinds[0] for k in kinds) else None


def _entity_code(lg, views, name, scope, ind) -> str:
    """Python source of a top-level entity (group or layer), indented by `ind` after its first line."""
    groups = lg.groups
    if name not in groups:
        return layer_code(views[name], scope, pyrepr(name))
    g = groups[name]
    if g.kind == "LayerStack" and g.repeat > 1:
        lists = _same_kinds(lg, g.members)
        if lists:
            n = g.repeat
            items = []
            for pos in range(len(lists[0])):
                vs = [views[lst[pos]] for lst in lists]
                items.append(_templated(vs, scope))
            inner = "".join(f"{ind}    {it},\n" for it in items)
            return f"C.layers.For(range({n}), lambda i: [\n{inner}{ind}], name={pyrepr(name)})"
    inner = "".join(f"{ind}    {_entity_code(lg, views, m, scope, ind + '    ')},\n" for m in g.members)
    return f"C.layers.Sequential([\n{inner}{ind}], name={pyrepr(name)})"


def _templated(vs, scope) -> str:
    """One constructor for the i-th repeat: values that differ become [a, b, c][i]."""
    codes = [layer_code(v, scope, pyrepr(v.name)) for v in vs]
    if all(c == codes[0] for c in codes):
        return codes[0]
    first = vs[0]
    if first.ctor is None:
        return codes[0]
    pos = []
    for k in range(len(first.pos)):
        vals = [v.pos[k] for v in vs]
        pos.append(vals[0] if len(set(vals)) == 1 else "[" + ", ".join(vals) + "][i]")
    args = {}
    for key in first.args:
        vals = [v.args[key] for v in vs]
        args[key] = vals[0] if len(set(vals)) == 1 else "[" + ", ".join(vals) + "][i]"
    names = "[" + ", ".join(pyrepr(v.name) for v in vs) + "][i]"
    merged = replace(first, pos=pos, args=args, explicit=set().union(*(v.explicit for v in vs)))
    if any(v.pattern != first.pattern for v in vs):
        return codes[0]  # never reached for uniform stacks; keep the first as a fallback
    return layer_code(merged, scope, names)


def check(lg: Legacy) -> list:
    diags = structure_diagnostics(lg, "cntk")
    diags += _untrained_batch_norms(lg)
    momenta = {float(layer.attr("momentum")) for layer in lg.graph.layers if layer.kind == "BatchNormalization"}
    if len(momenta) > 1:
        layer = next(layer for layer in lg.graph.layers if layer.kind == "BatchNormalization")
        diags.append(cannot(lg, layer, "cntk", "batch norms with different momenta (the generated "
                            "train_step re-blends CNTK's running statistics with one momentum)"))
    for layer in lg.graph.layers:
        if layer.kind in ("Convolution", "MaxPooling", "AveragePooling") and len(
                layer.attr("kernel") or layer.attr("window")) == 1 and not keeps_length(layer):
            diags.append(cannot(lg, layer, "cntk", "a 1-D window that changes the sequence length (strides > 1, or "
                                "pads other than k - 1 steps): CNTK 2.7 puts such a result on a new sequence axis, which "
                                "the labels and the model's other sequences do not share"))
        if layer.attr("activation") == "gelu(approximate=False)":
            diags.append(cannot(lg, layer, "cntk", "the exact gelu, x * (1 + erf(x / sqrt 2)) / 2: CNTK 2.7 has no "
                                "erf (gelu(approximate=True), the tanh form, it has)"))
    return diags


def _untrained_batch_norms(lg: Legacy) -> list:
    """With several outputs, CNTK's trainer evaluates only the trained first one (the loss's graph), so a batch
    norm applied off that graph would keep running statistics every other target moves in the step."""
    by_name = {n.name: n for n in lg.graph.nodes}
    trained, todo = set(), [lg.graph.outputs[0]]
    while todo:
        v = todo.pop()
        if v in by_name and v not in trained:
            trained.add(v)
            todo.extend(by_name[v].inputs)
    return [cannot(lg, lg.layer(n.layer), "cntk", "a batch normalization applied only for an output the loss does not "
                   "train: CNTK's trainer evaluates the trained output alone, so its running statistics would not move")
            for n in lg.graph.nodes if n.name not in trained and lg.layer(n.layer).kind == "BatchNormalization"][:1]


def context(lg: Legacy, views: dict) -> dict:
    ctx = common_context(lg)
    params = []
    for layer in lg.graph.layers:
        for short, cntk_short, conv in views[layer.name].params:
            p = layer.param(short)
            params.append({"name": p.name, "layer": layer.name, "cntk": cntk_short, "conv": conv,
                           "shape": tuple(p.shape), "trainable": p.trainable})
    entities, statements = {}, []
    uses = {}
    for c in legacy_calls(lg):
        uses[c["entity"]] = uses.get(c["entity"], 0) + 1
    groups = set(lg.groups)
    for c in legacy_calls(lg):
        e = c["entity"]
        layers = [lg.layer(n) for n in lg.flat_members(e)]
        scope = _scope(lg, layers)
        if e in groups or uses[e] > 1:
            if e not in entities:
                ev = lg.local(e, e + "_layer" if e in lg.value_names else e)
                entities[e] = ev
                statements.append({"kind": "define", "var": ev, "scope": scope,
                                   "code": _entity_code(lg, views, e, scope, "        " if scope else "    ")})
            statements.append({"kind": "apply", "out": c["output"], "fn": entities[e], "ins": c["inputs"]})
        elif views[e].ctor is None:
            statements.append({"kind": "expr", "out": c["output"],
                               "code": views[e].call.format(x=c["inputs"][0], xs=", ".join(c["inputs"]))})
        else:
            statements.append({"kind": "apply", "out": c["output"], "fn": _entity_code(lg, views, e, {}, "    "),
                               "ins": c["inputs"]})
    out_t = lg.value_type(lg.graph.outputs[0])
    ctx["over_time"] = any(v.around == OVER_TIME for v in views.values())
    ctx["avg_pool_padded"] = any(v.pattern and v.ctor == "C.layers.AveragePooling" for v in views.values())
    ctx.update(
        params=params, statements=statements,
        bn=any(v.kind == "BatchNormalization" for v in views.values()),
        bn_momentum=next((float(layer.attr("momentum")) for layer in lg.graph.layers
                          if layer.kind == "BatchNormalization"), None),
        uses={kind: any(v.kind == kind for v in views.values()) for kind in LAYERS},
        scalars=any(p["shape"] == () for p in params),
        # an LSTM's stabilizers: Parameters named "alpha" in named blocks inside the layer ("block/alpha")
        nested_params=any(layer.kind in ("LSTM", "GRU") and layer.attr("stabilize") for layer in lg.graph.layers),
        out_seq=out_t.seq, out_classes=out_t.shape[-1] if out_t.shape else 1,
        out_channels=out_t.shape[0] if is_image(out_t) else None,
        out_positions=math.prod(out_t.shape[1:]) if is_image(out_t) else None,
        out_elements=math.prod(out_t.shape) if out_t.shape else 1,
        vocabs={i.name: i.type.vocab for i in lg.graph.inputs if i.type.vocab is not None},
        # padded batches (docs/ir.md): each sequence is fed cut to its length, on CNTK's dynamic axis
        seq_inputs=[i.name for i in lg.graph.inputs if i.type.seq],
        output_sources=output_sources(lg.graph),
        gru_after=any(layer.kind == "GRU" and layer.attr("reset_after") for layer in lg.graph.layers),
        gru_h1=[(layer.param("H").name, layer.name) for layer in lg.graph.layers
                if layer.kind == "GRU" and not layer.attr("reset_after")],
    )
    ctx.update(step_rule(lg.graph.training, out_t.seq))
    ctx["max_norms"] = {layer.param("W").name: float(layer.attr("max_norm")) for layer in lg.graph.layers
                        if layer.kind in ("Dense", "Convolution") and layer.attr("max_norm") is not None}
    ctx["loss_terms"] = (ctx["out_positions"] if ctx["loss"] == "cross_entropy_with_softmax" and is_image(out_t)
                         else 1 if ctx["loss"] == "cross_entropy_with_softmax" else ctx["out_elements"])
    return ctx


def step_rule(training: ir.Training | None, out_seq: bool) -> dict:
    """The train block's step rule (exec/steprule.py) for the template: `rule` (STEP_RULE in the module)
    and whether CNTK's own sgd/momentum_sgd/nesterov compute it exactly (`native_learner`).

    CNTK's momentum learners keep velocity = momentum * velocity + lr * gradient, the rate inside, so a
    rate that changes between steps (a schedule, SGD's decay) moves them off torch's buf = momentum * buf
    + g; their clipping is per parameter and per sample, and their L2 term comes after clipping. Those
    settings, and every other optimizer, go through the template's numpy learner."""
    t = training or ir.Training()
    l2 = t.weight_decay if t.weight_decay_mode == "l2" else 0.0
    decoupled = t.weight_decay if t.weight_decay_mode == "decoupled" else 0.0
    if t.optimizer == "AdamW":
        decoupled = t.opt("weight_decay", 0.01)
    reduction = dict(t.loss_attrs).get("reduction", "mean")
    varying = t.schedule is not None or bool(t.opt("decay", 0.0))
    # per-sample units natively: CNTK's per-sample rate multiplies the sum over every time step, netdsl's
    # lr_unit = sample the minibatch mean times the number of sequences
    native = (t.optimizer == "SGD" and not l2 and not decoupled and t.clip_norm is None and t.clip_value is None
              and reduction == "mean" and not (varying and t.opt("momentum", 0.0))
              and not (t.lr_unit == "sample" and out_seq))
    rule = {"schedule": t.schedule, "schedule_args": dict(t.schedule_attrs), "lr_unit": t.lr_unit,
            "reduction": reduction, "l2": l2, "decoupled": decoupled, "clip_value": t.clip_value,
            "clip_norm": t.clip_norm}
    return {"rule": rule, "native_learner": native, "varying_lr": varying}


# every setting of the train block this target's generated module and script implement (emit/training.py)
HONOURED = {
    "optimizers": {name: set(spec) for name, spec in OPTIMIZERS.items()},
    "losses": {"cross_entropy_with_softmax", "squared_error", "l2", "binary_cross_entropy_with_logits"},
    "settings": {"seed", "lr_schedule", "lr_unit", "weight_decay", "clip_norm", "clip_value", "loss.reduction",
                 "validation_split", "log_every", "early_stopping", "metrics", "max_norm"},
}


TEMPLATE = "cntk/module.py.j2"
TARGET = Target(name="cntk", template=TEMPLATE, layers=LAYERS, context=context, check=check,
                prepare=lambda graph: Legacy(graph, TEMPLATE, ("build_model",)), extras={"training": HONOURED})
