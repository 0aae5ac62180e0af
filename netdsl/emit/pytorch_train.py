"""The PyTorch script's training (issue 18): the optimizer, the loss, and what the train block puts around
them, in netdsl's order (exec/steprule.py). templates/pytorch/training.py.j2 lays the code out.

torch.optim's own optimizers compute exactly netdsl's updates (exec/optim.py mirrors them), except
RMSProp with eps_inside_sqrt (TensorFlow's form), which the generated module writes by hand. The learning
rate of every step is netdsl's closed form (common/training.py.j2 scheduled_lr) through an LRScheduler.
"""
from __future__ import annotations

from .. import ir
from ..train_block import OPTIMIZERS
from . import common as C
from .common import Code, call

# what the generated script implements, exactly as netdsl run does (emit/training.py refuses the rest)
HONOURED = {
    "optimizers": {name: set(spec) for name, spec in OPTIMIZERS.items()},
    "losses": {"cross_entropy_with_softmax", "squared_error", "l2", "binary_cross_entropy_with_logits"},
    "settings": {"seed", "loss.reduction", "lr_schedule", "lr_unit", "weight_decay", "clip_norm", "clip_value",
                 "validation_split", "log_every", "early_stopping", "metrics", "max_norm"},
}
FLOAT_LOSSES = ("squared_error", "l2", "binary_cross_entropy_with_logits")


def context(graph: ir.Graph) -> dict:
    """The template's `train`: the optimizer statement and which parts of the step rule the block uses."""
    t = graph.training or ir.Training()
    sgd_decay = t.optimizer == "SGD" and bool(t.opt("decay", 0.0))
    l2 = bool(t.weight_decay) and t.weight_decay_mode == "l2"
    sample = t.lr_unit == "sample"
    objective = "loss * samples" if sample else "loss"
    clipped = " and ".join(k for k, v in (("value", t.clip_value), ("norm", t.clip_norm)) if v is not None)
    parts = ["the loss's gradient" + (" with l2 weight decay's" if l2 else "") + (f" clipped by {clipped}" if clipped
                                                                                 else "")]
    if t.schedule is not None or sgd_decay:
        parts.append("this step's learning rate")
    if t.weight_decay and t.weight_decay_mode == "decoupled":
        parts.append("decoupled weight decay")
    parts.append("the optimizer's update")
    max_norms = {layer.param("W").name: float(layer.attr("max_norm")) for layer in graph.layers
                 if layer.kind in ("Dense", "Convolution") and layer.attr("max_norm") is not None}
    if max_norms:
        parts.append("the max_norm constraints")
    doc = ("The training block's optimizer and what it puts around each update, in netdsl's order "
           f"(exec/steprule.py): {'; '.join(parts)}.")
    return {
        "doc": C.docstring(doc, 4),
        "max_norms": sorted(max_norms.items()),
        "optimizer": C.wrap_call("optimizer = " + optimizer_call(t), 4),
        "eps_inside_sqrt": t.optimizer == "RMSProp" and bool(t.opt("eps_inside_sqrt")),
        "schedule": t.schedule is not None or sgd_decay,
        "l2": l2,
        "decoupled": bool(t.weight_decay) and t.weight_decay_mode == "decoupled",
        "clip_value": t.clip_value is not None,
        "clip_norm": t.clip_norm is not None,
        "sample": sample,
        "objective": objective + (" + penalty" if l2 else ""),
        "validation": bool(t.validation_split),
        "metrics": any(m != "accuracy" for m in t.metrics),
        "log_every": t.log_every is not None,
        "early_stopping": t.early_stopping is not None,
    }


