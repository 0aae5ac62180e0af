"""--target tf-estimator: a TF1-style model_fn for tf.estimator (TensorFlow 2.15, tf.compat.v1).

The model_fn is written node by node with tf.compat.v1.layers (conv2d,
max_pooling2d, average_pooling2d, dense, dropout with training=mode == TRAIN,
batch_normalization) and tf.keras.layers.LSTM where tf.compat.v1.layers has
no recurrent layer. Images run NHWC (TF's CPU kernels): canonical NCHW inputs
are transposed on entry and image outputs on exit; a Dense that reads a
flattened NHWC image gets its canonical weight rows permuted on load and
export. A layer applied twice reuses its variables (reuse=AUTO_REUSE).

Padding: "same" where the layer's pads equal TF's SAME split (TF puts the odd
pixel at the end, netdsl puts (k-1)//2 first: they differ at stride 2),
"valid" where there are none, and an explicit tf.pad otherwise (-inf for max
pooling, a sum/count average for average pooling so padding is never
counted).

Canonical weights enter through a checkpoint: load_netdsl_weights builds the
TRAIN graph, assigns the converted arrays and saves model.ckpt-0 into the
Estimator's model_dir (optimizer slots zero, global_step 0), which every
later train/evaluate/predict restores; export_netdsl_weights reads the
latest checkpoint back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Callable

from ..layers.common import split_activation
from ..layers.elementwise import OPS
from ..train_block import OPTIMIZERS
from .base import EmitBug, Target, pyrepr
from .common import is_1d_window, number
from .layout import layout
from .legacy import (
    Legacy,
    cannot,
    common_context,
    is_image,
    rescale_terms,
    structure_diagnostics,
)
from .passes.masks import RECURRENCES, length_sources
from .passes.nhwc_flatten import dense_rows, flatten_orders

ACT = {None: None, "relu": "tf.nn.relu", "sigmoid": "tf.nn.sigmoid", "tanh": "tf.nn.tanh", "softmax": "tf.nn.softmax",
       "elu": "tf.nn.elu", "softplus": "tf.nn.softplus", "silu": "tf.nn.silu"}


def act_apply(act: str, x: str) -> str:
    """An IR activation applied to the expression x."""
    name, params = split_activation(act)
    if name == "leaky_relu":
        return f"tf.nn.leaky_relu({x}, alpha={params['alpha']!r})"
    if name == "gelu":
        return f"tf.nn.gelu({x}, approximate={params['approximate']})"
    if name == "hard_sigmoid":  # the IR's relu6(x + 3) / 6; TF 2.15's hard_sigmoid is 0.2 x + 0.5
        return f"tf.clip_by_value({x} / 6.0 + 0.5, 0.0, 1.0)"
    return f"{ACT[name]}({x})"


def act_fn(act: str | None) -> str | None:
    """An IR activation as the callable a tf.compat.v1.layers constructor takes."""
    if act in ACT:
        return ACT[act]
    return f"lambda v: {act_apply(act, 'v')}"


def same_pads(size, k, s):
    """TF's SAME split along one axis: (before, after)."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _padding(lg, layer, kernel):
    """('same' | 'valid', explicit NHWC pads or None)."""
    it = lg.in_type(layer)
    pads = tuple(tuple(p) for p in layer.attr("pads"))
    strides = tuple(layer.attr("strides"))
    if pads == ((0, 0), (0, 0)):
        return "valid", None
    h, w = it.shape[-2:]  # an image (C, H, W), or the (H, W) value of a Convolution with reduction_rank=0
    tf_same = (same_pads(h, kernel[0], strides[0]), same_pads(w, kernel[1], strides[1]))
    if pads == tf_same:
        return "same", None
    return "valid", [[0, 0], list(pads[0]), list(pads[1]), [0, 0]]


@dataclass
class Statement:
    """One node of model_fn: its variable, its inputs' variables, and what the passes found."""

    out: str
    ins: list
    in_image: bool  # its first input is an (NHWC) image
    nhwc_flat: bool  # a Flatten that keeps NHWC order (nhwc_flatten pass)
    lengths: str | None = None  # the (N,) lengths of its first input, a sequence (docs/ir.md)


