"""Shape math shared by the layer kinds; each kind's own rule is in its module, netdsl/layers/.

A rule takes the layer's resolved attrs and its input types and returns
(output type, {param short name: shape}, extra attrs) or raises ShapeError.
"""
from __future__ import annotations

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


def float_features(t: TensorType, kind: str) -> None:
    if t.vocab is not None:
        raise ShapeError(f"{kind} needs float features but got token ids {t.describe()}; put an Embedding first")


def image(t: TensorType, kind: str) -> tuple:
    float_features(t, kind)
    if t.seq or len(t.shape) != 3:
        raise ShapeError(f"{kind} needs an image (channels, height, width), got {t.describe()}")
    return t.shape


def window_output(kind: str, attrs: dict, t: TensorType, window: tuple, channels_out: int | None) -> tuple:
    c, h, w = image(t, kind)
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


def elementwise(kind):
    """The rule of a layer that keeps its input's type (Dropout, Activation, Rescale)."""
    def f(a, ins):
        (t,) = ins
        float_features(t, kind)
        return t, {}, {}
    return f


def sequence_window_output(kind: str, attrs: dict, t: TensorType, k: int) -> tuple:
    """A 1-D window (convolution or pooling) over the time axis of a sequence of vectors (N, T, F):
    (output length or None, pads ((before, after),)). The same pad rules as images, on one axis."""
    float_features(t, kind)
    if not t.seq or len(t.shape) != 1:
        raise ShapeError(f"{kind} with a 1-D window (k,) needs a sequence of vectors, got {t.describe()}")
    (s,) = attrs["strides"]
    pad = attrs["pad"]
    size = t.length
    if pad is True:
        if size is None and s != 1:
            raise ShapeError(f"{kind} pad=True with stride {s} needs a fixed sequence length (its pads depend "
                             f"on it), got {t.describe()}; write SequenceInput(F, length=T) or explicit pads", "E202")
        # at stride 1 the pads do not depend on the length: (k-1)//2 before, the rest after
        pads = (same_pads(size if size is not None else k, k, s),)
    elif pad is False:
        pads = ((0, 0),)
    elif isinstance(pad, tuple) and len(pad) == 1:
        pads = pad
    else:
        raise ShapeError(f"{kind} with a 1-D window (k,) takes pad True, False or ((before, after),), got {pad!r} "
                         f"(2-D pads from default_options do not apply; give pad= on the layer)", "E202")
    (b, e), = pads
    if pad is not True and pad is not False and max(b, e) >= k:
        raise ShapeError(f"{kind} padding {pads} must be smaller than the window ({k},)", "E202")
    if size is None:
        return None, pads
    out = (size + b + e - k) // s + 1
    if size + b + e < k or out <= 0:
        raise ShapeError(f"{kind} window ({k},) does not fit input {t.describe()} with pads {pads}: "
                         f"output would be {max(out, 0)} steps", "E202")
    return out, pads


# What may read a rank-2 value (docs/ir.md): the kinds every target computes
# exactly on it. The rest (windows, recurrences, normalisations, splice) are written for vectors, sequences of
# vectors and images, and refuse it here rather than treat it as one of those.
TENSOR_READERS = ("Dense", "Activation", "Dropout", "Elementwise", "Flatten")


def tensor_use(kind: str, attrs: dict, ins: list) -> None:
    for t in ins:
        if t is None or t.vocab is not None or len(t.shape) != 2:
            continue
        if kind == "Convolution" and attrs.get("reduction_rank") == 0:
            continue  # its (H, W) input without a channel axis (layers/convolution.py)
        if kind not in TENSOR_READERS:
            raise ShapeError(f"{kind} does not take the rank-2 tensor {t.describe()} (an Input((H, W)), or made by "
                             "Dense with a tensor shape or a Convolution without num_filters): only Dense, Flatten, Dropout, activations, + - * and a Convolution with reduction_rank=0 read "
                             "one; put a Flatten or a Dense in between")
        if kind == "Activation" and attrs.get("activation") == "softmax":
            raise ShapeError(f"softmax of the rank-2 tensor {t.describe()}: the targets disagree on the axis it "
                             "normalises; apply it to a vector")
