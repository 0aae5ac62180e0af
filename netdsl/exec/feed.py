"""The loss a training block names, as the executor computes it (E704: one it lacks).

Which input and output a dataset feeds is netdsl.data.feed's: one rule for every format.
"""
from __future__ import annotations

import numpy as np

from .. import ir
from ..errors import Diagnostic, NetdslError, NO_SPAN
from . import losses


def _span(obj) -> object:
    return getattr(obj, "span", None) or NO_SPAN


def _base_loss(training: ir.Training):
    """(output, int labels) -> (mean loss, gradient), docs/language.md's formula for each loss."""
    if training.loss == "cross_entropy_with_softmax":
        return losses.softmax_cross_entropy
    if training.loss == "squared_error":
        return lambda pred, labels: losses.mse(pred, losses.one_hot(labels, pred))
    if training.loss == "l2":
        return lambda pred, labels: losses.half_mse(pred, losses.one_hot(labels, pred))
    if training.loss == "binary_cross_entropy_with_logits":
        return lambda pred, labels: losses.bce_with_logits(pred, losses.one_hot(labels, pred))
    raise NetdslError(Diagnostic("E704", f"unsupported loss '{training.loss}'", _span(training)))


def make_loss(training: ir.Training, classes: int):
    """(logits, int labels) -> (loss, dlogits), as docs/ir.md defines the losses."""
    fn = _base_loss(training)
    if dict(training.loss_attrs).get("reduction", "mean") == "mean":
        return fn

    def summed(pred, labels):
        # the mean's denominator: one term per label for cross-entropy, per element for the others
        n = np.asarray(labels).size if training.loss == "cross_entropy_with_softmax" else pred.size
        loss, d = fn(pred, labels)
        return loss * n, d * pred.dtype.type(n)
    return summed
