"""Convolution: a 2-D convolution over NCHW images, W in OIHW layout; with a one-element filter_shape
(k,) (or Convolution1D), a 1-D convolution over the time axis of a sequence of vectors (N, T, F), whose
feature axis F is the channel axis (seed 004: the input's channel axis is reduced), W in OIW layout.

CNTK 2.7's reduction_rank=0 (an input without a channel axis: a rank-2 (H, W) value, convolved as the image
(1, H, W)) and num_filters left out (one filter, and the output (H', W') has no filter axis) are kept in the IR
only when used (reduction_rank 0, no_filter_axis True), so a plain convolution's IR is unchanged."""
from __future__ import annotations

from ..ir import TensorType
from ..shapes import ShapeError, sequence_window_output, window_output
from ..values import describe, describe_dim, is_dim
from . import REQUIRED, Constructor, LayerKind, register
from .common import (
    DEFAULT_INIT,
    bias_init,
    first_error,
    max_norm,
    positive,
    weights,
    window,
    window1d,
)


def cntk_only(a: dict):
    """CNTK arguments netdsl takes only at the value it implements; any other is refused, never ignored."""
    if not isinstance(a.get("sharing", True), bool):
        return "sharing", f"Convolution sharing must be True or False, got {describe(a['sharing'])}"
    if a.get("sharing", True) is not True:
        return "sharing", ("Convolution sharing=False (a separate filter per position) is not supported: "
                           "netdsl's convolution shares its filters, CNTK's default sharing=True")
    rank = a.get("reduction_rank", 1)
    if rank not in (0, 1) or isinstance(rank, bool):
        return "reduction_rank", (f"Convolution reduction_rank must be 1 (reduce over the input's channel axis) "
                                  f"or 0 (an input without a channel axis), got {describe(rank)}")
    if rank == 0 and is_1d(a):
        return "reduction_rank", ("a 1-D Convolution with reduction_rank=0 would read a sequence of scalars, "
                                  "which netdsl has no value for; give the sequence a feature axis of 1 "
                                  "(reduction_rank=1)")
    return None


def rank(a: dict):
    """3-D (volumes) convolution is not implemented: say so, not "not a pair"."""
    fs = a["filter_shape"]
    if isinstance(fs, tuple) and len(fs) == 3 and all(is_dim(d) for d in fs):
        return "filter_shape", (f"3-D convolution (filter_shape {fs!r}) is not supported yet: netdsl's Convolution "
                                f"is 2-D over (channels, height, width) images, with filter_shape k or (kh, kw), "
                                f"or 1-D over a sequence of vectors, with filter_shape (k,)")
    return None


def is_1d(a: dict) -> bool:
    fs = a["filter_shape"]
    return isinstance(fs, tuple) and len(fs) == 1


def check(a: dict):
    out = dict(a)
    res = first_error(lambda: rank(a),
                      lambda: window1d("Convolution", a, out) if is_1d(a) else window("Convolution", a, out),
                      lambda: filters(a),
                      lambda: weights(a, out),
                      lambda: cntk_only(a),
                      lambda: max_norm("Convolution", a, out))
    if res is not None:
        return res
    out.pop("sharing", None)
    return out


def complete(attrs: dict, training) -> dict:
    """reduction_rank stays in the IR only when 0, so a plain Convolution's IR is unchanged; num_filters left
    out is one filter whose axis the output drops (no_filter_axis, only then)."""
    out = {k: v for k, v in attrs.items() if not (k == "reduction_rank" and v == 1)}
    if out.get("filters") is None:
        out["filters"], out["no_filter_axis"] = 1, True
    return out


def filters(a: dict):
    """num_filters left out (CNTK's None): one filter and no filter axis in the output, for 2-D only."""
    if a.get("num_filters") is None:
        if is_1d(a):
            return "num_filters", ("a 1-D Convolution needs num_filters: without it the result would be a sequence "
                                   "of scalars, which netdsl has no value for")
        if a.get("activation") == "softmax":
            return "activation", ("Convolution without num_filters makes a rank-2 value, and the targets disagree "
                                  "on the axis a softmax of one normalises; apply softmax to a vector")
        return None
    return positive("Convolution", "num_filters", a)


def check_1d(a: dict):
    """Convolution1D(k, n): filter_shape k or (k,), always 1-D."""
    fs = a["filter_shape"]
    if isinstance(fs, int) and not isinstance(fs, bool):
        a = {**a, "filter_shape": (fs,)}
    if not is_1d(a):
        return "filter_shape", f"Convolution1D filter_shape must be a positive integer or (k,), got {describe_dim(fs)}"
    return check(a)


