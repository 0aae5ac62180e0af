"""How a dataset feeds a model: which input its images go to (as images,
vectors or rows), which output holds the class scores, and the loss.

E701: the dataset cannot feed the model; E704: the executor lacks the loss.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import data as datamod
from .. import ir
from ..errors import Diagnostic, NetdslError, NO_SPAN
from . import losses
from .weights import graph_sources

E_FEED = "E701"


def _span(obj) -> object:
    return getattr(obj, "span", None) or NO_SPAN


@dataclass
class Feed:
    """How a dataset's (N, H, W) uint8 images become the model's one input."""

    input: str
    view: object  # data.as_images / as_vectors / as_rows
    output: str
    classes: int

    def batch(self, x: np.ndarray) -> np.ndarray:
        return self.view(x)


def make_feed(graph: ir.Graph, dataset: str, image_shape: tuple, classes: int = datamod.NUM_CLASSES) -> Feed:
    """Map an image dataset onto the model's input, or say why it cannot be."""
    try:
        return _make_feed(graph, dataset, image_shape, classes)
    except NetdslError as e:
        raise NetdslError(e.diagnostics, graph_sources(graph)) from None


def _make_feed(graph, dataset, image_shape, classes) -> Feed:
    h, w = image_shape
    offers = (f"({1}, {h}, {w}) images, ({h * w},) vectors or seq[{h}] of ({w},) rows")
    if len(graph.inputs) != 1:
        names = ", ".join(f"'{i.name}' {i.type.describe()}" for i in graph.inputs)
        raise NetdslError(Diagnostic(
            E_FEED, f"dataset '{dataset}' feeds one input, but model {graph.name} has "
            f"{len(graph.inputs)}: {names}", _span(graph.inputs[1] if len(graph.inputs) > 1 else graph),
            f"'{dataset}' offers {offers}"))
    inp = graph.inputs[0]
    t = inp.type
    view = None
    if t.vocab is None and not t.seq:
        if tuple(t.shape) == (1, h, w):
            view = datamod.as_images
        elif tuple(t.shape) == (h * w,):
            view = datamod.as_vectors
    elif t.vocab is None and t.seq and tuple(t.shape) == (w,) and t.length in (None, h):
        view = datamod.as_rows
    if view is None:
        raise NetdslError(Diagnostic(
            E_FEED, f"input '{inp.name}' has type {t.describe()}, which dataset '{dataset}' "
            f"cannot feed", _span(inp), f"'{dataset}' offers {offers}"))
    if len(graph.outputs) != 1:
        raise NetdslError(Diagnostic(
            E_FEED, f"training on '{dataset}' needs one output of {classes} class scores, "
            f"model {graph.name} has {len(graph.outputs)}", _span(graph)))
    out = graph.outputs[0]
    ot = graph.value_type(out)
    if ot.seq or tuple(ot.shape) != (classes,):
        node = next((n for n in graph.nodes if n.name == out), None)
        raise NetdslError(Diagnostic(
            E_FEED, f"output '{out}' has type {ot.describe()}; dataset '{dataset}' has {classes} "
            f"classes, so the output must be ({classes},)", _span(node)))
    return Feed(inp.name, view, out, classes)


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