@dataclass
class View:
    """A layer as tf.compat.v1 code: the statement of one application, and where its weights go."""

    write: Callable  # fn(Statement) -> the statement's code
    params: list = field(default_factory=list)  # (canonical short name, TF variable short name, conversion)
    setup: str | None = None  # a line before the statements (the Keras LSTM layer object)
    avg_pads: bool = False  # uses _avg_pool_padded


LAYERS: dict = {}  # IR kind -> fn(lg, layer) -> View


def emits(*kinds):
    """Register the function that writes these IR kinds (one per kind; a second is a bug)."""
    def register(fn):
        for kind in kinds:
            if kind in LAYERS:
                raise EmitBug(f"tf-estimator: two emitters for {kind}")
            LAYERS[kind] = fn
        return fn
    return register


def _named(lg, layer) -> str:
    """name=..., and reuse of the variables when the layer is applied more than once."""
    shared = ", reuse=tf.compat.v1.AUTO_REUSE" if len(lg.nodes_of(layer)) > 1 else ""
    return f"name={pyrepr(layer.name)}{shared}"


def _padded(s: Statement, pads, value: str) -> str:
    return f"tf.pad({s.ins[0]}, {pyrepr(pads)}, constant_values={value})" if pads else s.ins[0]


@emits("Dense")
def dense(lg, layer):
    head = f"{layer.attr('units')}, activation={act_fn(layer.attr('activation'))}, " \
           f"use_bias={pyrepr(bool(layer.attr('bias')))}, {_named(lg, layer)}"

    it, shape = lg.in_type(layer), layer.attr("out_shape")

    def write(s):
        if s.in_image and layer.attr("map_axes"):  # input_rank=2: each channel's (H, W) map, in C order
            c, h, w = it.shape
            return (f"{s.out} = tf.compat.v1.layers.dense(tf.reshape(tf.transpose({s.ins[0]}, [0, 3, 1, 2]), "
                    f"[-1, {c}, {h * w}]), {head})")
        if s.in_image:
            return (f"{s.out} = tf.compat.v1.layers.dense(tf.compat.v1.layers.flatten({s.ins[0]}), {head})"
                    "  # NHWC-flattened: rows permuted on load")
        if (len(it.shape) == 1 or layer.attr("map_axes")) and shape is None:  # dense's product is on the last axis
            return f"{s.out} = tf.compat.v1.layers.dense({s.ins[0]}, {head})"
        # a rank-2 tensor in (made by Dense((3, 4))) or out: row-major reshapes, as the IR's
        lead = f"tf.shape({s.ins[0]})[0], -1" if it.seq else "-1"
        x = s.ins[0] if len(it.shape) == 1 else f"tf.reshape({s.ins[0]}, [{lead}, {prod(it.shape)}])"
        y = f"tf.compat.v1.layers.dense({x}, {head})"
        return f"{s.out} = {y}" if shape is None else f"{s.out} = tf.reshape({y}, [{lead}, {', '.join(map(str, shape))}])"
    params = [("W", "kernel", "dense"), ("b", "bias", "identity")] if layer.attr("bias") else [("W", "kernel", "dense")]
    return View(write, params)


def _padding_1d(lg, layer, k):
    """A 1-D window over (N, T, F): ('same' | 'valid', explicit [[0, 0], [before, after], [0, 0]] or None)."""
    (pads,), s, size = tuple(tuple(p) for p in layer.attr("pads")), layer.attr("strides")[0], lg.in_type(layer).length
    if pads == (0, 0):
        return "valid", None
    if (size is not None or s == 1) and pads == same_pads(size if size is not None else k, k, s):
        return "same", None
    return "valid", [[0, 0], list(pads), [0, 0]]


def convolution_1d(lg, layer):
    """conv1d over (N, T, F), F the channels; its kernel (k, F, O) is W (O, F, k) transposed."""
    k = layer.attr("kernel")[0]
    padding, pads = _padding_1d(lg, layer, k)
    tail = (f"{layer.attr('filters')}, {k}, strides={layer.attr('strides')[0]}, "
            f"padding={pyrepr(padding)}, activation={act_fn(layer.attr('activation'))}, "
            f"use_bias={pyrepr(bool(layer.attr('bias')))}, {_named(lg, layer)}")
    params = [("W", "kernel", "transpose")] + ([("b", "bias", "identity")] if layer.attr("bias") else [])
    return View(lambda s: f"{s.out} = tf.compat.v1.layers.conv1d({_padded(s, pads, '0.0')}, {tail})", params)


