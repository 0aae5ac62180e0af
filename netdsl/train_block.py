"""The train block: dataset, loss, optimizer and the rest, checked into an ir.Training.

Every setting's exact formula is in docs/language.md ("The train block"). Settings a target cannot match
are refused there at check time (netdsl/emit/base.py, E802), never dropped.
"""
from __future__ import annotations

import math

from . import ir
from . import syntax as S
from .errors import did_you_mean
from .values import POISON, Env, describe, is_number, shown

TRAIN_KEYS = ("dataset", "loss", "optimizer", "batch_size", "epochs", "metrics", "seed", "validation_split",
              "log_every", "early_stopping", "lr_schedule", "lr_unit", "weight_decay", "clip_norm", "clip_value")
# keys whose value is a name or a call read as a setting (Adam(lr=0.001), step(step_size=2)), not evaluated
_SPELLED = ("loss", "optimizer", "metrics", "lr_schedule", "lr_unit", "weight_decay")

# name as written -> the IR's loss. `cross_entropy` is kept for the seeds that write it, but it reads
# like cross-entropy on probabilities: netdsl/lint.py warns (W003) that it means the softmax one.
# `categorical_crossentropy` is Keras's name for it on one-hot targets (the same W003 applies).
LOSSES = {"cross_entropy_with_softmax": "cross_entropy_with_softmax", "squared_error": "squared_error",
          "mse": "squared_error", "cross_entropy": "cross_entropy_with_softmax",
          "categorical_crossentropy": "cross_entropy_with_softmax",
          "binary_cross_entropy_with_logits": "binary_cross_entropy_with_logits", "l2": "l2"}
LOSS_ARGS = {"reduction": ("mean", "choice:mean,sum")}

# name -> argument -> (default, kind); kinds are checked by _settings
OPTIMIZERS = {
    "SGD": {"lr": (0.01, "num"), "momentum": (0.0, "num"), "nesterov": (False, "bool"), "decay": (0.0, "num")},
    "Adam": {"lr": (0.001, "num"), "beta1": (0.9, "num"), "beta2": (0.999, "num"), "eps": (1e-8, "num")},
    "AdamW": {"lr": (0.001, "num"), "beta1": (0.9, "num"), "beta2": (0.999, "num"), "eps": (1e-8, "num"),
              "weight_decay": (0.01, "num")},
    "RMSProp": {"lr": (0.01, "num"), "rho": (0.99, "num"), "eps": (1e-8, "num"), "momentum": (0.0, "num"),
                "centered": (False, "bool"), "eps_inside_sqrt": (False, "bool")},
    "Adadelta": {"lr": (1.0, "num"), "rho": (0.9, "num"), "eps": (1e-6, "num")},
    "Adagrad": {"lr": (0.01, "num"), "eps": (1e-10, "num"), "initial_accumulator": (0.0, "num")},
}
OPTIMIZER_ALIASES = {"RMSprop": "RMSProp"}
SCHEDULES = {
    "step": {"step_size": (None, "int"), "gamma": (0.1, "num"), "unit": ("epoch", "choice:epoch,step")},
    "piecewise": {"boundaries": (None, "intlist"), "factors": (None, "numlist"), "unit": ("epoch", "choice:epoch,step")},
    "exponential": {"gamma": (None, "num"), "unit": ("epoch", "choice:epoch,step")},
    "cosine": {"t_max": (None, "int"), "eta_min": (0.0, "num"), "unit": ("epoch", "choice:epoch,step")},
}
WEIGHT_DECAY = {"l2": "l2", "decoupled": "decoupled"}
METRICS = ("accuracy", "top_k_accuracy", "confusion_matrix")


def _defaults(spec: dict) -> dict:
    return {k: d for k, (d, _) in spec.items()}


# the Training of a model without a train block: every default filled in
DEFAULT_TRAINING = ir.Training(optimizer_attrs=tuple(sorted(_defaults(OPTIMIZERS["SGD"]).items())))


