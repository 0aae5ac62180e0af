"""BatchNormalization: per channel (images) or per feature; momentum is the weight of the new batch."""
from __future__ import annotations

from ..shapes import float_features
from . import Constructor, LayerKind, register
from .common import first_error, unit_interval


def check(a: dict):
    eps, mom = a.get("epsilon", 1e-5), a.get("momentum", 0.1)
    return first_error(
        lambda: unit_interval("BatchNormalization", "epsilon", eps, closed=False),
        lambda: unit_interval("BatchNormalization", "momentum", mom, closed=True,
                              what=" (the weight of the new batch statistic)")) or dict(a)


def shape(a, ins):
    (t,) = ins
    float_features(t, "BatchNormalization")
    c = (t.shape[0],) if len(t.shape) == 3 else (t.shape[-1],)
    return t, {"scale": c, "bias": c, "running_mean": c, "running_var": c}, {}


KIND = register(LayerKind(
    "BatchNormalization", shape,
    attrs={"epsilon": ("epsilon", 1e-5), "momentum": ("momentum", 0.1)},
    floats=("epsilon", "momentum"),
    inits=lambda layer: {"scale": "ones", "bias": "zeros", "running_mean": "zeros", "running_var": "ones"},
    frozen=("running_mean", "running_var"),
    constructors=(Constructor("BatchNormalization", (), {"epsilon": 1e-5, "momentum": 0.1}, check),),
))