def pooling_1d(lg, layer):
    """max_pooling1d/average_pooling1d over (N, T, F); explicit pads: -inf for max, and for average
    _avg_pool_padded over the (N, T, 1, F) image, which counts the real steps only."""
    k, st = layer.attr("window")[0], layer.attr("strides")[0]
    padding, pads = _padding_1d(lg, layer, k)
    fn = "max_pooling1d" if layer.kind == "MaxPooling" else "average_pooling1d"
    if layer.kind == "AveragePooling" and pads:
        pads4 = pads[:2] + [[0, 0], [0, 0]]
        return View(lambda s: f"{s.out} = tf.squeeze(_avg_pool_padded(tf.expand_dims({s.ins[0]}, 2), ({k}, 1), "
                              f"({st}, 1), {pyrepr(pads4)}), 2)", avg_pads=True)
    tail = f"{k}, {st}, padding={pyrepr(padding)}, name={pyrepr(layer.name)}"
    return View(lambda s: f"{s.out} = tf.compat.v1.layers.{fn}({_padded(s, pads, '-np.inf')}, {tail})")


@emits("Convolution")
def convolution(lg, layer):
    if is_1d_window(layer):
        return convolution_1d(lg, layer)
    kernel = tuple(layer.attr("kernel"))
    padding, pads = _padding(lg, layer, kernel)
    tail = (f"{layer.attr('filters')}, {pyrepr(kernel)}, strides={pyrepr(tuple(layer.attr('strides')))}, "
            f"padding={pyrepr(padding)}, activation={act_fn(layer.attr('activation'))}, "
            f"use_bias={pyrepr(bool(layer.attr('bias')))}, {_named(lg, layer)}")
    params = [("W", "kernel", "oihw_hwio"), ("b", "bias", "identity")] if layer.attr("bias") \
        else [("W", "kernel", "oihw_hwio")]
    if layer.attr("reduction_rank") == 0 or layer.attr("no_filter_axis"):  # (H, W) in or out: no channel axis
        def write(s):
            # a row-major (H, W) value is the one-channel NHWC image (H, W, 1); without num_filters, the
            # (H', W', 1) result is the rank-2 (H', W')
            x = f"tf.expand_dims({s.ins[0]}, -1)" if layer.attr("reduction_rank") == 0 else s.ins[0]
            x = f"tf.pad({x}, {pyrepr(pads)}, constant_values=0.0)" if pads else x
            y = f"tf.compat.v1.layers.conv2d({x}, {tail})"
            return f"{s.out} = tf.squeeze({y}, -1)" if layer.attr("no_filter_axis") else f"{s.out} = {y}"
        return View(write, params)
    return View(lambda s: f"{s.out} = tf.compat.v1.layers.conv2d({_padded(s, pads, '0.0')}, {tail})", params)


@emits("MaxPooling")
def max_pooling(lg, layer):
    if is_1d_window(layer):
        return pooling_1d(lg, layer)
    window = tuple(layer.attr("window"))
    padding, pads = _padding(lg, layer, window)
    tail = (f"{pyrepr(window)}, {pyrepr(tuple(layer.attr('strides')))}, padding={pyrepr(padding)}, "
            f"name={pyrepr(layer.name)}")
    return View(lambda s: f"{s.out} = tf.compat.v1.layers.max_pooling2d({_padded(s, pads, '-np.inf')}, {tail})")


@emits("AveragePooling")
def average_pooling(lg, layer):
    if is_1d_window(layer):
        return pooling_1d(lg, layer)
    window, strides = tuple(layer.attr("window")), pyrepr(tuple(layer.attr("strides")))
    padding, pads = _padding(lg, layer, window)
    if pads:  # padding is never counted: sum / count over the real cells
        return View(lambda s: f"{s.out} = _avg_pool_padded({s.ins[0]}, {pyrepr(window)}, {strides}, {pyrepr(pads)})",
                    avg_pads=True)
    return View(lambda s: f"{s.out} = tf.compat.v1.layers.average_pooling2d({s.ins[0]}, {pyrepr(window)}, "
                          f"{strides}, padding={pyrepr(padding)}, name={pyrepr(layer.name)})")


