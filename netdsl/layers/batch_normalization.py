"""BatchNormalization: per channel (images) or per feature; momentum is the weight of the new batch.

CNTK's arguments are taken as the seed documents them, with two differences stated in
docs/language.md: netdsl's default is CNTK's map_rank=1 (one statistic per channel of an image;
CNTK's own default keeps one per pixel), and normalization_time_constant (samples) becomes the
momentum 1 - exp(-batch_size / time_constant) at the training block's batch size, the rate CNTK
blends a minibatch of that size with.
"""
from __future__ import annotations

import math

from ..shapes import ShapeError, float_features
from ..values import describe, is_number
from . import Constructor, LayerKind, register
from .common import finite_number, first_error, unit_interval

DEFAULT_BATCH = 64  # ir.Training's batch size, for a model without a training block


def check(a: dict):
    eps, mom = a.get("epsilon", 1e-5), a.get("momentum", 0.1)
    res = first_error(
        lambda: unit_interval("BatchNormalization", "epsilon", eps, closed=False),
        lambda: unit_interval("BatchNormalization", "momentum", mom, closed=True,
                              what=" (the weight of the new batch statistic)"),
        lambda: finite_number("BatchNormalization", "init_scale", a.get("init_scale", 1)),
        lambda: _time_constant(a), lambda: _blend(a), lambda: _map_rank(a))
    if res is not None:
        return res
    if not isinstance(a.get("use_cntk_engine", True), bool):
        return "use_cntk_engine", f"use_cntk_engine must be True or False, got {describe(a['use_cntk_engine'])}"
    out = dict(a)
    out.pop("use_cntk_engine", None)  # which engine computes it (CNTK's or cuDNN's), not what
    out.pop("blend_time_constant", None)  # only 0 is accepted: nothing to carry
    if "momentum" in a:  # an explicit momentum wins over a default_options time constant
        out["normalization_time_constant"] = None
    return out


def _time_constant(a):
    if "normalization_time_constant" not in a:
        return None
    tc = a["normalization_time_constant"]
    if "momentum" in a:
        return "normalization_time_constant", ("BatchNormalization takes momentum or normalization_time_constant, "
                                               "not both: the time constant sets the momentum")
    if not is_number(tc) or not 0 < tc < float("inf"):
        return "normalization_time_constant", ("BatchNormalization normalization_time_constant (samples) must be a "
                                               f"positive number, got {describe(tc)}")
    return None


def _blend(a):
    blend = a.get("blend_time_constant", 0)
    if not is_number(blend) or blend != 0:
        return "blend_time_constant", ("BatchNormalization blend_time_constant must be 0 (inference uses the running "
                                       f"statistics alone): netdsl does not blend them with the batch's, got "
                                       f"{describe(blend)}")
    return None


def _map_rank(a):
    rank = a.get("map_rank", 1)
    if rank is not None and not (is_number(rank) and rank == 1):
        return "map_rank", f"BatchNormalization map_rank must be 1 or None, got {describe(rank)}"
    return None


def complete(attrs: dict, training) -> dict:
    """The time constant, given in samples, as the momentum of a minibatch of the training block's size."""
    out = dict(attrs)
    tc = out.pop("time_constant", None)
    if tc is not None:
        batch = training.batch_size if training is not None else DEFAULT_BATCH
        out["momentum"] = 1.0 - math.exp(-batch / float(tc))
    return out


def shape(a, ins):
    (t,) = ins
    float_features(t, "BatchNormalization")
    if a.get("map_rank", 1) is None and len(t.shape) > 1:
        raise ShapeError(f"BatchNormalization(map_rank=None) keeps a statistic per element of {t.describe()}; netdsl "
                         "keeps one per channel (map_rank=1, its default): per-element statistics are not implemented")
    c = (t.shape[0],) if len(t.shape) == 3 else (t.shape[-1],)
    return t, {"scale": c, "bias": c, "running_mean": c, "running_var": c}, {}


def inits(layer):
    scale = layer.attr("init_scale", 1.0)
    return {"scale": "ones" if scale == 1 else f"constant({scale!r})", "bias": "zeros", "running_mean": "zeros",
            "running_var": "ones"}


KIND = register(LayerKind(
    "BatchNormalization", shape,
    attrs={"epsilon": ("epsilon", 1e-5), "momentum": ("momentum", 0.1), "init_scale": ("init_scale", 1.0),
           "map_rank": ("map_rank", 1), "time_constant": ("normalization_time_constant", None)},
    floats=("epsilon", "momentum", "init_scale"),
    inits=inits,
    frozen=("running_mean", "running_var"),
    complete=complete,
    constructors=(Constructor("BatchNormalization", (),
                              {"epsilon": 1e-5, "momentum": 0.1, "init_scale": 1, "map_rank": 1,
                               "normalization_time_constant": None, "blend_time_constant": 0,
                               "use_cntk_engine": True}, check,
                              options=("map_rank", "normalization_time_constant", "epsilon", "use_cntk_engine")),),
))
