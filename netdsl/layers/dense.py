"""Dense: a fully connected layer, W (out, in); on an image or a sequence see shape().

A tensor `shape` (CNTK's Dense((3, 4))) keeps W 2-D, (prod(shape), in), so weight files and every
target's mapping stay those of Dense(12); the output is that vector reshaped row-major to the shape.
Only rank 2 is produced: a rank-3 value would pass for a (C, H, W) image in the NHWC targets.

input_rank=k (the last k axes are reduced) and map_rank=k (the first k are kept, each mapped over) say
how many leading sample axes a Dense maps over; the IR keeps that number as map_axes, and only when it
is not 0: one axis kept, of a rank-2 value (A, B) (W (units, B) applied to each of the A rows) or of an
image (C, H, W) (W (units, H * W) applied to each channel's map, as CNTK's Dense(n, input_rank=2))."""
from __future__ import annotations

from math import prod

from ..ir import TensorType
from ..shapes import ShapeError, float_features
from ..values import describe, describe_dim, is_dim
from . import REQUIRED, Constructor, LayerKind, register
from .common import DEFAULT_INIT, bias_init, first_error, max_norm, positive, weights


def check(a: dict):
    out = dict(a)
    if isinstance(a["shape"], tuple) and len(a["shape"]) == 1:
        out["shape"] = a["shape"][0]  # Dense((5,)) is Dense(5)
    return first_error(lambda: _shape(out), lambda: _ranks(a), lambda: weights(a, out),
                       lambda: max_norm("Dense", a, out)) or out


def _ranks(a):
    for key, low in (("input_rank", 1), ("map_rank", 0)):
        v = a.get(key)
        if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and v >= low):
            return key, f"Dense {key} must be None or an integer from {low}, got {describe(v)}"
    if a.get("input_rank") is not None and a.get("map_rank") is not None:
        return "map_rank", "Dense takes input_rank or map_rank, not both (as CNTK)"
    return None


def complete(attrs: dict, training) -> dict:
    """input_rank and map_rank stay in the IR only when given, so a plain Dense's IR is unchanged."""
    return {k: v for k, v in attrs.items() if not (k in ("input_rank", "map_rank") and v is None)}


def map_axes(a, t: TensorType) -> int:
    """How many leading axes of each sample (a step, in a sequence) the Dense maps over."""
    rank = len(t.shape)
    if a.get("input_rank") is not None:
        if a["input_rank"] > rank:
            raise ShapeError(f"Dense input_rank={a['input_rank']} needs an input of at least that rank, "
                             f"got {t.describe()}")
        return rank - a["input_rank"]
    if a.get("map_rank") is not None:
        if a["map_rank"] >= rank:
            raise ShapeError(f"Dense map_rank={a['map_rank']} leaves no axis of {t.describe()} to reduce over")
        return a["map_rank"]
    return 0


def _shape(a):
    s = a["shape"]
    if isinstance(s, tuple) and len(s) == 2 and all(is_dim(d) for d in s):
        return None
    if isinstance(s, tuple):
        return "shape", (f"Dense shape must be a positive integer or a pair of them (a rank-2 tensor), got "
                         f"{describe_dim(s)}" + (" (a rank-3 or higher output is not supported: the targets "
                                                 "would take it for a (C, H, W) image)" if len(s) > 2 else ""))
    return positive("Dense", "shape", a)


def out_shape(a) -> tuple:
    """The output sample shape: (units,), or the tensor shape Dense((3, 4)) was given."""
    if a.get("out_shape") is not None:
        return tuple(a["out_shape"])
    return tuple(a["units"]) if isinstance(a["units"], tuple) else (a["units"],)


def shape(a, ins):
    """An image is flattened first (C, H, W order); a sequence is mapped step by step."""
    (t,) = ins
    float_features(t, "Dense")
    shape_out = out_shape(a)
    units = prod(shape_out)
    mapped = map_axes(a, t)
    # softmax over a tensor: CNTK normalises all its elements, the other targets one axis
    if mapped + len(shape_out) > 1 and a["activation"] == "softmax":
        raise ShapeError(f"Dense with activation=softmax making a rank-2 value ({t.shape[:mapped] + shape_out}): the "
                         "targets disagree on the axis a softmax of a tensor normalises; apply "
                         "Dense(n, activation=softmax) to a vector", "E103")
    if mapped + len(shape_out) > 2:
        raise ShapeError(f"Dense{'(' + str(shape_out) + ')' if len(shape_out) > 1 else ''} keeping "
                         f"{t.shape[:mapped]} of {t.describe()} would make a rank-{mapped + len(shape_out)} value; "
                         "netdsl's values have rank 1 or 2 (a rank-3 value would be taken for an image)")
    n_in = prod(t.shape[mapped:])
    params = {"W": (units, n_in)}
    if a["bias"]:
        params["b"] = (units,)
    # the IR keeps units an int (prod(shape)) and the tensor shape beside it, only when there is one
    extra = {"units": units, "out_shape": shape_out} if len(shape_out) > 1 else {}
    if mapped:
        extra["map_axes"] = mapped
    return TensorType(t.shape[:mapped] + shape_out, t.seq, t.length), params, extra


KIND = register(LayerKind(
    "Dense", shape,
    attrs={"units": ("shape", None), "activation": ("activation", None), "bias": ("bias", True),
           "init": ("init", DEFAULT_INIT), "init_bias": ("init_bias", 0), "max_norm": ("max_norm", None),
           "input_rank": ("input_rank", None), "map_rank": ("map_rank", None)},
    floats=("init_bias",),
    inits=lambda layer: {"W": layer.attr("init", DEFAULT_INIT), "b": bias_init(layer)},
    complete=complete,
    constructors=(Constructor(
        "Dense", ("shape",),
        {"shape": REQUIRED, "activation": None, "init": DEFAULT_INIT, "bias": True, "init_bias": 0, "max_norm": None,
         "input_rank": None, "map_rank": None},
        check, options=("activation", "init", "bias", "init_bias")),),
))