@emits("Dropout")
def dropout(lg, layer):
    return View(lambda s: f"{s.out} = tf.compat.v1.layers.dropout({s.ins[0]}, rate={pyrepr(float(layer.attr('rate')))}, "
                          f"training=training, name={pyrepr(layer.name)})")


@emits("BatchNormalization")
def batch_norm(lg, layer):
    # Only TF's fused kernel (4-D input) updates the moving variance with the unbiased batch variance,
    # as netdsl does; vectors and sequences go through it as (-1, 1, 1, C).
    image = len(layer.param("scale").shape) == 1 and any(
        len(lg.value_type(n.inputs[0]).shape) == 3 for n in lg.nodes_of(layer))
    args = (f"axis=-1, momentum={pyrepr(1.0 - float(layer.attr('momentum')))}, "
            f"epsilon={pyrepr(float(layer.attr('epsilon')))}, training=training")
    params = [("scale", "gamma", "identity"), ("bias", "beta", "identity"),
              ("running_mean", "moving_mean", "identity"), ("running_var", "moving_variance", "identity")]
    if image:
        return View(lambda s: f"{s.out} = tf.compat.v1.layers.batch_normalization({s.ins[0]}, {args}, "
                              f"{_named(lg, layer)})", params)
    channels = layer.param("scale").shape[0]
    return View(lambda s: f"{s.out} = tf.reshape(tf.compat.v1.layers.batch_normalization(tf.reshape({s.ins[0]}, "
                          f"[-1, 1, 1, {channels}]), {args}, fused=True, {_named(lg, layer)}), tf.shape({s.ins[0]}))",
                params)


@emits("Embedding")
def embedding(lg, layer):
    t, fixed = lg.in_type(layer), layer.attr("weights") is not None
    if t.vocab is None or fixed:  # float vectors: x @ E, a dense layer whose kernel (V, dim) is E
        # a fixed E (weights=, loaded from the weights file) is not trained; ids as one-hot rows select E's rows exactly
        head = f"{layer.attr('dim')}, use_bias=False, {'trainable=False, ' if fixed else ''}{_named(lg, layer)}"
        x = (lambda s: f"tf.one_hot({s.ins[0]}, {t.vocab})") if t.vocab is not None else (lambda s: s.ins[0])
        return View(lambda s: f"{s.out} = tf.compat.v1.layers.dense({x(s)}, {head})", [("E", "kernel", "identity")])
    vocab, dim = lg.in_type(layer).vocab, layer.attr("dim")
    return View(lambda s: f"{s.out} = _embedding({s.ins[0]}, {vocab}, {dim}, {pyrepr(layer.name)})",
                [("E", "embeddings", "identity")])


@emits("LSTM")
def lstm(lg, layer):
    local = lg.local(layer.name, layer.name)  # the Keras layer object is a local of model_fn
    backwards = bool(layer.attr("go_backwards"))
    setup = (f"{local} = tf.keras.layers.LSTM({layer.attr('units')}, return_sequences=True"
             f"{', go_backwards=True' if backwards else ''}, recurrent_initializer=\"glorot_uniform\", "
             f"unit_forget_bias=False, name={pyrepr(layer.name)})")
    params = [("W", "lstm_cell/kernel", "transpose"), ("H", "lstm_cell/recurrent_kernel", "transpose"),
              ("b", "lstm_cell/bias", "identity")]
    if layer.attr("cell") is not None:  # cell_shape: the _ProjectedLSTMCell helper under tf.keras.layers.RNN
        setup = (f"{local} = tf.keras.layers.RNN(_ProjectedLSTMCell({layer.attr('units')}, {layer.attr('cell')}), "
                 f"return_sequences=True{', go_backwards=True' if backwards else ''}, name={pyrepr(layer.name)})")
        params = [("W", "cell/kernel", "transpose"), ("H", "cell/recurrent_kernel", "transpose"),
                  ("b", "cell/bias", "identity"), ("P", "cell/projection", "transpose")]
    if layer.attr("peepholes") or layer.attr("stabilize"):  # the _CNTKLSTMCell helper under tf.keras.layers.RNN
        have = {p.name.rsplit(".", 1)[1] for p in layer.params}
        opts = "".join(f", {k}=True" for k, present in (("projection", "P" in have), ("peepholes", "Ci" in have),
                                                         ("stabilize", "Sdh" in have)) if present)
        setup = (f"{local} = tf.keras.layers.RNN(_CNTKLSTMCell({layer.attr('units')}, "
                 f"{layer.attr('cell') or layer.attr('units')}{opts}), "
                 f"return_sequences=True{', go_backwards=True' if backwards else ''}, name={pyrepr(layer.name)})")
        tf_names = {"W": ("cell/kernel", "transpose"), "H": ("cell/recurrent_kernel", "transpose"),
                    "b": ("cell/bias", "identity"), "Ci": ("cell/peephole_i", "identity"),
                    "Cf": ("cell/peephole_f", "identity"), "Co": ("cell/peephole_o", "identity"),
                    "P": ("cell/projection", "transpose"), "Sdh": ("cell/alpha_dh", "identity"),
                    "Sdc": ("cell/alpha_dc", "identity"), "Sct": ("cell/alpha_c", "identity"),
                    "Sht": ("cell/alpha_hr", "identity")}
        params = [(k, *tf_names[k]) for k in tf_names if k in have]

    def write(s):
        if layer.attr("initial_state"):
            return _write_with_state(s, layer, local)
        if s.lengths:  # padded batches (docs/ir.md): keras masking, padded outputs zeroed
            return f"{s.out} = _recurrence({local}, {s.ins[0]}, {s.lengths}, {pyrepr(backwards)})"
        if backwards:
            return f"{s.out} = tf.reverse({local}({s.ins[0]}), axis=[1])  # keras returns go_backwards steps last-first"
        return f"{s.out} = {local}({s.ins[0]})"
    return View(write, params, setup=setup)


