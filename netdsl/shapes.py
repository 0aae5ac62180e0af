"""Shape math: one pure function per layer kind.

Each takes the layer's resolved attrs and its input types and returns
(output type, {param short name: shape}, extra attrs) or raises ShapeError.
"""
from __future__ import annotations

from math import prod

from .ir import TensorType


class ShapeError(Exception):
    def __init__(self, message: str, code: str = "E201"):
        super().__init__(message)
        self.code = code


def same_pads(size: int, k: int, s: int) -> tuple:
    """pad=True: output ceil(size/s); (k-1)//2 before, the rest after (CNTK's rule).

    At stride 1 this equals TF's SAME (the odd pixel of an even kernel goes at
    the end); at stride 2 it can differ from TF, which puts total//2 first.
    """
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    begin = min((k - 1) // 2, total)
    return (begin, total - begin)


def _float(t: TensorType, kind: str) -> None:
    if t.vocab is not None:
        raise ShapeError(f"{kind} needs float features but got token ids {t.describe()}; put an Embedding first")


def _image(t: TensorType, kind: str) -> tuple:
    _float(t, kind)
    if t.seq or len(t.shape) != 3:
        raise ShapeError(f"{kind} needs an image (channels, height, width), got {t.describe()}")
    return t.shape


def _window(kind: str, attrs: dict, t: TensorType, window: tuple, channels_out: int | None) -> tuple:
    c, h, w = _image(t, kind)
    strides = attrs["strides"]
    pad = attrs["pad"]
    if pad is True:
        pads = (same_pads(h, window[0], strides[0]), same_pads(w, window[1], strides[1]))
    elif pad is False:
        pads = ((0, 0), (0, 0))
    else:
        pads = pad
    ho = (h + pads[0][0] + pads[0][1] - window[0]) // strides[0] + 1
    wo = (w + pads[1][0] + pads[1][1] - window[1]) // strides[1] + 1
    if ho <= 0 or wo <= 0 or h + pads[0][0] + pads[0][1] < window[0] or w + pads[1][0] + pads[1][1] < window[1]:
        raise ShapeError(
            f"{kind} window {window[0]}x{window[1]} does not fit input {t.describe()} with pads {pads}: "
            f"output would be {max(ho, 0)}x{max(wo, 0)}", "E202")
    if pad is not True and pad is not False and any(p >= k for p, k in zip((max(pads[0]), max(pads[1])), window)):
        raise ShapeError(f"{kind} padding {pads} must be smaller than the window {window}", "E202")
    return (channels_out if channels_out is not None else c, ho, wo), pads


def dense(a, ins):
    (t,) = ins
    _float(t, "Dense")
    n_in = prod(t.shape)
    params = {"W": (a["units"], n_in)}
    if a["bias"]:
        params["b"] = (a["units"],)
    return TensorType((a["units"],), t.seq, t.length), params, {}


def convolution(a, ins):
    (t,) = ins
    shape, pads = _window("Convolution", a, t, a["kernel"], a["filters"])
    params = {"W": (a["filters"], t.shape[0]) + tuple(a["kernel"])}
    if a["bias"]:
        params["b"] = (a["filters"],)
    return TensorType(shape), params, {"pads": pads}


def pooling(kind):
    def f(a, ins):
        (t,) = ins
        shape, pads = _window(kind, a, t, a["window"], None)
        return TensorType(shape), {}, {"pads": pads}
    return f


def elementwise(kind):
    def f(a, ins):
        (t,) = ins
        _float(t, kind)
        return t, {}, {}
    return f


def batch_norm(a, ins):
    (t,) = ins
    _float(t, "BatchNormalization")
    c = (t.shape[0],) if len(t.shape) == 3 else (t.shape[-1],)
    return t, {"scale": c, "bias": c, "running_mean": c, "running_var": c}, {}


def layer_norm(a, ins):
    (t,) = ins
    _float(t, "LayerNormalization")
    return t, {"scale": t.shape, "bias": t.shape}, {}


def flatten(a, ins):
    (t,) = ins
    _float(t, "Flatten")
    return TensorType((prod(t.shape),), t.seq, t.length), {}, {}


def embedding(a, ins):
    (t,) = ins
    if t.vocab is None:
        raise ShapeError(f"Embedding needs token ids (SequenceInput(vocab=N)), got float features {t.describe()}")
    return TensorType((a["dim"],), t.seq, t.length), {"E": (t.vocab, a["dim"])}, {}


def lstm(a, ins):
    (t,) = ins
    _float(t, "Recurrence(LSTM)")
    if not t.seq or len(t.shape) != 1:
        raise ShapeError(f"Recurrence(LSTM) needs a sequence of feature vectors, got {t.describe()}")
    u = a["units"]
    return TensorType((u,), True, t.length), {"W": (4 * u, t.shape[0]), "H": (4 * u, u), "b": (4 * u,)}, {}


def splice(a, ins):
    first = ins[0]
    for t in ins:
        _float(t, "splice")
    for t in ins[1:]:
        if t.seq != first.seq or t.length != first.length or len(t.shape) != len(first.shape) or t.shape[1:] != first.shape[1:]:
            raise ShapeError(
                f"splice joins along the channel/feature axis, and the other axes must agree: got "
                + " and ".join(i.describe() for i in ins))
    joined = (sum(t.shape[0] for t in ins),) + first.shape[1:]
    return TensorType(joined, first.seq, first.length), {}, {}


def select(kind):
    def f(a, ins):
        (t,) = ins
        if not t.seq:
            raise ShapeError(f"{kind} needs a sequence, got {t.describe()}")
        return TensorType(t.shape, False, None, t.vocab), {}, {}
    return f


def cosine(a, ins):
    x, y = ins
    for t in ins:
        _float(t, "cosine_distance")
    if x.seq or y.seq or x.shape != y.shape:
        raise ShapeError(f"cosine_distance needs two values of one shape, got {x.describe()} and {y.describe()}")
    return TensorType((1,)), {}, {}


RULES = {
    "Dense": dense,
    "Convolution": convolution,
    "MaxPooling": pooling("MaxPooling"),
    "AveragePooling": pooling("AveragePooling"),
    "Dropout": elementwise("Dropout"),
    "Activation": elementwise("Activation"),
    "Rescale": elementwise("Rescale"),
    "BatchNormalization": batch_norm,
    "LayerNormalization": layer_norm,
    "Flatten": flatten,
    "Embedding": embedding,
    "LSTM": lstm,
    "Splice": splice,
    "SelectLast": select("select_last"),
    "SelectFirst": select("select_first"),
    "CosineDistance": cosine,
}
