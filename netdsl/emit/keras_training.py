"""The Keras target's train block: which optimizer, schedule, loss and gradient processing make_trainer()
compiles, as exec/steprule.py defines them (docs/language.md, issue 18).

Keras's own classes where they compute the same update: SGD and RMSprop while the rate is constant (their
momentum multiplies the rate into the velocity), Adadelta, `weight_decay=` (decoupled: p -= lr * wd * p
after clipping, before the update, as steprule's step 5), variable regularizers for l2 weight decay (in the
loss, so in the gradient before clipping) and a LearningRateSchedule subclass for the schedules. Written by
hand (templates/keras/training.py.j2) where Keras differs: Adam's epsilon, Adagrad's epsilon (inside the
square root in Keras) and its accumulator's start (0.1), PyTorch's RMSprop (epsilon outside the root),
momentum under a varying rate, and clipping (Keras's clipvalue and global_clipnorm exclude each other and
its global norm lacks torch's + 1e-6).
"""
from __future__ import annotations

from .. import ir
from ..train_block import OPTIMIZERS
from . import common as C
from .base import EmitBug, ident
from .common import Code, call

# what the Keras script implements of the train block (emit/training.py refuses the rest, E802)
HONOURED = {
    "optimizers": {name: set(args) for name, args in OPTIMIZERS.items()},
    "losses": {"cross_entropy_with_softmax", "squared_error", "l2", "binary_cross_entropy_with_logits"},
    "settings": {"seed", "lr_schedule", "lr_unit", "weight_decay", "clip_norm", "clip_value", "loss.reduction",
                 "validation_split", "early_stopping", "log_every", "max_norm", "metrics"},
}


def varying_rate(t: ir.Training) -> bool:
    """Does the learning rate change from step to step (a schedule, SGD's decay)?"""
    return t.schedule is not None or (t.optimizer == "SGD" and bool(t.opt("decay", 0.0)))


def schedule_plan(t: ir.Training) -> dict | None:
    """What TrainingSchedule needs: the schedule's name and arguments, SGD's decay; None for a constant rate."""
    if not varying_rate(t):
        return None
    settings = dict(t.schedule_attrs)
    settings.pop("unit", None)
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(settings.items())}
    decay = t.opt("decay", 0.0) if t.optimizer == "SGD" else 0.0
    if decay:
        settings["decay"] = decay
    return {"name": t.schedule, "unit": dict(t.schedule_attrs).get("unit", "epoch"), "settings": settings,
            "decay": bool(decay)}


def optimizer_plan(t: ir.Training) -> tuple:
    """(class to construct, its keyword arguments, the hand-written optimizers the module needs, the class
    Clipped derives from or None)."""
    o = dict(t.optimizer_attrs)
    name = t.optimizer
    varying = varying_rate(t)
    if name == "SGD":
        kwargs = {}
        if o["momentum"]:
            kwargs["momentum"] = float(o["momentum"])
        if o["nesterov"]:
            kwargs["nesterov"] = True
        cls = "TorchSGD" if o["momentum"] and varying else "keras.optimizers.SGD"
    elif name in ("Adam", "AdamW"):
        cls = "TorchAdam"
        kwargs = {"beta_1": o["beta1"], "beta_2": o["beta2"], "epsilon": o["eps"]}
    elif name == "RMSProp":
        kwargs = {"rho": o["rho"], "momentum": float(o["momentum"]), "epsilon": o["eps"], "centered": o["centered"]}
        if o["eps_inside_sqrt"] and not (o["momentum"] and varying):
            cls = "keras.optimizers.RMSprop"
        else:
            cls = "TorchRMSprop"
            kwargs["eps_inside_sqrt"] = o["eps_inside_sqrt"]
    elif name == "Adadelta":
        cls = "keras.optimizers.Adadelta"
        kwargs = {"rho": o["rho"], "epsilon": o["eps"]}
    elif name == "Adagrad":
        cls = "TorchAdagrad"
        kwargs = {"initial_accumulator_value": o["initial_accumulator"], "epsilon": o["eps"]}
    else:
        raise EmitBug(f"unknown optimizer {name}")
    classes = set()
    if name == "AdamW":
        kwargs["weight_decay"] = o["weight_decay"]
    elif t.weight_decay and t.weight_decay_mode == "decoupled":
        kwargs["weight_decay"] = t.weight_decay
    if not cls.startswith("keras."):
        classes.add(cls)
    base = None
    if t.clip_value is not None or t.clip_norm is not None:
        kwargs.update(clip_value=t.clip_value, clip_norm=t.clip_norm)
        base, cls = cls, "Clipped"
    return cls, kwargs, classes, base


def context(t: ir.Training | None) -> dict:
    """The template's view of the train block."""
    t = t or ir.Training()
    cls, kwargs, classes, base = optimizer_plan(t)
    return {
        "schedule": schedule_plan(t),
        "optimizer_classes": classes,
        "clipped_base": base,
        "optimizer_code": call(cls, learning_rate=Code("learning_rate"), **kwargs),
        "l2": t.weight_decay if t.weight_decay and t.weight_decay_mode == "l2" else None,
        "loss": t.loss,
        "reduction": dict(t.loss_attrs).get("reduction", "mean"),
        "per_sample": t.lr_unit == "sample",
        "loss_text": LOSS_TEXT[t.loss] + (", summed" if dict(t.loss_attrs).get("reduction") == "sum" else ", their mean"),
    }


# TrainingLoss's docstring: what it computes per label (cross-entropy) or per element (the others)
LOSS_TEXT = {
    "cross_entropy_with_softmax": "-sum(t * log softmax(z)) over the class axis per label (t one-hot)",
    "squared_error": "(z - t)^2 per element",
    "l2": "0.5 * (z - t)^2 per element (Gluon's L2Loss)",
    "binary_cross_entropy_with_logits": "-t log sigmoid(z) - (1 - t) log(1 - sigmoid(z)) per element",
}


def loss_doc(graph: ir.Graph, kt: dict) -> str:
    """train_step()'s docstring paragraph: which loss, on what targets, reduced how."""
    if kt["loss"] == "cross_entropy_with_softmax":
        on = "integer labels or one-hot float targets of the output's shape"
    else:
        on = "float targets of the output's shape"
    text = f"The loss is {kt['loss_text']}, against {on}"
    if kt["l2"]:
        text += ", plus (wd / 2) * sum(p^2) (weight_decay = l2(wd))"
    text += "."
    if len(graph.outputs) > 1:
        text += f" It is on the first output, {ident(graph.outputs[0])}, as in netdsl's own training."
    return C.docstring(text, 4, width=116)


def script_settings(t: ir.Training | None) -> dict:
    """The train block's keys main() honours around model.fit."""
    t = t or ir.Training()
    return {"validation_split": t.validation_split, "early_stopping": t.early_stopping, "log_every": t.log_every,
            "metrics": any(m != "accuracy" for m in t.metrics)}


def schedule_lines(schedule) -> list:
    if schedule is None:
        return []
    code = call("TrainingSchedule", Code("learning_rate"), Code("steps_per_epoch"), **schedule["settings"])
    return C.wrap_call(f"learning_rate = {code}", 4)