@emits("GRU")
def gru(lg, layer):
    # tf.keras's GRU, with the written reset_after; its gates are z, r, n (swapped on load and export),
    # and a reset_after GRU's b and bh are the rows of its one (2, 3n) bias
    local = lg.local(layer.name, layer.name)
    backwards = bool(layer.attr("go_backwards"))
    reset_after = bool(layer.attr("reset_after"))
    setup = (f"{local} = tf.keras.layers.GRU({layer.attr('units')}, return_sequences=True"
             f"{', go_backwards=True' if backwards else ''}, reset_after={reset_after}, "
             f"recurrent_initializer=\"glorot_uniform\", name={pyrepr(layer.name)})")
    cell = "gru_cell"
    if layer.attr("stabilize"):  # enable_self_stabilization (reset_after=False): the _CNTKGRUCell helper
        setup = (f"{local} = tf.keras.layers.RNN(_CNTKGRUCell({layer.attr('units')}), return_sequences=True"
                 f"{', go_backwards=True' if backwards else ''}, name={pyrepr(layer.name)})")
        cell = "cell"

    def write(s):
        if layer.attr("initial_state"):
            return _write_with_state(s, layer, local)
        if s.lengths:  # padded batches (docs/ir.md): keras masking, padded outputs zeroed
            return f"{s.out} = _recurrence({local}, {s.ins[0]}, {s.lengths}, {pyrepr(backwards)})"
        if backwards:
            return f"{s.out} = tf.reverse({local}({s.ins[0]}), axis=[1])  # keras returns go_backwards steps last-first"
        return f"{s.out} = {local}({s.ins[0]})"
    params = [("W", f"{cell}/kernel", "gru"), ("H", f"{cell}/recurrent_kernel", "gru")]
    if reset_after:
        params += [("b", "gru_cell/bias", "gru_bias_in"), ("bh", "gru_cell/bias", "gru_bias_rec")]
    else:
        params.append(("b", f"{cell}/bias", "gru_bias"))
    if layer.attr("stabilize"):
        params.append(("Sdh", "cell/alpha_dh", "identity"))
    return View(write, params, setup=setup)


def _write_with_state(s, layer, local: str) -> str:
    """A recurrence from Recurrence's initial_state: keras's initial_state=, a constant (N, units) h
    (and an LSTM's c)."""
    state = f"_initial_state({s.ins[0]}, {layer.attr('units')}, {number(layer.attr('initial_state'))}"
    state += ", 2)" if layer.kind == "LSTM" else ", 1)"
    backwards = bool(layer.attr("go_backwards"))
    if s.lengths:  # padded batches (docs/ir.md): keras masking, padded outputs zeroed
        return f"{s.out} = _recurrence({local}, {s.ins[0]}, {s.lengths}, {pyrepr(backwards)}, {state})"
    if backwards:
        return f"{s.out} = tf.reverse({local}({s.ins[0]}, initial_state={state}), axis=[1])"
    return f"{s.out} = {local}({s.ins[0]}, initial_state={state})"


