"""Convolution: a 2-D convolution over NCHW images, W in OIHW layout."""
from __future__ import annotations

from ..ir import TensorType
from ..shapes import window_output
from ..values import describe, is_dim
from . import REQUIRED, Constructor, LayerKind, register
from .common import DEFAULT_INIT, bias_init, first_error, max_norm, positive, weights, window


def cntk_only(a: dict):
    """CNTK arguments netdsl takes only at the value it implements; any other is refused, never ignored."""
    if not isinstance(a.get("sharing", True), bool):
        return "sharing", f"Convolution sharing must be True or False, got {describe(a['sharing'])}"
    if a.get("sharing", True) is not True:
        return "sharing", ("Convolution sharing=False (a separate filter per position) is not supported: "
                           "netdsl's convolution shares its filters, CNTK's default sharing=True")
    rank = a.get("reduction_rank", 1)
    if rank != 1 or isinstance(rank, bool):
        return "reduction_rank", (f"Convolution reduction_rank must be 1 (reduce over the input's channel axis), "
                                  f"got {describe(rank)}; inputs without a channel axis are not supported yet")
    return None


def rank(a: dict):
    """1-D (a sequence) and 3-D (volumes) convolution are not implemented: say so, not "not a pair"."""
    fs = a["filter_shape"]
    if isinstance(fs, tuple) and len(fs) in (1, 3) and all(is_dim(d) for d in fs):
        what = "1-D convolution over a sequence" if len(fs) == 1 else "3-D convolution"
        return "filter_shape", (f"{what} (filter_shape {fs!r}) is not supported yet: netdsl's Convolution is 2-D, "
                                f"over (channels, height, width) images, with filter_shape k or (kh, kw)")
    return None


def check(a: dict):
    out = dict(a)
    res = first_error(lambda: rank(a),
                      lambda: window("Convolution", a, out),
                      lambda: positive("Convolution", "num_filters", a),
                      lambda: weights(a, out),
                      lambda: cntk_only(a),
                      lambda: max_norm("Convolution", a, out))
    if res is not None:
        return res
    out.pop("sharing", None)
    out.pop("reduction_rank", None)
    return out


def shape(a, ins):
    (t,) = ins
    out, pads = window_output("Convolution", a, t, a["kernel"], a["filters"])
    params = {"W": (a["filters"], t.shape[0]) + tuple(a["kernel"])}
    if a["bias"]:
        params["b"] = (a["filters"],)
    return TensorType(out), params, {"pads": pads}


KIND = register(LayerKind(
    "Convolution", shape,
    attrs={"kernel": ("filter_shape", None), "filters": ("num_filters", None),
           "activation": ("activation", None), "bias": ("bias", True), "init": ("init", DEFAULT_INIT),
           "init_bias": ("init_bias", 0), "pad": ("pad", False), "strides": ("strides", (1, 1)),
           "max_norm": ("max_norm", None)},
    floats=("init_bias",),
    inits=lambda layer: {"W": layer.attr("init", DEFAULT_INIT), "b": bias_init(layer)},
    constructors=(Constructor(
        "Convolution", ("filter_shape", "num_filters"),
        {"filter_shape": REQUIRED, "num_filters": REQUIRED, "activation": None, "init": DEFAULT_INIT,
         "pad": False, "strides": 1, "bias": True, "init_bias": 0, "sharing": True, "reduction_rank": 1,
         "max_norm": None},
        check, aliases=("Convolution2D",), options=("activation", "init", "bias", "init_bias", "pad"),
        keyword_aliases={"rf_shape": "filter_shape"}),),
))
