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


def make_loss(training: ir.Training, classes: int):
    """(logits, int labels) -> (loss, dlogits), as docs/ir.md defines the losses."""
    if training.loss == "cross_entropy_with_softmax":
        return losses.softmax_cross_entropy
    if training.loss == "squared_error":
        def squared_error(pred, labels):
            target = np.zeros(pred.shape, pred.dtype)
            target[np.arange(len(labels)), labels] = 1  # one-hot targets
            return losses.mse(pred, target)
        return squared_error
    raise NetdslError(Diagnostic("E704", f"unsupported loss '{training.loss}'", _span(training)))