@emits("Activation")
def activation(lg, layer):
    return View(lambda s: f"{s.out} = {act_apply(layer.attr('activation'), s.ins[0])}")


@emits("Rescale")
def rescale(lg, layer):
    t = rescale_terms(layer)
    grouped = t["has_mean"] or t["has_std"]

    def write(s):
        e = ("(" if grouped else "") + s.ins[0] + (f" * {pyrepr(t['scale'])}" if t["has_scale"] else "")
        e += (f" - {pyrepr(t['mean'])}" if t["has_mean"] else "") + (")" if grouped else "")
        return f"{s.out} = {e}" + (f" / {pyrepr(t['std'])}" if t["has_std"] else "")
    return View(write)


@emits("Flatten")
def flatten(lg, layer):
    if lg.in_type(layer).seq:  # a sequence of vectors is flat at every step already (docs/ir.md)
        if len(lg.in_type(layer).shape) > 1:  # of rank-2 tensors (Dense((3, 4))): each step row-major
            return View(lambda s: f"{s.out} = tf.reshape({s.ins[0]}, [tf.shape({s.ins[0]})[0], -1, "
                        f"{prod(lg.in_type(layer).shape)}])")
        return View(lambda s: f"{s.out} = {s.ins[0]}")

    def write(s):
        if s.nhwc_flat:
            return (f"{s.out} = tf.compat.v1.layers.flatten({s.ins[0]})"
                    "  # NHWC order: the next Dense's rows are permuted on load")
        if s.in_image:
            return (f"{s.out} = tf.compat.v1.layers.flatten(tf.transpose({s.ins[0]}, [0, 3, 1, 2]))"
                    "  # canonical NCHW order")
        return f"{s.out} = tf.compat.v1.layers.flatten({s.ins[0]})"
    return View(write)


@emits("Splice")
def splice(lg, layer):
    return View(lambda s: f"{s.out} = tf.concat([{', '.join(s.ins)}], axis=-1)")


@emits("SelectLast", "SelectFirst")
def select(lg, layer):
    at = "-1" if layer.kind == "SelectLast" else "0"

    def write(s):
        if s.lengths and layer.kind == "SelectLast":  # each sample's last valid step (docs/ir.md)
            return f"{s.out} = tf.gather({s.ins[0]}, {s.lengths} - 1, axis=1, batch_dims=1)"
        return f"{s.out} = {s.ins[0]}[:, {at}]"
    return View(write)


@emits("CosineDistance")
def cosine(lg, layer):
    return View(lambda s: f"{s.out} = _cosine_similarity({', '.join(s.ins)})")


@emits("Stabilizer")
def stabilizer(lg, layer):
    args = f"{pyrepr(float(layer.attr('steepness')))}, {pyrepr(layer.name)}"
    return View(lambda s: f"{s.out} = _stabilizer({s.ins[0]}, {args})", [("alpha", "alpha", "identity")])


@emits("Elementwise")
def elementwise(lg, layer):
    return View(lambda s: f"{s.out} = {s.ins[0]} {OPS[layer.attr('op')]} {s.ins[1]}")


@emits("Delay")
def delay(lg, layer):
    # pad |T| steps of initial_state on the time axis of (N, L, F), then keep L steps
    shift, value = int(layer.attr("T")), float(layer.attr("initial_state"))
    pads = f"[[0, 0], [{shift}, 0], [0, 0]]" if shift > 0 else f"[[0, 0], [0, {-shift}], [0, 0]]"
    keep = f"[:, :-{shift}]" if shift > 0 else f"[:, {-shift}:]"

    def write(s):
        shifted = f"tf.pad({s.ins[0]}, {pads}, constant_values={value!r}){keep}"
        if shift > 0 or not s.lengths:
            return f"{s.out} = {shifted}"
        # a padded batch (docs/ir.md): a step whose source is at or beyond its sample's length reads initial_state
        # a call, not `a >= b`: layout() splits brackets, never a long comparison
        beyond = (f"tf.greater_equal(tf.range(tf.shape({s.ins[0]})[1])[None, :, None] + {-shift}, "
                  f"tf.cast({s.lengths}, tf.int32)[:, None, None])")
        return f"{s.out} = tf.where({beyond}, tf.cast({value!r}, {s.ins[0]}.dtype), {shifted})"
    return View(write)