def lower_train(ev, st: S.Train, env: Env) -> ir.Training:
    """The train block as an ir.Training, every setting checked; mistakes are reported through ev."""
    values, spans = {}, {}
    for e in st.entries:
        if e.key not in TRAIN_KEYS:
            ev.err("E401", f"unknown training setting '{e.key}'{did_you_mean(e.key, TRAIN_KEYS)}", e.span)
            continue
        spans[e.key] = e.value.span
        if e.key in _SPELLED and isinstance(e.value, (S.Name, S.Call)):
            values[e.key] = e.value
        elif e.key == "metrics" and isinstance(e.value, (S.List, S.Tuple)):
            values[e.key] = tuple(e.value.items)
        else:
            values[e.key] = ev.eval(e.value, env)
    kw = {"spans": tuple(sorted(spans.items()))}
    ds = values.get("dataset")
    if ds is not None and ds is not POISON:
        if not isinstance(ds, str):
            ev.err("E103", f"dataset must be a string such as \"mnist\", got {describe(ds)}", spans["dataset"])
        else:
            kw["dataset"] = ds
    if "loss" in values:
        _loss(ev, env, values["loss"], spans["loss"], kw)
    for key in ("batch_size", "epochs", "log_every", "early_stopping"):
        v = values.get(key)
        if v is not None and v is not POISON:
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                ev.err("E103", f"{key} must be a positive integer, got {describe(v)}", spans[key])
            else:
                kw[key] = v
    v = values.get("seed")
    if v is not None and v is not POISON:
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2 ** 32:
            ev.err("E103", f"seed must be an integer in [0, 2**32), got {describe(v)}", spans["seed"])
        else:
            kw["seed"] = v
    v = values.get("validation_split")
    if v is not None and v is not POISON:
        if not is_number(v) or not 0 <= v < 1:
            ev.err("E103", f"validation_split must be a fraction in [0, 1), got {describe(v)}", spans["validation_split"])
        else:
            kw["validation_split"] = float(v)
    for key in ("clip_norm", "clip_value"):
        v = values.get(key)
        if v is not None and v is not POISON:
            if not is_number(v) or not math.isfinite(v) or v <= 0:
                ev.err("E103", f"{key} must be a positive number, got {describe(v)}", spans[key])
            else:
                kw[key] = float(v)
    if "metrics" in values:
        kw["metrics"] = _metrics(ev, env, values["metrics"], spans["metrics"])
    if "optimizer" in values:
        _optimizer(ev, env, values["optimizer"], spans["optimizer"], kw)
    kw.setdefault("optimizer_attrs", tuple(sorted(_defaults(OPTIMIZERS[kw.get("optimizer", "SGD")]).items())))
    if "lr_schedule" in values:
        _schedule(ev, env, values["lr_schedule"], spans["lr_schedule"], kw)
    if "lr_unit" in values:
        unit = _word(ev, env, values["lr_unit"])
        if unit not in ("minibatch", "sample"):
            ev.err("E103", f"lr_unit must be minibatch or sample, got {describe(unit)}", spans["lr_unit"])
        else:
            kw["lr_unit"] = unit
    if "weight_decay" in values:
        _weight_decay(ev, env, values["weight_decay"], spans["weight_decay"], kw)
    if kw.get("early_stopping") and not kw.get("validation_split"):
        ev.err("E103", "early_stopping watches the validation loss: it needs validation_split > 0",
               spans["early_stopping"], "add e.g. validation_split = 0.1")
    return ir.Training(span=st.span, **kw)


def _word(ev, env, node):
    """A setting written as a bare name (sum) or a string ("sum")."""
    if isinstance(node, S.Name):
        return node.id
    return ev.eval(node, env) if isinstance(node, S.Node) else node


def _split_call(node):
    """(name, call or None) of a setting written `name`, `"name"` or `name(k=v, ...)`; (None, None) if none."""
    if isinstance(node, S.Call) and isinstance(node.func, S.Name):
        return node.func.id, node
    if isinstance(node, S.Name):
        return node.id, None
    if isinstance(node, S.String):
        return node.value, None
    if isinstance(node, str):  # an expression that evaluated to a string
        return node, None
    return None, None


