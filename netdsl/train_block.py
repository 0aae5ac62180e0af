"""The train block: dataset, loss, optimizer and the rest, checked into an ir.Training."""
from __future__ import annotations

import math

from . import ir
from . import syntax as S
from .errors import did_you_mean
from .values import POISON, Env, describe, is_number, shown

TRAIN_KEYS = ("dataset", "loss", "optimizer", "batch_size", "epochs", "metrics")
# name as written -> the IR's loss. `cross_entropy` is kept for the seeds that write it, but it reads
# like cross-entropy on probabilities: netdsl/lint.py warns (W003) that it means the softmax one.
LOSSES = {"cross_entropy_with_softmax": "cross_entropy_with_softmax", "squared_error": "squared_error",
          "mse": "squared_error", "cross_entropy": "cross_entropy_with_softmax"}
OPTIMIZERS = {
    "SGD": {"lr": 0.01, "momentum": 0.0, "nesterov": False},
    "Adam": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
    "Adadelta": {"lr": 1.0, "rho": 0.9, "eps": 1e-6},
}
# the Training of a model without a train block: every default filled in
DEFAULT_TRAINING = ir.Training(optimizer_attrs=tuple(sorted(OPTIMIZERS["SGD"].items())))


def lower_train(ev, st: S.Train, env: Env) -> ir.Training:
    """The train block as an ir.Training, every setting checked; mistakes are reported through ev."""
    values, spans = {}, {}
    for e in st.entries:
        if e.key not in TRAIN_KEYS:
            ev.err("E401", f"unknown training setting '{e.key}'{did_you_mean(e.key, TRAIN_KEYS)}", e.span)
            continue
        spans[e.key] = e.value.span
        if e.key in ("loss", "metrics", "optimizer") and isinstance(e.value, S.Name):
            values[e.key] = e.value.id
        elif e.key == "metrics" and isinstance(e.value, (S.List, S.Tuple)):
            values[e.key] = tuple(i.id if isinstance(i, S.Name) else ev.eval(i, env) for i in e.value.items)
        elif e.key == "optimizer" and isinstance(e.value, S.Call) and isinstance(e.value.func, S.Name):
            values[e.key] = e.value
        else:
            values[e.key] = ev.eval(e.value, env)
    kw = {}
    ds = values.get("dataset")
    if ds is not None and ds is not POISON:
        if not isinstance(ds, str):
            ev.err("E103", f"dataset must be a string such as \"mnist\", got {describe(ds)}", spans["dataset"])
        else:
            kw["dataset"] = ds
    # loss, metrics and optimizer are usually names, but any expression can stand there: check
    # the type before hashing or printing the value (a list is unhashable, a deep tuple unprintable)
    loss = values.get("loss")
    if loss is not None and loss is not POISON:
        if not isinstance(loss, str):
            ev.err("E402", f"loss must be a name such as cross_entropy_with_softmax, got {describe(loss)}",
                     spans["loss"], "netdsl knows cross_entropy_with_softmax and squared_error (mse)")
        elif loss not in LOSSES:
            ev.err("E402", f"unknown loss {shown(loss)}{did_you_mean(loss, LOSSES)}", spans["loss"],
                     "netdsl knows cross_entropy_with_softmax and squared_error (mse)")
        else:
            kw["loss"] = LOSSES[loss]
    for key in ("batch_size", "epochs"):
        v = values.get(key)
        if v is not None and v is not POISON:
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                ev.err("E103", f"{key} must be a positive integer, got {describe(v)}", spans[key])
            else:
                kw[key] = v
    metrics = values.get("metrics")
    if metrics is not None:
        metrics = metrics if isinstance(metrics, tuple) else (metrics,)
        for m in metrics:
            if m is POISON or isinstance(m, str) and m == "accuracy":
                continue
            if isinstance(m, str):
                ev.err("E403", f"unknown metric {shown(m)}; netdsl knows 'accuracy'", spans["metrics"])
            else:
                ev.err("E403", f"metrics takes names such as accuracy, got {describe(m)}", spans["metrics"])
        kw["metrics"] = tuple(m for m in metrics if m == "accuracy")
    opt = values.get("optimizer")
    if opt is not None and opt is not POISON:
        if isinstance(opt, S.Call):  # Adam(lr=0.001), kept unevaluated above
            name, call = opt.func.id, opt
        elif isinstance(opt, str):
            name, call = opt, None
        else:
            name, call = None, None
            ev.err("E403", f"optimizer must be {', '.join(OPTIMIZERS)}, e.g. Adam(lr=0.001), got {describe(opt)}",
                     spans["optimizer"])
        if name is None:
            pass
        elif name not in OPTIMIZERS:
            ev.err("E403", f"unknown optimizer {shown(name)}{did_you_mean(name, OPTIMIZERS)}", spans["optimizer"])
        else:
            settings = dict(OPTIMIZERS[name])
            if call is not None:
                if call.args:
                    ev.err("E103", f"{name} takes keyword arguments, e.g. {name}(lr=0.01)", call.args[0].span)
                for a in call.kwargs:
                    if a.name not in settings:
                        ev.err("E102", f"{name} has no argument '{a.name}'{did_you_mean(a.name, settings)}", a.span)
                        continue
                    v = ev.eval(a.value, env)
                    want = type(settings[a.name])
                    if v is POISON:
                        continue
                    if want is bool and not isinstance(v, bool) or want is float and (
                            not is_number(v) or not math.isfinite(v) or v < 0):
                        ev.err("E103", f"{name} argument '{a.name}' must be a {'boolean' if want is bool else 'non-negative number'}, got {describe(v)}", a.value.span)
                        continue
                    settings[a.name] = float(v) if want is float else v
                if settings.get("nesterov") and not settings.get("momentum"):
                    # Nesterov's step looks ahead along the momentum; without momentum it is undefined
                    where = next((a.span for a in call.kwargs if a.name == "nesterov"), call.span)
                    ev.err("E103", f"{name} nesterov=True needs momentum > 0, got momentum={settings.get('momentum')!r}",
                           where, "add momentum, e.g. SGD(lr=0.01, momentum=0.9, nesterov=True)")
            kw["optimizer"] = name
            kw["optimizer_attrs"] = tuple(sorted(settings.items()))
    kw.setdefault("optimizer_attrs", tuple(sorted(OPTIMIZERS[kw.get("optimizer", "SGD")].items())))
    return ir.Training(span=st.span, **kw)
