"""What the train block puts around the optimizer's update, in one fixed order (docs/language.md):

1. the gradient of the loss (its mean over the minibatch; with lr_unit = sample, its sum, as CNTK's
   per-sample learning rates assume);
2. weight_decay = l2(wd): + wd * p (the gradient of (wd/2) * sum(p**2), which the reported loss includes);
3. clip_value: each element into [-v, v]; then clip_norm: the whole gradient scaled by
   min(1, clip_norm / (norm + 1e-6)), the norm taken over every parameter (torch's clip_grad_norm_);
4. this step's learning rate: the schedule's, divided by (1 + decay * step) for SGD's Keras-style decay;
5. weight_decay = decoupled(wd), or AdamW: p -= lr * wd * p;
6. the optimizer's own update with that learning rate;
7. max_norm (a Dense or Convolution attribute): each output unit's weights w (a row of Dense's W (out, in),
   a filter of Convolution's W (O, I, kh, kw)) become w * clip(|w|, 0, m) / (1e-7 + |w|), |w| the L2 norm
   over all the other axes: Keras's MaxNorm constraint, epsilon keras.backend.epsilon(); biases untouched.

Every parameter the optimizer trains takes part (weights, biases, normalisation scales), as a torch
optimizer's weight_decay does.
"""
from __future__ import annotations

import math

import numpy as np

from .. import ir


def schedule_factor(training: ir.Training, epoch: int, step: int, base_lr: float) -> float:
    """The learning rate of a step, from the base rate; epoch and step are 0-based counts of the
    epochs and steps completed before it."""
    s = dict(training.schedule_attrs)
    t = step if s.get("unit") == "step" else epoch
    name = training.schedule
    if name is None:
        lr = base_lr
    elif name == "step":
        lr = base_lr * s["gamma"] ** (t // s["step_size"])
    elif name == "piecewise":
        lr = base_lr * s["factors"][sum(t >= b for b in s["boundaries"])]
    elif name == "exponential":
        lr = base_lr * s["gamma"] ** t
    elif name == "cosine":
        lr = s["eta_min"] + (base_lr - s["eta_min"]) * (1 + math.cos(math.pi * min(t, s["t_max"]) / s["t_max"])) / 2
    else:
        raise ValueError(f"unknown schedule {name!r}")
    decay = training.opt("decay", 0.0) if training.optimizer == "SGD" else 0.0
    return lr / (1 + decay * step) if decay else lr


MAX_NORM_EPSILON = 1e-7  # keras.backend.epsilon()


def max_norms(graph: ir.Graph) -> dict:
    """{weight parameter name: max_norm} of the layers that set max_norm."""
    out = {}
    for layer in graph.layers:
        m = layer.attr("max_norm") if layer.kind in ("Dense", "Convolution") else None
        if m is not None:
            out[layer.param("W").name] = float(m)
    return out


def apply_max_norm(w: np.ndarray, m: float) -> None:
    """Step 7 on one weight array, in place, in its dtype: the operations of keras.constraints.MaxNorm."""
    t = w.dtype.type
    norms = np.sqrt(np.sum(w * w, axis=tuple(range(1, w.ndim)), keepdims=True))
    w *= np.clip(norms, t(0), t(m)) / (t(MAX_NORM_EPSILON) + norms)


class StepRule:
    def __init__(self, training: ir.Training, base_lr: float, max_norms: dict | None = None):
        self.training = training
        self.max_norms = dict(max_norms or {})
        self.base_lr = float(base_lr)
        wd, mode = training.weight_decay, training.weight_decay_mode
        self.l2 = wd if mode == "l2" else 0.0
        self.decoupled = wd if mode == "decoupled" else 0.0
        if training.optimizer == "AdamW":  # decoupled by definition; an l2(...) in the loss may come on top
            self.decoupled = training.opt("weight_decay", 0.01)

    def penalty(self, params: dict) -> float:
        """What l2 weight decay adds to the reported loss: (wd/2) * sum(p**2)."""
        if not self.l2:
            return 0.0
        return 0.5 * self.l2 * float(sum(np.vdot(p, p) for p in params.values()))

    def lr(self, epoch: int, step: int) -> float:
        return schedule_factor(self.training, epoch, step, self.base_lr)

    def step(self, optimizer, params: dict, grads: dict, epoch: int, step: int, batch: int) -> None:
        """Steps 1-6 above on `params` in place."""
        tr = self.training
        g = {k: v for k, v in grads.items() if k in params and v is not None}
        if tr.lr_unit == "sample":
            g = {k: v * v.dtype.type(batch) for k, v in g.items()}
        if self.l2:
            g = {k: v + params[k].dtype.type(self.l2) * params[k] for k, v in g.items()}
        if tr.clip_value is not None:
            g = {k: np.clip(v, -tr.clip_value, tr.clip_value).astype(v.dtype, copy=False) for k, v in g.items()}
        if tr.clip_norm is not None and g:
            norm = math.sqrt(sum(float(np.vdot(v, v)) for v in g.values()))
            coef = min(1.0, tr.clip_norm / (norm + 1e-6))
            if coef < 1.0:
                g = {k: v * v.dtype.type(coef) for k, v in g.items()}
        lr = self.lr(epoch, step)
        optimizer.lr = lr
        if self.decoupled:
            for k in g:
                params[k] *= params[k].dtype.type(1 - lr * self.decoupled)
        optimizer.step(params, g)
        for name, m in self.max_norms.items():
            if name in params:
                apply_max_norm(params[name], m)

    @property
    def plain(self) -> bool:
        """True when the rule changes nothing: the optimizer's update alone, at its own rate."""
        tr = self.training
        return (tr.schedule is None and not tr.opt("decay", 0.0) and tr.lr_unit == "minibatch" and not self.l2
                and not self.decoupled and tr.clip_value is None and tr.clip_norm is None and not self.max_norms)