def _settings(ev, env, name: str, call, spec: dict, span) -> dict | None:
    """The keyword arguments of `call` checked against spec (argument -> (default, kind)); None on a mistake."""
    out, ok = _defaults(spec), True
    if call is None:
        missing = [k for k, (d, _) in spec.items() if d is None]
        return out if not missing else _missing(ev, name, missing, span)
    if call.args:
        ev.err("E103", f"{name} takes keyword arguments, e.g. {name}({next(iter(spec))}=...)", call.args[0].span)
        ok = False
    given = set()
    for a in call.kwargs:
        if a.name not in spec:
            ev.err("E102", f"{name} has no argument '{a.name}'{did_you_mean(a.name, spec)}", a.span)
            ok = False
            continue
        kind = spec[a.name][1]
        v = _word(ev, env, a.value) if kind.startswith("choice:") else ev.eval(a.value, env)
        if v is POISON:
            ok = False
            continue
        problem = _check(kind, v)
        if problem:
            ev.err("E103", f"{name} argument '{a.name}' must be {problem}, got {describe(v)}", a.value.span)
            ok = False
            continue
        out[a.name] = _normal(kind, v)
        given.add(a.name)
    missing = [k for k, (d, _) in spec.items() if d is None and k not in given]
    if missing:
        return _missing(ev, name, missing, call.span)
    return out if ok else None


def _missing(ev, name, missing, span):
    ev.err("E104", f"{name} needs {', '.join(missing)}", span)
    return None


def _check(kind: str, v) -> str | None:
    if kind == "num":
        return None if is_number(v) and math.isfinite(v) and v >= 0 else "a non-negative number"
    if kind == "int":
        return None if isinstance(v, int) and not isinstance(v, bool) and v >= 1 else "a positive integer"
    if kind == "bool":
        return None if isinstance(v, bool) else "a boolean"
    if kind.startswith("choice:"):
        choices = kind[len("choice:"):].split(",")
        return None if v in choices else " or ".join(choices)
    if kind in ("intlist", "numlist"):
        seq = v if isinstance(v, (list, tuple)) else None
        if not seq:
            return "a non-empty list"
        if kind == "intlist" and not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in seq):
            return "a list of positive integers"
        if kind == "numlist" and not all(is_number(x) and math.isfinite(x) and x >= 0 for x in seq):
            return "a list of non-negative numbers"
        return None
    raise AssertionError(kind)


def _normal(kind: str, v):
    if kind == "num":
        return float(v)
    if kind == "numlist":
        return tuple(float(x) for x in v)
    if kind == "intlist":
        return tuple(v)
    return v


def _loss(ev, env, node, span, kw):
    name, call = _split_call(node)
    if name is None:
        v = ev.eval(node, env) if isinstance(node, S.Node) else node
        if v is POISON:
            return
        if isinstance(v, str) and v in LOSSES:
            name = v
        else:
            ev.err("E402", f"loss must be a name such as cross_entropy_with_softmax, got {describe(v)}", span,
                   f"netdsl knows {', '.join(LOSSES)}")
            return
    if name not in LOSSES:
        ev.err("E402", f"unknown loss {shown(name)}{did_you_mean(name, LOSSES)}", span,
               f"netdsl knows {', '.join(LOSSES)}")
        return
    settings = _settings(ev, env, name, call, LOSS_ARGS, span)
    if settings is None:
        return
    kw["loss"] = LOSSES[name]
    if settings != _defaults(LOSS_ARGS):
        kw["loss_attrs"] = tuple(sorted(settings.items()))


