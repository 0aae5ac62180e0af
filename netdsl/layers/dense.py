"""Dense: a fully connected layer, W (out, in); on an image or a sequence see shape().

A tensor `shape` (CNTK's Dense((3, 4))) keeps W 2-D, (prod(shape), in), so weight files and every
target's mapping stay those of Dense(12); the output is that vector reshaped row-major to the shape.
Only rank 2 is produced: a rank-3 value would pass for a (C, H, W) image in the NHWC targets."""
from __future__ import annotations

from math import prod

from ..ir import TensorType
from ..shapes import ShapeError, float_features
from ..values import describe_dim, is_dim
from . import REQUIRED, Constructor, LayerKind, register
from .common import DEFAULT_INIT, bias_init, first_error, max_norm, positive, weights


def check(a: dict):
    out = dict(a)
    if isinstance(a["shape"], tuple) and len(a["shape"]) == 1:
        out["shape"] = a["shape"][0]  # Dense((5,)) is Dense(5)
    return first_error(lambda: _shape(out), lambda: weights(a, out), lambda: max_norm("Dense", a, out)) or out


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
    # softmax over a tensor: CNTK normalises all its elements, the other targets the last axis
    if len(shape_out) > 1 and a["activation"] == "softmax":
        raise ShapeError(f"Dense({shape_out}) with activation=softmax: the targets disagree on the axis a softmax "
                         "of a tensor normalises; apply Dense(n, activation=softmax) to a vector", "E103")
    n_in = prod(t.shape)
    params = {"W": (units, n_in)}
    if a["bias"]:
        params["b"] = (units,)
    # the IR keeps units an int (prod(shape)) and the tensor shape beside it, only when there is one
    extra = {"units": units, "out_shape": shape_out} if len(shape_out) > 1 else {}
    return TensorType(shape_out, t.seq, t.length), params, extra


KIND = register(LayerKind(
    "Dense", shape,
    attrs={"units": ("shape", None), "activation": ("activation", None), "bias": ("bias", True),
           "init": ("init", DEFAULT_INIT), "init_bias": ("init_bias", 0), "max_norm": ("max_norm", None)},
    floats=("init_bias",),
    inits=lambda layer: {"W": layer.attr("init", DEFAULT_INIT), "b": bias_init(layer)},
    constructors=(Constructor(
        "Dense", ("shape",),
        {"shape": REQUIRED, "activation": None, "init": DEFAULT_INIT, "bias": True, "init_bias": 0, "max_norm": None},
        check, options=("activation", "init", "bias", "init_bias")),),
))