@emits("GlobalAveragePooling", "GlobalMaxPooling")
def global_pooling(lg, layer):
    # images run NHWC here: the positions are axes 1 and 2; the result is (N, C)
    fn = "tf.reduce_mean" if layer.kind == "GlobalAveragePooling" else "tf.reduce_max"
    return View(lambda s: f"{s.out} = {fn}({s.ins[0]}, axis=[1, 2], name={pyrepr(layer.name)})")


@emits("LayerNormalization")
def layer_norm(lg, layer):
    # tf.compat.v1.layers has none: _layer_norm in the template, over a sample's features (per time step)
    t = lg.in_type(layer)
    if is_image(t):  # NHWC here: the scale and bias are (H, W, C)
        axes, shape, conv = [1, 2, 3], (t.shape[1], t.shape[2], t.shape[0]), "chw_hwc"
    else:
        axes, shape, conv = [2 if t.seq else 1], tuple(t.shape), "identity"
    args = f"{axes!r}, {shape!r}, {pyrepr(float(layer.attr('epsilon')))}, {pyrepr(layer.name)}"
    return View(lambda s: f"{s.out} = _layer_norm({s.ins[0]}, {args})",
                [("scale", "gamma", conv), ("bias", "beta", conv)])


def check(lg: Legacy) -> list:
    diags = structure_diagnostics(lg, "tf-estimator")
    for layer in lg.graph.layers:
        t = lg.in_type(layer) if layer.kind == "LayerNormalization" else None
        if t is not None and not is_image(t) and len(t.shape) != 1:
            diags.append(cannot(lg, layer, "tf-estimator", f"a layer normalization of {t.describe()}: it is "
                                "written for vectors, sequences of vectors and images"))
    _, conflicts = dense_rows(lg)
    for layer in conflicts:
        diags.append(cannot(lg, layer, "tf-estimator", "it reads flattened images in one application and "
                            "other vectors in another, so no single row order of its NHWC weights fits both"))
    return diags


