"""Stabilizer (CNTK's self-stabilizer): y = beta * x with one learnable scalar alpha and
beta = softplus(steepness * alpha) / steepness, the "sharpened softplus" of CNTK 2.7's
cntk/layers/blocks.py. alpha starts at log(exp(steepness) - 1) / steepness, so beta starts at 1.
Stabilizer(enable_self_stabilization=False), or Stabilizer() in a default_options(enable_self_stabilization=False)
scope, is the identity with no parameter, as CNTK's (evaluate.construct makes it an empty composite).
"""
from __future__ import annotations

import math

from ..shapes import float_features
from ..values import describe, is_number
from . import Constructor, LayerKind, register

# beyond these, float32 cannot hold the initial alpha (log(steepness)/steepness) or steepness * alpha
MIN_STEEPNESS, MAX_STEEPNESS = 1e-6, 1e6


def initial_alpha(steepness: float) -> float:
    """log(exp(s) - 1) / s, written so that exp(s) never overflows."""
    s = float(steepness)
    return (s + math.log(-math.expm1(-s))) / s


def check(a: dict):
    if not isinstance(a.get("enable_self_stabilization", True), bool):
        return "enable_self_stabilization", ("Stabilizer enable_self_stabilization must be True or False, got "
                                             f"{describe(a['enable_self_stabilization'])}")
    out = {k: a[k] for k in ("enable_self_stabilization",) if k in a}  # kept for default_options' check
    if "steepness" not in a:
        return out
    s = a["steepness"]
    if not is_number(s) or not (MIN_STEEPNESS <= s <= MAX_STEEPNESS):  # also refuses nan and inf
        return "steepness", (f"Stabilizer steepness must be a positive finite number between {MIN_STEEPNESS:g} "
                             f"and {MAX_STEEPNESS:g}, got {describe(s)}")
    return {**out, "steepness": float(s)}


def shape(a, ins):
    (t,) = ins
    float_features(t, "Stabilizer")
    return t, {"alpha": ()}, {}  # alpha is a scalar, as CNTK's Parameter((), name='alpha')


KIND = register(LayerKind(
    "Stabilizer", shape,
    attrs={"steepness": ("steepness", 4.0)},
    floats=("steepness",),
    inits=lambda layer: {"alpha": f"constant({initial_alpha(layer.attr('steepness', 4.0))!r})"},
    # enable_self_stabilization=False (given, or from default_options) makes Stabilizer() the identity, as in CNTK
    constructors=(Constructor("Stabilizer", ("steepness",), {"steepness": 4, "enable_self_stabilization": True}, check,
                              options=("enable_self_stabilization",), disabled_by="enable_self_stabilization"),),
))