def shape(a, ins):
    (t,) = ins
    if len(a["kernel"]) == 1:
        out_t, pads = sequence_window_output("Convolution", a, t, a["kernel"][0])
        params = {"W": (a["filters"], t.shape[0]) + tuple(a["kernel"])}
        if a["bias"]:
            params["b"] = (a["filters"],)
        return TensorType((a["filters"],), seq=True, length=out_t), params, {"pads": pads}
    if a.get("reduction_rank") == 0:  # (H, W) without a channel axis: convolved as the (1, H, W) image
        if t.seq or t.vocab is not None or len(t.shape) != 2:
            raise ShapeError(f"Convolution with reduction_rank=0 needs a rank-2 (height, width) value without a "
                             f"channel axis, got {t.describe()}; write reduction_rank=1 for an image")
        t = TensorType((1,) + tuple(t.shape))
    out, pads = window_output("Convolution", a, t, a["kernel"], a["filters"])
    params = {"W": (a["filters"], t.shape[0]) + tuple(a["kernel"])}
    if a["bias"]:
        params["b"] = (a["filters"],)
    if a.get("no_filter_axis"):  # num_filters left out: the rank-2 value (H', W')
        out = out[1:]
    return TensorType(out), params, {"pads": pads}


KIND = register(LayerKind(
    "Convolution", shape,
    attrs={"kernel": ("filter_shape", None), "filters": ("num_filters", None),
           "activation": ("activation", None), "bias": ("bias", True), "init": ("init", DEFAULT_INIT),
           "init_bias": ("init_bias", 0), "pad": ("pad", False), "strides": ("strides", (1, 1)),
           "max_norm": ("max_norm", None), "reduction_rank": ("reduction_rank", 1)},
    floats=("init_bias",),
    inits=lambda layer: {"W": layer.attr("init", DEFAULT_INIT), "b": bias_init(layer)},
    complete=complete,
    constructors=(Constructor(
        "Convolution", ("filter_shape", "num_filters"),
        {"filter_shape": REQUIRED, "num_filters": None, "activation": None, "init": DEFAULT_INIT,
         "pad": False, "strides": 1, "bias": True, "init_bias": 0, "sharing": True, "reduction_rank": 1,
         "max_norm": None},
        check, aliases=("Convolution2D",), options=("activation", "init", "bias", "init_bias", "pad"),
        keyword_aliases={"rf_shape": "filter_shape"}),
        Constructor(
        "Convolution1D", ("filter_shape", "num_filters"),
        {"filter_shape": REQUIRED, "num_filters": REQUIRED, "activation": None, "init": DEFAULT_INIT,
         "pad": False, "strides": 1, "bias": True, "init_bias": 0, "reduction_rank": 1},
        check_1d, keyword_aliases={"rf_shape": "filter_shape"})),
))


# the kinds that read a padded batch's lengths (docs/ir.md): recurrences, select_last, Delay with T < 0
READS_LENGTHS = ("LSTM", "GRU", "SelectLast")


def changes_length(layer) -> bool:
    """A 1-D window (Convolution (k,), pooling (k,)) whose output can have another length than its input."""
    window = layer.attr("kernel") or layer.attr("window")
    if not window or len(window) != 1:
        return False
    (before, after), = layer.attr("pads")
    return layer.attr("strides")[0] != 1 or before + after != window[0] - 1


def lengths_after_windows(g) -> list:
    """E115 where a layer that reads the sequence lengths reads a sequence whose length a 1-D window changed:
    the lengths of a padded batch are those of the input sequence, which the window does not rescale."""
    from ..errors import Diagnostic

    layers = {layer.name: layer for layer in g.layers}
    changed = {}  # sequence value -> the layer that changed its length
    diags = []
    for node in g.nodes:
        layer = layers[node.layer]
        src = next((changed[v] for v in node.inputs if v in changed), None)
        reads = layer.kind in READS_LENGTHS or (layer.kind == "Delay" and layer.attr("T", 0) < 0)
        if src is not None and reads:
            diags.append(Diagnostic(
                "E115", f"layer '{layer.name}' ({layer.kind}) reads the lengths of a padded sequence batch, but the "
                f"1-D {src.kind} '{src.name}' changed the sequence length (strides {src.attr('strides')[0]}, pads "
                f"{src.attr('pads')[0]}), and netdsl does not rescale the lengths", node.span or g.span,
                "keep the length in front of it (strides=1, pad=True), or put the window after it"))
        if node.type.seq and changes_length(layer):
            changed[node.name] = layer
        elif node.type.seq and src is not None:
            changed[node.name] = src
    return diags