def context(lg: Legacy, views: dict) -> dict:
    ctx = common_context(lg)
    rows, _ = dense_rows(lg)
    orders = flatten_orders(lg)
    params = []
    for layer in lg.graph.layers:
        for short, tf_short, conv in views[layer.name].params:
            p = layer.param(short)
            chw = rows.get(layer.name) if conv == "dense" else None
            params.append({"name": p.name, "tf": f"{layer.name}/{tf_short}", "conv": "dense_nhwc" if chw else conv,
                           "chw": chw, "shape": tuple(p.shape)})
    seq_inputs = [i["name"] for i in ctx["inputs"] if i["seq"]]
    length_var = {i: lg.local("\0lengths:" + i, "lengths" if len(seq_inputs) == 1 else lg.var(i) + "_lengths")
                  for i in seq_inputs}
    sources = length_sources(lg)
    statements, seen_calls = [], set()
    for node in lg.graph.nodes:
        layer = lg.layer(node.layer)
        v = views[layer.name]
        entity = lg.top[layer.name]
        key = node.call or node.name
        comment = None
        if entity != layer.name and key not in seen_calls:
            g = lg.groups[entity]
            comment = f"{entity}: {g.kind}" + (f" of {g.repeat}" if g.kind == "LayerStack" else "")
        seen_calls.add(key)
        st = Statement(lg.var(node.name), [lg.var(i) for i in node.inputs],
                       is_image(lg.value_type(node.inputs[0])), node.name in orders,
                       length_var.get(sources.get(node.inputs[0])))
        statements.append({"code": layout(v.write(st), 4), "comment": comment})  # laid out here: 10,000s of them
    ctx.update(
        statements=statements,
        params=params,
        # WEIGHTS' entries, written here rather than in the template: 20,000 of them for a deep model
        weight_entries=[layout(f"{pyrepr(p['name'])}: ({pyrepr(p['shape'])}, {pyrepr(p['tf'])}, "
                               f"{pyrepr(p['conv'])}, {pyrepr(p['chw'])}),", 4) for p in params],
        setup=[v.setup for v in views.values() if v.setup],
        id_inputs=[i["name"] for i in ctx["inputs"] if i["ids"]],
        image_inputs=[i.name for i in lg.graph.inputs if is_image(i.type)],
        uses=dict.fromkeys(LAYERS, False) | {layer.kind: True for layer in lg.graph.layers if layer.kind in LAYERS},
        avg_pads=any(v.avg_pads for v in views.values()),
        projected_lstm=any(layer.kind == "LSTM" and layer.attr("cell") is not None and not layer.attr("peepholes")
                           and not layer.attr("stabilize") for layer in lg.graph.layers),
        cntk_lstm=any(layer.kind == "LSTM" and (layer.attr("peepholes") or layer.attr("stabilize"))
                      for layer in lg.graph.layers),
        cntk_gru=any(layer.kind == "GRU" and layer.attr("stabilize") for layer in lg.graph.layers),
    )
    loss_source = sources.get(lg.graph.outputs[0]) if ctx["outputs"][0]["seq"] else None
    ctx.update(  # variable-length batches (docs/ir.md)
        length_vars=[{"name": i, "var": length_var[i], "input": lg.var(i)} for i in seq_inputs],
        loss_lengths=length_var.get(loss_source),
        recurrences=any(layer.kind in RECURRENCES for layer in lg.graph.layers),
        initial_states=any(layer.kind in RECURRENCES and layer.attr("initial_state") for layer in lg.graph.layers),
    )
    ctx["train"] = train_settings(lg.graph.training)
    t = lg.graph.training
    # main()'s script-level keys, through common/training.py.j2's helpers
    ctx["script"] = {"validation": bool(t and t.validation_split), "log_every": bool(t and t.log_every),
                     "early_stopping": bool(t and t.early_stopping),
                     "metrics": bool(t and any(m != "accuracy" for m in t.metrics))}
    # max_norm (exec/steprule.py step 7) on the TF kernels: Dense (in, out) and Conv2D HWIO keep each
    # output unit on their last axis, so the norm runs over all the others (any row permutation is harmless)
    ctx["max_norms"] = [{"tf": f"{layer.name}/kernel", "max": float(layer.attr("max_norm")),
                         "axes": [0] if layer.kind == "Dense" else [0, 1, 2]}
                        for layer in lg.graph.layers
                        if layer.kind in ("Dense", "Convolution") and layer.attr("max_norm") is not None]
    return ctx


def train_settings(t) -> dict:
    """The train block's optimisation settings as templates/tf_estimator/training.py.j2 writes them."""
    if t is None:
        return {"schedule": None, "decay": 0.0, "lr_unit": "minibatch", "l2": 0.0, "decoupled": 0.0,
                "clip_norm": None, "clip_value": None, "reduction": "mean"}
    decoupled = t.weight_decay if t.weight_decay_mode == "decoupled" else 0.0
    if t.optimizer == "AdamW":  # decoupled by definition (exec/steprule.StepRule)
        decoupled = t.opt("weight_decay", 0.01)
    return {"schedule": t.schedule, "schedule_attrs": dict(t.schedule_attrs),
            "decay": t.opt("decay", 0.0) if t.optimizer == "SGD" else 0.0, "lr_unit": t.lr_unit,
            "l2": t.weight_decay if t.weight_decay_mode == "l2" else 0.0, "decoupled": decoupled,
            "clip_norm": t.clip_norm, "clip_value": t.clip_value,
            "reduction": dict(t.loss_attrs).get("reduction", "mean")}


# what the generated module implements of the train block (netdsl/emit/training.py refuses the rest)
TRAINING = {
    "optimizers": {name: set(args) for name, args in OPTIMIZERS.items()},
    "losses": {"cross_entropy_with_softmax", "squared_error", "l2", "binary_cross_entropy_with_logits"},
    "settings": {"seed", "lr_schedule", "lr_unit", "weight_decay", "clip_norm", "clip_value", "loss.reduction",
                 "max_norm", "validation_split", "log_every", "early_stopping", "metrics"},
}


TEMPLATE = "tf_estimator/module.py.j2"
TARGET = Target(name="tf-estimator", template=TEMPLATE, layers=LAYERS, context=context, check=check,
                prepare=lambda graph: Legacy(graph, TEMPLATE, ("model_fn",)), extras={"training": TRAINING})
