"""Argument checks shared by several kinds, and the activation and initialiser vocabulary.

Each check returns None when the value is fine, or (argument, message) naming the argument and
the value received (Keras-style). The messages are pinned by tests/errors/*.expected.
"""
from __future__ import annotations

from ..limits import LIMITS
from ..values import Activation, Builtin, InitSpec, describe, describe_dim, is_dim, is_number

ACTIVATIONS = ("relu", "sigmoid", "tanh", "softmax", "elu", "leaky_relu", "gelu", "softplus", "silu", "swish",
               "hard_sigmoid")
# activations with parameters: name -> {parameter: IR default}. The IR spells an activation with every
# parameter written out ("leaky_relu(alpha=0.01)", "gelu(approximate=False)"), so no target's own
# default (Keras's leaky_relu slope 0.2, LeakyReLU layer 0.3, mxnet's 0.25) can leak in.
ACTIVATION_PARAMS = {"leaky_relu": {"alpha": 0.01}, "gelu": {"approximate": False}}
ACTIVATION_ALIASES = {"swish": "silu"}  # Keras and TF spell x * sigmoid(x) both ways; the IR says silu


def spell_activation(name: str, params: dict | None = None) -> str:
    """The IR spelling of an activation: its canonical name and every parameter, in a fixed order."""
    name = ACTIVATION_ALIASES.get(name, name)
    defaults = ACTIVATION_PARAMS.get(name)
    if not defaults:
        return name
    values = {**defaults, **(params or {})}
    return f"{name}({', '.join(f'{k}={values[k]!r}' for k in defaults)})"


def split_activation(act: str | None) -> tuple:
    """An IR activation spelling -> (name, {parameter: value}); None -> (None, {})."""
    if act is None:
        return None, {}
    name, _, rest = act.partition("(")
    params = {}
    for item in rest[:-1].split(", ") if rest else ():
        key, _, value = item.partition("=")
        params[key] = value == "True" if value in ("True", "False") else float(value)
    return name, params


def activation_arguments(act: str, args: list, kwargs: dict):
    """leaky_relu(0.2), gelu(approximate=True): the activation with its arguments set, as its IR
    spelling, or (code, message)."""
    name, params = split_activation(act)
    names = tuple(ACTIVATION_PARAMS.get(name, ()))
    if not names:
        return "E109", f"the activation {name} takes no arguments; apply it to a value, e.g. {name}(x)"
    if len(args) > len(names):
        return "E109", f"{name} takes at most {len(names)} argument{'s' if len(names) != 1 else ''}, got {len(args)}"
    given = dict(zip(names, args))
    for k, v in kwargs.items():
        if k not in names:
            return "E102", f"{name} has no argument '{k}' (it takes {', '.join(names)})"
        if k in given:
            return "E105", f"{name} argument '{k}' given twice"
        given[k] = v
    for k, v in given.items():
        if k == "alpha":
            if not is_number(v) or not (0 <= v <= 1):  # also refuses nan and inf
                return "E103", f"{name} alpha must be a number between 0 and 1, got {describe(v)}"
            params[k] = float(v)
        elif not isinstance(v, bool):
            return "E103", f"{name} {k} must be True or False, got {describe(v)}"
        else:
            params[k] = v
    return spell_activation(name, params)
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


def max_norm(kind: str, a: dict, out: dict):
    """max_norm: None, or a positive number (Keras's MaxNorm constraint, applied after every update), kept as a float."""
    v = a.get("max_norm")
    if v is None:
        return None
    if not (is_number(v) and 0 < v < float("inf")):  # nan fails both comparisons
        return "max_norm", f"{kind} max_norm must be a positive number or None, got {describe(v)}"
    out["max_norm"] = float(v)
    return None
