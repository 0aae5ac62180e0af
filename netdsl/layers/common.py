"""Argument checks shared by several kinds, and the activation and initialiser vocabulary.

Each check returns None when the value is fine, or (argument, message) naming the argument and
the value received (Keras-style). The messages are pinned by tests/errors/*.expected.
"""
from __future__ import annotations

from ..limits import LIMITS
from ..values import Activation, Builtin, InitSpec, describe, describe_dim, is_dim, is_number

ACTIVATIONS = ("relu", "sigmoid", "tanh", "softmax")
INITIALIZERS = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "uniform", "normal", "zeros", "ones")
DEFAULT_INIT = "glorot_uniform"
# the largest initial weight scale or bias: far below the float32 maximum (3.4e38), so that no
# initial weight overflows to inf in the executor or a target (uniform, normal, init_bias)
MAX_INIT_SCALE = 1e30


def positive(kind: str, key: str, a: dict):
    if not is_dim(a[key]):
        return key, f"{kind} {key} must be a positive integer, got {describe_dim(a[key])}"
    return None


def pair(v):
    """A positive integer or a pair of them, as a pair; None if malformed."""
    if isinstance(v, int) and not isinstance(v, bool):
        v = (v, v)
    if not (isinstance(v, tuple) and len(v) == 2 and all(is_dim(d) for d in v)):
        return None
    return v


def normalize_pad(p):
    """True/False (CNTK's same/valid), or explicit ((top, bottom), (left, right)); None if malformed."""
    def nat(d):
        return isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= LIMITS.max_dim
    if isinstance(p, bool):
        return p
    if nat(p):
        return ((p, p), (p, p))
    if isinstance(p, tuple) and len(p) == 2 and all(nat(d) for d in p):
        return ((p[0], p[0]), (p[1], p[1]))
    if isinstance(p, tuple) and len(p) == 2 and all(isinstance(q, tuple) and len(q) == 2 and all(nat(d) for d in q) for q in p):
        return p
    return None


def window(kind: str, a: dict, out: dict):
    """filter_shape, strides and pad of a convolution or pooling window."""
    fs = pair(a["filter_shape"])
    if fs is None:
        return "filter_shape", f"{kind} filter_shape must be a positive integer or a pair, got {describe_dim(a['filter_shape'])}"
    out["filter_shape"] = fs
    if "strides" in a:
        st = pair(a["strides"])
        if st is None:
            return "strides", f"{kind} strides must be a positive integer or a pair, got {describe_dim(a['strides'])}"
        out["strides"] = st
    if "pad" in a:
        p = normalize_pad(a["pad"])
        if p is None:
            return "pad", f"{kind} pad must be True, False, an integer, (ph, pw) or ((top, bottom), (left, right)), got {describe_dim(a['pad'])}"
        out["pad"] = p
    return None


def weights(a: dict, out: dict):
    """activation, bias, init and init_bias, where the constructor takes them."""
    if "activation" in a:
        act = a["activation"]
        if act is not None and not isinstance(act, Activation):
            return "activation", f"activation must be one of {', '.join(ACTIVATIONS)} or None, got {describe(act)}"
    if "bias" in a and not isinstance(a["bias"], bool):
        return "bias", f"bias must be True or False, got {describe(a['bias'])}"
    if "init" in a:
        init = a["init"]
        if isinstance(init, Builtin) and init.name in INITIALIZERS:
            out["init"] = InitSpec(init.name)
        elif not isinstance(init, InitSpec):
            return "init", f"init must be an initializer such as glorot_uniform(), got {describe(init)}"
    if "init_bias" in a and not is_number(a["init_bias"]):
        return "init_bias", f"init_bias must be a number, got {describe(a['init_bias'])}"
    if "init_bias" in a and abs(a["init_bias"]) > MAX_INIT_SCALE:
        return "init_bias", f"init_bias must be a number between -{MAX_INIT_SCALE:g} and {MAX_INIT_SCALE:g}, got {describe(a['init_bias'])}"
    return None


def unit_interval(kind: str, key: str, value, closed: bool, what: str = ""):
    """epsilon in (0, 1), momentum in [0, 1]."""
    ok = is_number(value) and (0 <= value <= 1 if closed else 0 < value < 1)
    if not ok:
        return key, f"{kind} {key}{what} must be in {'[0, 1]' if closed else '(0, 1)'}, got {describe(value)}"
    return None


def first_error(*checks):
    """The first (argument, message) of checks run in order, or None; checks are thunks."""
    for check in checks:
        res = check()
        if res is not None:
            return res
    return None


def bias_init(layer) -> str:
    return f"constant({layer.attr('init_bias', 0.0)!r})"