def optimizer_call(t: ir.Training) -> Code:
    """torch.optim's optimizer of the block, over the trainable parameters, at the rate `lr`."""
    o = dict(t.optimizer_attrs)
    params, lr = Code("params"), Code("lr")
    if t.optimizer == "SGD":
        kwargs = {"lr": lr}
        if o["momentum"]:
            kwargs["momentum"] = o["momentum"]
        if o["nesterov"]:
            kwargs["nesterov"] = True
        return call("torch.optim.SGD", params, **kwargs)
    if t.optimizer in ("Adam", "AdamW"):
        kwargs = {"weight_decay": o["weight_decay"]} if t.optimizer == "AdamW" else {}
        return call(f"torch.optim.{t.optimizer}", params, lr=lr, betas=(o["beta1"], o["beta2"]), eps=o["eps"],
                    **kwargs)
    if t.optimizer == "RMSProp":
        # torch's RMSprop divides by sqrt(v) + eps; TensorFlow's form (eps inside) is the module's own class
        cls = "RMSpropEpsInside" if o["eps_inside_sqrt"] else "torch.optim.RMSprop"
        kwargs = {"lr": lr, "alpha": o["rho"], "eps": o["eps"]}
        if o["momentum"]:
            kwargs["momentum"] = o["momentum"]
        if o["centered"]:
            kwargs["centered"] = True
        return call(cls, params, **kwargs)
    if t.optimizer == "Adadelta":
        return call("torch.optim.Adadelta", params, lr=lr, rho=o["rho"], eps=o["eps"])
    if t.optimizer == "Adagrad":
        kwargs = {"initial_accumulator_value": o["initial_accumulator"]} if o["initial_accumulator"] else {}
        return call("torch.optim.Adagrad", params, lr=lr, eps=o["eps"], **kwargs)
    raise C.EmitBug(f"unknown optimizer {t.optimizer}")


def loss_expr(graph: ir.Graph, t: ir.TensorType, z: str, y: str, steps: str = "") -> tuple:
    """(the targets' torch dtype, the loss of one output z against the device tensor y, as an expression).
    steps: an index of the valid steps, already applied to z, to apply to y (then z has no time axis).
    Cross-entropy's targets are int labels or one-hot floats (dtype None: the targets' own); either
    indexes, flattens and moves alike except a feature map's class axis, which only one-hot targets have."""
    tr = graph.training or ir.Training()
    sum_ = ", reduction=\"sum\"" if dict(tr.loss_attrs).get("reduction") == "sum" else ""
    if tr.loss == "squared_error":
        return "torch.float32", f"F.mse_loss({z}, {y}{steps}{sum_})"
    if tr.loss == "l2":  # Gluon's L2Loss: half the squared error
        return "torch.float32", f"0.5 * F.mse_loss({z}, {y}{steps}{sum_})"
    if tr.loss == "binary_cross_entropy_with_logits":
        return "torch.float32", f"F.binary_cross_entropy_with_logits({z}, {y}{steps}{sum_})"
    axis = C.feature_axis(t)
    if steps and len(t.shape) == 1:
        return None, f"F.cross_entropy({z}, {y}{steps}{sum_})"
    if t.seq and len(t.shape) == 1:
        return None, f"F.cross_entropy({z}.flatten(0, 1), {y}.flatten(0, 1){sum_})"
    if axis == 1 or len(t.shape) == 1:
        return None, f"F.cross_entropy({z}, {y}{sum_})"
    moved = f"{y}.movedim({axis}, 1) if {y}.is_floating_point() else {y}"
    return None, f"F.cross_entropy({z}.movedim({axis}, 1), {moved}{sum_})"


def loss_doc(graph: ir.Graph) -> str:
    """batch_loss()'s docstring paragraph: which loss, on what, reduced how."""
    tr = graph.training or ir.Training()
    how = "the sum" if dict(tr.loss_attrs).get("reduction") == "sum" else "the mean"
    text = {
        "squared_error": f"The loss is the squared error against float targets of the output's shape, {how} over "
                         "all elements.",
        "l2": f"The loss is half the squared error (Gluon's L2Loss) against float targets of the output's shape, "
              f"{how} over all elements.",
        "binary_cross_entropy_with_logits": "The loss is binary cross-entropy on the logits against float targets "
                                            f"of the output's shape, {how} over all elements.",
    }.get(tr.loss, f"The loss is cross-entropy with softmax against integer labels or one-hot float targets of "
                   f"the output's shape, {how} over samples (and time steps).")
    if len(graph.outputs) > 1:
        text += f" It is on the first output, {C.ident(graph.outputs[0])}, as in netdsl's own training."
    return C.docstring(text, 4, width=116)
