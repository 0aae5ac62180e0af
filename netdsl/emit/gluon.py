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

from dataclasses import dataclass, field

from .. import ir
from ..layers.common import split_activation
from ..layers.elementwise import OPS
from ..train_block import OPTIMIZERS
from .base import EmitBug, Target, pyrepr
from .common import as_2d_window, is_1d_window
from .layout import element, layout
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
from .passes.masks import RECURRENCES, length_sources

# a HybridBlock's own attributes (mxnet 1.9): a child block must not take one of these names
BLOCK_ATTRS = frozenset("""
    apply cast collect_params export forward hybrid_forward hybridize infer_shape infer_type initialize load
    load_parameters load_params name name_scope optimize_for params prefix register_child register_forward_hook
    register_forward_pre_hook register_op_hook save save_parameters save_params summary
""".split())

# ---------------------------------------------------------------------------
# Gluon

ACT = {None: None, "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "softmax": None, "softplus": "softrelu"}


@dataclass
class View:
    """A layer as Gluon code: the block's constructor expression and where its parameters go."""

    code: str
    params: list = field(default_factory=list)  # (canonical short name, gluon parameter name, [frozen twin])
    padded: bool = False  # an explicit _pad() in front
    bn: dict | None = None  # a BatchNorm's running-variance bookkeeping for train_step
    takes_lengths: bool = False  # called as block(x, lengths): a recurrence or select_last (docs/ir.md)


LAYERS: dict = {}  # IR kind -> fn(lg, layer) -> View


def emits(*kinds):
    """Register the function that writes these IR kinds (one per kind; a second is a bug)."""
    def register(fn):
        for kind in kinds:
            if kind in LAYERS:
                raise EmitBug(f"gluon: two emitters for {kind}")
            LAYERS[kind] = fn
        return fn
    return register


def _prefix(layer: ir.Layer) -> str:
    return pyrepr(layer.name + "_")


def _act_kw(layer: ir.Layer) -> str:
    return f"activation={pyrepr(ACT.get(layer.attr('activation')))}"  # else a block after it (_softmax)


def _softmax(layer: ir.Layer, out_t: ir.TensorType) -> list:
    """The softmax block after a layer with activation=softmax (Gluon's activations have none)."""
    act = layer.attr("activation")
    if act != "softmax":
        return [] if act in ACT else [act_block(act)]  # and the activations no act_type spells
    return [f"nn.HybridLambda(lambda F, x: F.softmax(x, axis={_softmax_axis(out_t)}))"]


def act_block(act: str) -> str:
    """The block of an IR activation that Gluon's activation= cannot say."""
    name, params = split_activation(act)
    if name == "elu":
        return "nn.ELU()"  # alpha 1.0, the IR's
    if name == "leaky_relu":
        return f"nn.LeakyReLU({params['alpha']!r})"
    if name == "gelu" and not params["approximate"]:
        return "nn.GELU()"  # mxnet's act_type='gelu', the erf form
    if name == "gelu":
        # a call at the top: layout() splits its brackets (a long `a * b` would stay one line)
        return ("nn.HybridLambda(lambda F, x: F.broadcast_mul(0.5 * x, 1 + F.tanh(0.7978845608028654 * "
                "(x + 0.044715 * x * x * x))))")
    if name == "silu":
        return "nn.HybridLambda(lambda F, x: x * F.sigmoid(x))"
    if name == "hard_sigmoid":  # the IR's relu6(x + 3) / 6
        return "nn.HybridLambda(lambda F, x: F.clip(x / 6.0 + 0.5, 0.0, 1.0))"
    raise EmitBug(f"gluon: no spelling for the activation {act}")


def _softmax_axis(t: ir.TensorType) -> int:
    return 1 if (len(t.shape) == 3 and not t.seq) else -1


def _wrap(layer: ir.Layer, parts: list) -> str:
    return parts[0] if len(parts) == 1 else f"_sequential({_prefix(layer)}, [{', '.join(parts)}])"


def _pads(pads):
    """(symmetric padding, or None) and the F.pad width for asymmetric pads (or None)."""
    (t, b), (l, r) = pads
    if t == b and l == r:
        return (t, l), None
    return (0, 0), (0, 0, 0, 0, t, b, l, r)


def _weights(layer: ir.Layer) -> list:
    return [("W", "weight"), ("b", "bias")] if layer.attr("bias") else [("W", "weight")]


@emits("Dense")
def dense(lg, layer):
    it = lg.in_type(layer)
    mapped = layer.attr("map_axes") or 0  # input_rank/map_rank: flatten=False maps over the leading axes
    flat = not it.seq and not mapped
    in_units = prod(it.shape[mapped:])
    core = (f"nn.Dense({layer.attr('units')}, {_act_kw(layer)}, use_bias={pyrepr(bool(layer.attr('bias')))}, "
            f"flatten={pyrepr(flat)}, in_units={in_units}, prefix={_prefix(layer)})")
    # rank-2 tensors (Dense((3, 4))): F.reshape is row-major, as the IR; 0 keeps the batch (and time) axis
    keep = (0, 0) if it.seq else (0,)
    before = [_reshape(keep + (0,) * mapped + (-1,))] if (it.seq or mapped) and len(it.shape) - mapped > 1 else []
    shape = layer.attr("out_shape")
    after = [] if shape is None else [_reshape(keep + tuple(shape))]
    return View(_wrap(layer, before + [core] + after + _softmax(layer, lg.out_type(layer))), _weights(layer))


def _reshape(shape: tuple) -> str:
    return f"nn.HybridLambda(lambda F, x: F.reshape(x, shape={shape!r}))"


# a sequence (N, T, F) <-> (N, F, T), the NCW layout of Gluon's Conv1D (mxnet's CPU kernels take no NWC)
TO_NCW = "nn.HybridLambda(lambda F, x: F.transpose(x, axes=(0, 2, 1)))"
TO_NWC = TO_NCW
# (N, T, F) <-> the (N, F, 1, T) image on which a 1-D window is a 1 x k one (F.pad takes 4-D arrays only)
TO_IMAGE = "nn.HybridLambda(lambda F, x: F.expand_dims(F.transpose(x, axes=(0, 2, 1)), axis=2))"
FROM_IMAGE = "nn.HybridLambda(lambda F, x: F.transpose(F.squeeze(x, axis=2), axes=(0, 2, 1)))"


def convolution_1d(lg, layer):
    """Conv1D over the NCW transpose of (N, T, F); W (O, F, k) is its weight as is. Asymmetric pads go on
    through the 4-D image, the only rank F.pad takes."""
    (before, after), = layer.attr("pads")
    padding = before if before == after else 0
    core = (f"nn.Conv1D({layer.attr('filters')}, {layer.attr('kernel')[0]}, strides={layer.attr('strides')[0]}, "
            f"padding={padding}, in_channels={lg.in_type(layer).shape[0]}, {_act_kw(layer)}, "
            f"use_bias={pyrepr(bool(layer.attr('bias')))}, prefix={_prefix(layer)})")
    pad = []
    if before != after:
        width = (0, 0, 0, 0, 0, 0, before, after)
        pad = [(f"nn.HybridLambda(lambda F, x: F.squeeze(F.pad(F.expand_dims(x, axis=2), mode=\"constant\", "
                f"pad_width={width!r}, constant_value=0.0), axis=2))")]
    return View(_sequential_1d(layer, [TO_NCW] + pad + [core, TO_NWC] + _softmax(layer, lg.out_type(layer))),
                _weights(layer))


def _sequential_1d(layer: ir.Layer, parts: list) -> str:
    return f"_sequential({_prefix(layer)}, [{', '.join(parts)}])"


def pooling_1d(fn):
    """A 1-D pooling is the 2-D one (fn) on the (N, F, 1, T) image of the sequence, window 1 x k."""
    def emit(lg, layer):
        if not is_1d_window(layer):
            return fn(lg, layer)
        view = fn(lg, as_2d_window(layer))
        view.code = _sequential_1d(layer, [TO_IMAGE, view.code, FROM_IMAGE])
        return view
    return emit


@emits("Convolution")
def convolution(lg, layer):
    if is_1d_window(layer):
        return convolution_1d(lg, layer)
    padding, pad_width = _pads(layer.attr("pads"))
    core = (f"nn.Conv2D({layer.attr('filters')}, {pyrepr(tuple(layer.attr('kernel')))}, "
            f"strides={pyrepr(tuple(layer.attr('strides')))}, padding={pyrepr(padding)}, "
            f"in_channels={layer.param('W').shape[1]}, {_act_kw(layer)}, "
            f"use_bias={pyrepr(bool(layer.attr('bias')))}, prefix={_prefix(layer)})")
    pad = [f"_pad({pyrepr(pad_width)}, 0.0)"] if pad_width else []
    if layer.attr("reduction_rank") == 0:  # (N, H, W) without a channel axis: the (N, 1, H, W) image
        pad = ["nn.HybridLambda(lambda F, x: F.expand_dims(x, axis=1))"] + pad
    # num_filters left out: the (N, 1, H', W') result is the rank-2 (N, H', W')
    squeeze = ["nn.HybridLambda(lambda F, x: F.squeeze(x, axis=1))"] if layer.attr("no_filter_axis") else []
    return View(_wrap(layer, pad + [core] + squeeze + _softmax(layer, lg.out_type(layer))), _weights(layer),
                padded=bool(pad_width))


@emits("MaxPooling")
@pooling_1d
def max_pooling(lg, layer):
    padding, pad_width = _pads(layer.attr("pads"))
    core = (f"nn.MaxPool2D(pool_size={pyrepr(tuple(layer.attr('window')))}, "
            f"strides={pyrepr(tuple(layer.attr('strides')))}, padding={pyrepr(padding)}, prefix={_prefix(layer)})")
    pad = [f"_pad({pyrepr(pad_width)}, -np.inf)"] if pad_width else []
    return View(_wrap(layer, pad + [core]), padded=bool(pad_width))


@emits("AveragePooling")
@pooling_1d
def average_pooling(lg, layer):
    padding, pad_width = _pads(layer.attr("pads"))
    window, strides = pyrepr(tuple(layer.attr("window"))), pyrepr(tuple(layer.attr("strides")))
    if pad_width:  # count_include_pad=False cannot see pads Gluon does not make itself
        return View(f"_avg_pool_padded({window}, {strides}, {pyrepr(pad_width)}, {_prefix(layer)})", padded=True)
    return View(f"nn.AvgPool2D(pool_size={window}, strides={strides}, padding={pyrepr(padding)}, "
                f"count_include_pad=False, prefix={_prefix(layer)})")


@emits("Dropout")
def dropout(lg, layer):
    return View(f"nn.Dropout({pyrepr(float(layer.attr('rate')))}, prefix={_prefix(layer)})")


@emits("BatchNormalization")
def batch_norm(lg, layer):
    it = lg.in_type(layer)
    momentum = 1.0 - float(layer.attr("momentum"))
    channels = it.shape[0] if not it.seq else it.shape[-1]
    code = (f"nn.BatchNorm(axis={1 if not it.seq else 2}, momentum={pyrepr(momentum)}, "
            f"epsilon={pyrepr(float(layer.attr('epsilon')))}, in_channels={channels}, prefix={_prefix(layer)})")
    bn = {"name": layer.name + "_running_var", "per_sample": prod(it.shape[1:]) if not it.seq else 1,
          "seq": it.seq, "momentum": momentum}
    return View(code, [("scale", "gamma"), ("bias", "beta"), ("running_mean", "running_mean"),
                       ("running_var", "running_var")], bn=bn)


@emits("LayerNormalization")
def layer_norm(lg, layer):
    return View(f"nn.LayerNorm(axis=-1, epsilon={pyrepr(float(layer.attr('epsilon')))}, "
                f"in_channels={lg.in_type(layer).shape[-1]}, prefix={_prefix(layer)})",
                [("scale", "gamma"), ("bias", "beta")])


@emits("Embedding")
def embedding(lg, layer):
    if lg.in_type(layer).vocab is None:  # float vectors: x @ E (_VectorEmbedding, module.py.j2)
        V, dim = layer.param("E").shape
        return View(f"_VectorEmbedding({V}, {dim}, prefix={_prefix(layer)})", [("E", "weight")])
    return View(f"nn.Embedding({lg.in_type(layer).vocab}, {layer.attr('dim')}, prefix={_prefix(layer)})",
                [("E", "weight")])


@emits("LSTM")
def lstm(lg, layer):
    if _cntk_options(layer):  # rnn.LSTM has no peepholes nor stabilizers: _CNTKLSTM, a loop over time
        have = {p.name.rsplit(".", 1)[1] for p in layer.params}
        options = ("P" in have, "Ci" in have, "Sdh" in have)
        core = (f"_CNTKLSTM({layer.attr('units')}, {layer.attr('cell') or layer.attr('units')}, "
                f"{lg.in_type(layer).shape[-1]}, {options!r}, prefix={_prefix(layer)})")
        names = [(k, v) for k, v in (("W", "i2h_weight"), ("H", "h2h_weight"), ("b", "i2h_bias"), ("Ci", "peephole_i"),
                                     ("Cf", "peephole_f"), ("Co", "peephole_o"), ("P", "h2r_weight"),
                                     ("Sdh", "alpha_dh"), ("Sdc", "alpha_dc"), ("Sct", "alpha_c"),
                                     ("Sht", "alpha_hr")) if k in have]
        return View(_recurrence(layer, core), names, takes_lengths=True)
    if layer.attr("cell") is not None:
        # cell_shape: the _ProjectedLSTM helper, a loop over time (MXNet 1.9's rnn.LSTM(projection_size=)
        # runs forward on CPU but refuses to train there)
        core = (f"_ProjectedLSTM({layer.attr('units')}, {layer.attr('cell')}, {lg.in_type(layer).shape[-1]}, "
                f"prefix={_prefix(layer)})")
        return View(_recurrence(layer, core),
                    [("W", "i2h_weight"), ("H", "h2h_weight"), ("b", "i2h_bias"), ("P", "h2r_weight")],
                    takes_lengths=True)
    core = (f"rnn.LSTM({layer.attr('units')}, layout='NTC', input_size={lg.in_type(layer).shape[-1]}, "
            f"prefix={_prefix(layer)})")
    return View(_recurrence(layer, core),
                [("W", "l0_i2h_weight"), ("H", "l0_h2h_weight"), ("b", "l0_i2h_bias", "l0_h2h_bias")],
                takes_lengths=True)


def _cntk_options(layer: ir.Layer) -> bool:
    """An LSTM with peepholes or self-stabilizers: the _CNTKLSTM helper."""
    return bool(layer.attr("peepholes") or layer.attr("stabilize"))


def _recurrence(layer: ir.Layer, core: str) -> str:
    """The recurrence block `core` under _Recurrence: padded steps (from the lengths) zeroed, go_backwards
    run over each sample's reversed valid prefix (docs/ir.md)."""
    state = ""
    if layer.attr("initial_state") and not core.startswith("_GRUResetBefore"):  # that one takes its own
        state = f", initial_state={pyrepr(layer.attr('initial_state'))}, units={layer.attr('units')}"
    return f"_Recurrence({core}, {pyrepr(bool(layer.attr('go_backwards')))}, prefix={_prefix(layer)}{state})"


@emits("GRU")
def gru(lg, layer):
    # rnn.GRU is cuDNN's GRU: gates r, z, n as netdsl's, the reset gate after the recurrent product, two
    # biases; reset_after=False (CNTK's GRU) is the _GRUResetBefore helper, a loop over time
    units, size = layer.attr("units"), lg.in_type(layer).shape[-1]
    if layer.attr("reset_after"):
        core = f"rnn.GRU({units}, layout='NTC', input_size={size}, prefix={_prefix(layer)})"
        params = [("W", "l0_i2h_weight"), ("H", "l0_h2h_weight"), ("b", "l0_i2h_bias"), ("bh", "l0_h2h_bias")]
    else:
        state = f", initial_state={pyrepr(layer.attr('initial_state'))}" if layer.attr("initial_state") else ""
        state += ", stabilize=True" if layer.attr("stabilize") else ""  # enable_self_stabilization: alpha_dh
        core = f"_GRUResetBefore({units}, {size}, prefix={_prefix(layer)}{state})"
        params = [("W", "i2h_weight"), ("H", "h2h_weight"), ("b", "i2h_bias")]
        params += [("Sdh", "alpha_dh")] if layer.attr("stabilize") else []
    return View(_recurrence(layer, core), params, takes_lengths=True)


@emits("Activation")
def activation(lg, layer):
    softmax = _softmax(layer, lg.out_type(layer))
    if softmax:
        return View(softmax[0])
    return View(f"nn.Activation({pyrepr(ACT[layer.attr('activation')])}, prefix={_prefix(layer)})")


@emits("Rescale")
def rescale(lg, layer):
    t = rescale_terms(layer)
    grouped = t["has_mean"] or t["has_std"]
    body = ("(" if grouped else "") + "x" + (f" * {pyrepr(t['scale'])}" if t["has_scale"] else "")
    body += (f" - {pyrepr(t['mean'])}" if t["has_mean"] else "") + (")" if grouped else "")
    body += f" / {pyrepr(t['std'])}" if t["has_std"] else ""
    return View(f"nn.HybridLambda(lambda F, x: {body}, prefix={_prefix(layer)})")


@emits("Flatten")
def flatten(lg, layer):
    if lg.in_type(layer).seq:  # a sequence of vectors is flat at every step already (docs/ir.md)
        if len(lg.in_type(layer).shape) > 1:  # of rank-2 tensors (Dense((3, 4))): each step row-major
            return View(f"nn.HybridLambda(lambda F, x: F.reshape(x, shape=(0, 0, -1)), prefix={_prefix(layer)})")
        return View(f"nn.HybridLambda(lambda F, x: x, prefix={_prefix(layer)})")
    return View(f"nn.Flatten(prefix={_prefix(layer)})")


@emits("Splice")
def splice(lg, layer):
    return View(f"nn.HybridLambda(lambda F, *xs: F.concat(*xs, dim={_softmax_axis(lg.out_type(layer))}), "
                f"prefix={_prefix(layer)})")


@emits("SelectLast", "SelectFirst")
def select(lg, layer):
    if layer.kind == "SelectLast":  # each sample's last valid step (docs/ir.md)
        return View(f"_SelectLast(prefix={_prefix(layer)})", takes_lengths=True)
    begin, end = ("-1", "None") if layer.kind == "SelectLast" else ("0", "1")
    return View(f"nn.HybridLambda(lambda F, x: F.squeeze(F.slice_axis(x, axis=1, begin={begin}, end={end}), "
                f"axis=1), prefix={_prefix(layer)})")


@emits("CosineDistance")
def cosine(lg, layer):
    return View(f"nn.HybridLambda(_cosine_similarity, prefix={_prefix(layer)})")


@emits("Stabilizer")
def stabilizer(lg, layer):
    return View(f"_Stabilizer({pyrepr(float(layer.attr('steepness')))}, prefix={_prefix(layer)})", [("alpha", "alpha")])


@emits("Elementwise")
def elementwise(lg, layer):
    return View(f"nn.HybridLambda(lambda F, a, b: a {OPS[layer.attr('op')]} b, prefix={_prefix(layer)})")


@emits("Delay")
def delay(lg, layer):
    shift, value = int(layer.attr("T")), float(layer.attr("initial_state"))
    # T < 0 takes the lengths: on a padded batch its last steps read initial_state, not padding
    return View(f"_Delay({shift}, {value!r}, prefix={_prefix(layer)})", takes_lengths=shift < 0)

@emits("GlobalAveragePooling", "GlobalMaxPooling")
def global_pooling(lg, layer):
    # gluon's global pools keep (N, C, 1, 1); the IR's result is (N, C)
    pool = "nn.GlobalAvgPool2D()" if layer.kind == "GlobalAveragePooling" else "nn.GlobalMaxPool2D()"
    return View(f"_sequential({_prefix(layer)}, [{pool}, nn.Flatten()])")


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
        for entry in views[layer.name].params:
            short, names = entry[0], entry[1:]
            p = layer.param(short)
            params.append({"name": p.name, "gluon": [layer.name + "_" + n for n in names],
                           "shape": tuple(p.shape), "trainable": p.trainable})
    ctx.update(
        # WEIGHTS' entries, written here rather than in the template: 20,000 of them for a deep model
        weight_entries=[layout(f"{pyrepr(p['name'])}: ({pyrepr(p['shape'])}, "
                               f"{', '.join(map(pyrepr, p['gluon']))}),", 4) for p in params],
        tree=block_tree(lg, views),
        calls=calls(lg),
        params=params,
        frozen=[n for p in params for n in p["gluon"][1:]],
        uses=dict.fromkeys(LAYERS, False) | {layer.kind: True for layer in lg.graph.layers if layer.kind in LAYERS},
        scalars=any(p["shape"] == () for p in params),  # held as (1,) Parameters: mxnet 1.x has no 0-d ones
        pads=any(v.padded for v in views.values()),
        bn_vars=[v.bn for v in views.values() if v.bn is not None],
        seq_input=next((k for k, i in enumerate(ctx["inputs"]) if i["seq"]), None),
        gru_after=any(layer.kind == "GRU" and layer.attr("reset_after") for layer in lg.graph.layers),
        gru_before=any(layer.kind == "GRU" and not layer.attr("reset_after") for layer in lg.graph.layers),
        projected_lstm=any(layer.kind == "LSTM" and layer.attr("cell") is not None and not _cntk_options(layer)
                           for layer in lg.graph.layers),
        rnn_lstm=any(layer.kind == "LSTM" and layer.attr("cell") is None and not _cntk_options(layer)
                     for layer in lg.graph.layers),
        cntk_lstm=any(layer.kind == "LSTM" and _cntk_options(layer) for layer in lg.graph.layers),
    )
    # Embedding(weights=...): a constant (grad_req 'null'), loaded from the weights file
    ctx["frozen"] = ctx["frozen"] + [layer.name + "_weight" for layer in lg.graph.layers
                                     if layer.kind == "Embedding" and layer.attr("weights")]
    ctx["vector_embedding"] = any(layer.kind == "Embedding" and lg.in_type(layer).vocab is None
                                  for layer in lg.graph.layers)
    ctx.update(_mask_context(lg, views, ctx))  # replaces calls: the ones that take lengths get them
    ctx["children"] = [child_statement(node, ctx["length_groups"]) for node in ctx["tree"]]
    t = lg.graph.training or ir.Training()
    ctx["rule"] = step_rule(t)
    # main()'s script-level keys, through common/training.py.j2's helpers
    ctx["script"] = {"validation": bool(t.validation_split), "log_every": t.log_every is not None,
                     "early_stopping": t.early_stopping is not None,
                     "metrics": any(m != "accuracy" for m in t.metrics)}
    # Gluon weight name -> max_norm (exec/steprule.py's step 7); Dense (out, in) and Conv2D OIHW are canonical
    ctx["max_norm"] = {f"{layer.name}_weight": float(layer.attr("max_norm")) for layer in lg.graph.layers
                       if layer.kind in ("Dense", "Convolution") and layer.attr("max_norm") is not None}
    return ctx


def _mask_context(lg: Legacy, views: dict, ctx: dict) -> dict:
    """Variable-length batches (docs/ir.md): Net.hybrid_forward takes one (N,) lengths argument per
    sequence input; every call whose block holds a recurrence or select_last gets its input's."""
    seq_inputs = [i["name"] for i in ctx["inputs"] if i["seq"]]
    arg = {i: lg.local("\0lengths:" + i, "lengths" if len(seq_inputs) == 1 else lg.var(i) + "_lengths")
           for i in seq_inputs}
    sources = length_sources(lg)
    consumers = {name for name, v in views.items() if v.takes_lengths}
    out = []
    for c in calls(lg):
        nodes = [lg.producer[n] for n in c["nodes"]]
        source = sources.get(nodes[0].inputs[0]) if nodes[0].inputs else None
        if source in arg and any(n.layer in consumers for n in nodes):  # a chain: one source throughout
            c = dict(c, inputs=c["inputs"] + [arg[source]])
        out.append(c)
    loss_source = sources.get(lg.graph.outputs[0]) if ctx["outputs"][0]["seq"] else None
    return {
        "calls": out,
        "length_inputs": seq_inputs,
        "length_defaults": [arg[i] + "=None" for i in seq_inputs],
        "loss_lengths": seq_inputs.index(loss_source) if loss_source in arg else None,
        "length_groups": {g for g in lg.groups if any(m in consumers for m in lg.flat_members(g))},
        "uses_select_last": any(layer.kind == "SelectLast" for layer in lg.graph.layers),
        "recurrences": any(layer.kind in RECURRENCES for layer in lg.graph.layers),
        "initial_states": any(layer.kind in RECURRENCES and layer.attr("initial_state") for layer in lg.graph.layers),
    }


def step_rule(t: ir.Training) -> dict:
    """The train block's settings around the optimizer (exec/steprule.py), as train_step applies them."""
    decoupled = t.weight_decay if t.weight_decay_mode == "decoupled" else 0.0
    if t.optimizer == "AdamW":  # decoupled by definition (train_block refuses decoupled(...) on top)
        decoupled = t.opt("weight_decay", 0.01)
    return {
        "lr_unit": t.lr_unit,
        "l2": t.weight_decay if t.weight_decay_mode == "l2" else 0.0,
        "decoupled": decoupled,
        "clip_value": t.clip_value,
        "clip_norm": t.clip_norm,
        "reduction": dict(t.loss_attrs).get("reduction", "mean"),
    }


# what the generated script implements (netdsl/emit/training.py refuses the rest, E802): every optimizer with
# every argument, every loss and reduction, schedules, lr_unit, both weight decays, both clippings and max_norm, each
# checked against netdsl's executor over 20 steps by tests/test_train_gluon.py
TRAINING = {
    "optimizers": {name: set(args) for name, args in OPTIMIZERS.items()},
    "losses": {"cross_entropy_with_softmax", "squared_error", "l2", "binary_cross_entropy_with_logits"},
    "settings": {"seed", "lr_schedule", "lr_unit", "weight_decay", "clip_norm", "clip_value", "loss.reduction",
                 "max_norm", "validation_split", "log_every", "early_stopping", "metrics"},
}

def child_statement(node: dict, length_groups: set) -> str:
    """`self.<attr> = <block>` for Net.__init__ (indent 8), laid out as layout() lays out the whole
    statement. A group's brackets always explode (its kind comment forces them), so its lines are
    its members' own layouts, each from layout.element: once for thousands of members that differ
    only in their digits, where layout() of the whole statement re-read them all. What element()
    declines (a member with a comment) and empty groups take layout() of the whole statement."""
    if node["type"] == "group":
        code = _group_lines(node, length_groups, 8, "")
        if code is not None:
            return f"self.{node['attr']} = {code}"
    return layout(f"self.{node['attr']} = {_block_source(node, ' ' * 8, length_groups)}", 8)


def _group_lines(node: dict, length_groups: set, indent: int, trailer: str):
    if not node["members"]:
        return None
    pad = " " * indent
    name = element(pyrepr(node["name"] + "_"), indent + 4)
    lines = [_sequential_of(node, length_groups) + "(", f"{pad}    {name}", f"{pad}    [  {_kind_comment(node)}"]
    for m in node["members"]:
        sub = _group_lines(m, length_groups, indent + 8, ",") if m["type"] == "group" else \
            element(m["view"].code, indent + 8)
        if sub is None:
            return None
        lines.append(f"{pad}        {sub}")
    return "\n".join(lines + [f"{pad}    ],", f"{pad}){trailer}"])


def _block_source(node: dict, ind: str, length_groups: set) -> str:
    """A block's code before layout: a group on several lines, each member on its own."""
    if node["type"] != "group":
        return node["view"].code
    members = "".join(f"{ind}    {_block_source(m, ind + '    ', length_groups)},\n" for m in node["members"])
    return f"{_sequential_of(node, length_groups)}({pyrepr(node['name'] + '_')}, [  {_kind_comment(node)}\n{members}{ind}])"


def _sequential_of(node: dict, length_groups: set) -> str:
    return "_length_sequential" if node["name"] in length_groups else "_sequential"


def _kind_comment(node: dict) -> str:
    return f"# {node['kind']}" + (f" of {node['repeat']}" if node["kind"] == "LayerStack" else "")


TEMPLATE = "gluon/module.py.j2"
TARGET = Target(name="gluon", template=TEMPLATE, layers=LAYERS, context=context, check=check,
                prepare=lambda graph: Legacy(graph, TEMPLATE, ("Net",), BLOCK_ATTRS),
                extras={"training": TRAINING})
