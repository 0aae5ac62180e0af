"""The loss a training block names, as the executor computes it (E704: one it lacks).

Which input and output a dataset feeds is netdsl.data.feed's: one rule for every format.
"""
from __future__ import annotations

from .. import ir
from ..errors import Diagnostic, NetdslError, NO_SPAN
from . import losses


def _span(obj) -> object:
    return getattr(obj, "span", None) or NO_SPAN


# each loss on explicit targets: int labels for cross-entropy, float targets shaped like the output otherwise
ON_TARGETS = {
    "cross_entropy_with_softmax": losses.softmax_cross_entropy,
    "squared_error": losses.mse,
    "l2": losses.half_mse,
    "binary_cross_entropy_with_logits": losses.bce_with_logits,
}


def _base_loss(training: ir.Training):
    """(output, int labels) -> (mean loss, gradient), docs/language.md's formula for each loss."""
    fn = ON_TARGETS.get(training.loss)
    if fn is None:
        raise NetdslError(Diagnostic("E704", f"unsupported loss '{training.loss}'", _span(training)))
    if training.loss == "cross_entropy_with_softmax":
        return fn
    return lambda pred, labels: fn(pred, losses.one_hot(labels, pred))


def _reduced(training: ir.Training, fn):
    if dict(training.loss_attrs).get("reduction", "mean") == "mean":
        return fn

    def summed(pred, labels):
        # the mean's denominator: one term per label (or one-hot row) for cross-entropy, per element for the others
        n = pred.size if training.loss != "cross_entropy_with_softmax" else pred.size // pred.shape[1 if pred.ndim == 4 else -1]
        loss, d = fn(pred, labels)
        return loss * n, d * pred.dtype.type(n)
    return summed


def make_loss(training: ir.Training, classes: int):
    """(logits, int labels) -> (loss, dlogits), as docs/ir.md defines the losses."""
    return _reduced(training, _base_loss(training))


def make_target_loss(training: ir.Training):
    """(output, targets) -> (loss, doutput) on the targets `netdsl conformance --steps` feeds every target:
    int labels for cross-entropy, float targets shaped like the output for the other losses."""
    if training.loss not in ON_TARGETS:
        _base_loss(training)  # E704
    return _reduced(training, ON_TARGETS[training.loss])