def _metrics(ev, env, value, span) -> tuple:
    items = value if isinstance(value, tuple) else (value,)
    out = []
    for node in items:
        name, call = _split_call(node)
        if name is None:
            v = ev.eval(node, env) if isinstance(node, S.Node) else node
            if v is POISON:
                continue
            ev.err("E403", f"metrics takes names such as accuracy, got {describe(v)}", getattr(node, "span", span))
            continue
        if name not in METRICS:
            ev.err("E403", f"unknown metric {shown(name)}{did_you_mean(name, METRICS)}; netdsl knows "
                   f"{', '.join(METRICS)}", node.span)
            continue
        if name == "top_k_accuracy":
            s = _settings(ev, env, name, call, {"k": (5, "int")}, node.span)
            if s is not None:
                out.append(f"top_{s['k']}_accuracy")
        elif call is not None:
            ev.err("E103", f"{name} takes no arguments", call.span)
        else:
            out.append(name)
    return tuple(dict.fromkeys(out))


def _optimizer(ev, env, node, span, kw):
    name, call = _split_call(node)
    if name is None:
        v = ev.eval(node, env) if isinstance(node, S.Node) else node
        if v is not POISON:
            ev.err("E403", f"optimizer must be {', '.join(OPTIMIZERS)}, e.g. Adam(lr=0.001), got {describe(v)}", span)
        return
    name = OPTIMIZER_ALIASES.get(name, name)
    if name not in OPTIMIZERS:
        ev.err("E403", f"unknown optimizer {shown(name)}{did_you_mean(name, OPTIMIZERS)}", span)
        return
    settings = _settings(ev, env, name, call, OPTIMIZERS[name], span)
    if settings is None:
        return
    if settings.get("nesterov") and not settings.get("momentum"):
        # Nesterov's step looks ahead along the momentum; without momentum it is undefined
        where = next((a.span for a in call.kwargs if a.name == "nesterov"), call.span)
        ev.err("E103", f"{name} nesterov=True needs momentum > 0, got momentum={settings.get('momentum')!r}",
               where, "add momentum, e.g. SGD(lr=0.01, momentum=0.9, nesterov=True)")
        return
    kw["optimizer"] = name
    kw["optimizer_attrs"] = tuple(sorted(settings.items()))


def _schedule(ev, env, node, span, kw):
    name, call = _split_call(node)
    if name is None or name not in SCHEDULES:
        shown_name = shown(name) if name is not None else "that"
        ev.err("E103", f"unknown lr_schedule {shown_name}{did_you_mean(name or '', SCHEDULES)}; netdsl knows "
               f"{', '.join(f'{s}(...)' for s in SCHEDULES)}", span)
        return
    settings = _settings(ev, env, name, call, SCHEDULES[name], span)
    if settings is None:
        return
    if name == "piecewise":
        b, f = settings["boundaries"], settings["factors"]
        if len(f) != len(b) + 1 or list(b) != sorted(set(b)):
            ev.err("E103", f"piecewise needs increasing boundaries and one more factor than boundaries, got "
                   f"{len(b)} boundaries and {len(f)} factors", call.span)
            return
    kw["schedule"] = name
    kw["schedule_attrs"] = tuple(sorted(settings.items()))


def _weight_decay(ev, env, node, span, kw):
    name, call = _split_call(node)
    if name is None or name not in WEIGHT_DECAY or call is None or call.kwargs or len(call.args) != 1:
        ev.err("E103", "weight_decay is written l2(rate) (in the loss, as Keras's regulariser) or decoupled(rate) "
               "(as AdamW)", span, "e.g. weight_decay = l2(0.0005)")
        return
    v = ev.eval(call.args[0], env)
    if v is POISON:
        return
    if not is_number(v) or not math.isfinite(v) or v < 0:
        ev.err("E103", f"the weight decay rate must be a non-negative number, got {describe(v)}", call.args[0].span)
        return
    if kw.get("optimizer") == "AdamW" and name == "decoupled":
        ev.err("E103", "AdamW's weight decay is already decoupled: set AdamW(weight_decay=...), not decoupled(...)",
               span)
        return
    kw["weight_decay"] = float(v)
    kw["weight_decay_mode"] = name
