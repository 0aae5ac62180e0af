"""How a loaded dataset feeds a model: the input view, padding, targets, accuracy, statistics.

make_feed checks the dataset against the model's single input and output before any
training (E701 located at the input or output, as the executor reports it), and every
label against the output size (a DataError naming the file and sample).

Padding. Token batches are padded per batch with id 0, at the END of each sequence, and
come with their (N,) lengths, which the executor takes (Executor.forward(lengths=)), so the
recurrences and select_last ignore the padding (docs/ir.md); the loss and the accuracy
count real tokens only (the output gradient at a padded position is zero).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .base import STATS_PREFIX, DataError, Dataset
from .text import PAD_ID, pad_batch

E_FEED = "E701"


@dataclass
class Feed:
    input: str
    output: str
    classes: int
    kind: str  # "dense", "tags" or "text"
    view: str = "same"  # dense only: same | channel | flatten
    mean: np.ndarray | None = None  # data statistics, applied before the view
    std: np.ndarray | None = None

    def batch(self, x) -> np.ndarray:
        """The model's input array for samples x."""
        return self.batch_lengths(x)[0]

    def batch_lengths(self, x) -> tuple:
        """(the model's input array for samples x, its (N,) lengths or None when not padded)."""
        if self.kind != "dense":
            return pad_batch(list(x), PAD_ID)
        return self.dense(x), None

    def forward_args(self, x) -> dict:
        """Executor.forward's inputs= and lengths= for samples x."""
        xb, lengths = self.batch_lengths(x)
        return {"inputs": {self.input: xb}, "lengths": None if lengths is None else {self.input: lengths}}

    def dense(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        if self.view == "channel":
            return x.reshape(x.shape[0], 1, *x.shape[1:])
        if self.view == "flatten":
            return x.reshape(x.shape[0], -1)
        return x

    def targets(self, y):
        """(labels as the loss wants them, mask of real positions or None)."""
        if self.kind != "tags":
            return np.asarray(y, dtype=np.int64), None
        labels, lengths = pad_batch(list(y), 0)
        mask = np.arange(labels.shape[1])[None, :] < lengths[:, None]
        return labels, mask

    def count_correct(self, out: np.ndarray, y) -> tuple[int, int]:
        labels, mask = self.targets(y)
        hit = out.argmax(axis=-1) == labels
        if mask is None:
            return int(hit.sum()), len(labels)
        return int(hit[mask].sum()), int(mask.sum())


def masked_loss(loss_fn, out, labels, mask):
    """loss_fn over the real positions only; the gradient at padded positions is zero."""
    if mask is None:
        return loss_fn(out, labels)
    loss, d = loss_fn(out[mask], labels[mask])
    grad = np.zeros_like(out)
    grad[mask] = d
    return loss, grad


def _span(obj):
    from ..errors import NO_SPAN
    return getattr(obj, "span", None) or NO_SPAN


def _err(message, obj, note=None):
    from ..errors import Diagnostic, NetdslError
    return NetdslError(Diagnostic(E_FEED, message, _span(obj), note))


def dense_view(t, sample: tuple):
    shape = tuple(t.shape)
    if t.vocab is not None:
        return None
    if not t.seq:
        if shape == sample:
            return "same"
        if len(sample) == 2 and shape == (1, *sample):
            return "channel"
        if len(shape) == 1 and shape[0] == math.prod(sample):
            return "flatten"
        return None
    if len(sample) == 2 and shape == (sample[1],) and t.length in (None, sample[0]):
        return "same"
    return None


def make_feed(graph, dataset: Dataset, name: str) -> Feed:
    """Map `dataset` onto the model's one input and one output, or say why it cannot be."""
    if len(graph.inputs) != 1:
        names = ", ".join(f"'{i.name}' {i.type.describe()}" for i in graph.inputs)
        raise _err(f"dataset '{name}' feeds one input, but model {graph.name} has {len(graph.inputs)}: "
                   f"{names}", graph.inputs[1] if len(graph.inputs) > 1 else graph)
    inp = graph.inputs[0]
    t = inp.type
    if dataset.kind == "dense":
        sample = tuple(dataset.x_train.shape[1:])
        view = dense_view(t, sample)
        if view is None:
            raise _err(f"input '{inp.name}' has type {t.describe()}, which dataset '{name}' cannot feed: "
                       f"its samples have shape {sample}", inp, _offers(sample))
    else:
        if t.vocab is None:
            raise _err(f"input '{inp.name}' has type {t.describe()}; dataset '{name}' holds token "
                       f"sequences, which feed SequenceInput(vocab=N)", inp)
        if dataset.vocab is not None and len(dataset.vocab) > t.vocab:
            raise _err(f"dataset '{name}' has a vocabulary of {len(dataset.vocab)} tokens (with the pad "
                       f"and unknown tokens), more than input '{inp.name}' takes (vocab={t.vocab})", inp)
        view = "same"
    if len(graph.outputs) != 1:
        raise _err(f"training on '{name}' needs one output of class scores, model {graph.name} has "
                   f"{len(graph.outputs)}", graph)
    out = graph.outputs[0]
    ot = graph.value_type(out)
    node = next((n for n in graph.nodes if n.name == out), graph)
    want_seq = dataset.kind == "tags"
    if len(ot.shape) != 1 or bool(ot.seq) != want_seq:
        what = "a sequence of class scores, one per token" if want_seq else "one vector of class scores"
        raise _err(f"output '{out}' has type {ot.describe()}; dataset '{name}' needs {what}", node)
    classes = int(ot.shape[0])
    if dataset.classes is not None and len(dataset.classes) > classes:
        raise _err(f"dataset '{name}' has {len(dataset.classes)} classes, output '{out}' only {classes}",
                   node)
    for split in ("train", "test", "val"):
        y = getattr(dataset, "y_" + split)
        if y is not None:
            check_label_range(y, classes, dataset.where(split), dataset.kind == "tags")
    return Feed(inp.name, out, classes, dataset.kind, view,
                dataset.stats.get("mean"), dataset.stats.get("std"))


def _offers(sample):
    if len(sample) == 2:
        h, w = sample
        return f"it offers (1, {h}, {w}) images, ({h * w},) vectors or seq[{h}] of ({w},) rows"
    return f"it offers samples of shape {sample}" + (f" or ({math.prod(sample)},) vectors" if len(sample) > 1 else "")


def check_label_range(y, classes: int, where: str, ragged: bool) -> None:
    """Every label in 0..classes-1, else a DataError naming the sample (and token)."""
    if ragged:
        for i, tags in enumerate(y):
            bad = np.flatnonzero((tags < 0) | (tags >= classes))
            if bad.size:
                raise DataError(f"{where}: sample {i}, token {bad[0]}: tag id {tags[bad[0]]} is out of range "
                                f"for the model's {classes} output classes")
        return
    y = np.asarray(y)
    bad = np.flatnonzero((y < 0) | (y >= classes))
    if bad.size:
        raise DataError(f"{where}: sample {bad[0]}: label {y[bad[0]]} is out of range for the model's "
                        f"{classes} output classes (labels must be 0..{classes - 1})")


# --------------------------------------------------------------------- statistics

def compute_stats(x: np.ndarray) -> dict:
    """Per-channel mean and std of the training split, shaped to broadcast over one sample:
    (C, 1, 1) for (C, H, W) samples, () for 2-D samples ((H, W) images, one channel), (F,) for
    vectors (one per feature)."""
    x = np.asarray(x)
    if x.ndim == 4:
        axes, keep = (0, 2, 3), (x.shape[1], 1, 1)
    elif x.ndim == 3:
        axes, keep = (0, 1, 2), ()
    else:
        axes, keep = (0,), x.shape[1:]
    total = np.zeros(keep or (), np.float64)
    sq = np.zeros(keep or (), np.float64)
    n = 0
    for i in range(0, len(x), 4096):  # in chunks: a float64 copy of everything could be large
        c = x[i:i + 4096].astype(np.float64)
        total += c.sum(axis=axes).reshape(keep)
        sq += (c * c).sum(axis=axes).reshape(keep)
        n += c.size // max(math.prod(keep), 1)
    mean = total / max(n, 1)
    std = np.sqrt(np.maximum(sq / max(n, 1) - mean * mean, 0))
    std = np.where(std < 1e-6, 1.0, std)  # a constant channel: nothing to scale
    return {"mean": np.asarray(mean, np.float32), "std": np.asarray(std, np.float32)}


def stats_arrays(dataset: Dataset) -> dict:
    """What a weights file keeps of the data, under the reserved prefix: the statistics,
    and the vocabulary and class names (predict needs the same mappings). Empty for plain
    MNIST-style runs, so their weights files stay loadable by the generated scripts, whose
    loaders do not know the prefix yet."""
    out = {STATS_PREFIX + k: np.asarray(v) for k, v in dataset.stats.items()}
    if dataset.vocab is not None:
        out[STATS_PREFIX + "vocab"] = np.array(dataset.vocab, dtype=str)
    if dataset.classes is not None:
        out[STATS_PREFIX + "classes"] = np.array(dataset.classes, dtype=str)
    return out


def read_stats(arrays: dict, where: str) -> dict:
    """The data arrays of a weights file (already read without pickle), checked."""
    out = {}
    for key, v in arrays.items():
        if not key.startswith(STATS_PREFIX):
            continue
        name = key[len(STATS_PREFIX):]
        if name in ("mean", "std"):
            if v.dtype.kind != "f" or not np.isfinite(v).all() or (name == "std" and (v <= 0).any()):
                raise DataError(f"{where}: '{key}' must hold finite numbers" + (" > 0" if name == "std" else ""))
            out[name] = v.astype(np.float32)
        elif name in ("vocab", "classes"):
            if v.dtype.kind != "U" or v.ndim != 1:
                raise DataError(f"{where}: '{key}' must be a 1-D array of strings")
            out[name] = tuple(str(s) for s in v)
    if ("mean" in out) != ("std" in out):
        raise DataError(f"{where}: has only one of '{STATS_PREFIX}mean' and '{STATS_PREFIX}std'")
    return out
