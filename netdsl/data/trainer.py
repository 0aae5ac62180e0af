"""The executor's Trainer, fed by data.feed instead of its MNIST-only feed.

exec/train.py's Trainer maps (N, H, W) images onto a model and counts accuracy per
sample. This subclass swaps in a Feed (any dense shape, token sequences padded per batch,
accuracy over real tokens, the training split's statistics) and evaluates a validation
split after each epoch. It changes nothing else of the training loop.

Merge note: once Trainer takes a feed object itself, this module reduces to make_feed.
"""
from __future__ import annotations

import math

from .. import ir
from ..exec import train
from .base import Dataset
from .feed import make_feed, masked_loss


class FeedTrainer(train.Trainer):
    def __init__(self, graph, params, dataset: Dataset, opts: train.Options, dataset_name: str = "mnist",
                 log=None):
        feed = make_feed(graph, dataset, dataset_name)
        opts_n = {"train": opts.limit_train, "test": opts.limit_test}
        # Not super().__init__: it builds the MNIST-only feed first and refuses other data.
        # This sets the same state the base __init__ sets, with this feed.
        self.dataset = dataset
        self.graph = graph
        self.opts = opts
        self.log = log or (lambda s: print(s, flush=True))
        tr = graph.training or ir.Training()
        self.training = tr
        self.feed = feed
        self.ex = train.Executor(graph, params)
        self.loss_fn = train.make_loss(tr, feed.classes)
        self.optimizer = train.make_optimizer(tr, opts.lr)
        self.seed = 0 if opts.seed is None else int(opts.seed)
        self.batch_size = int(opts.batch_size or tr.batch_size)
        self.epochs = int(tr.epochs if opts.epochs is None else opts.epochs)
        n = {s: len(getattr(dataset, "x_" + s)) if opts_n[s] is None else min(opts_n[s], len(getattr(dataset, "x_" + s)))
             for s in ("train", "test")}
        self.x_train, self.y_train = dataset.x_train[:n["train"]], dataset.y_train[:n["train"]]
        self.x_test, self.y_test = dataset.x_test[:n["test"]], dataset.y_test[:n["test"]]
        self.epoch = 0
        self.step = 0
        self.global_step = 0
        self.rng_state = None
        self.running = {"loss": 0.0, "correct": 0, "seen": 0}
        self.result = train.Result()
        self._trainable = {k: self.ex.params[k] for k in self.ex.trainable}
        self.t_first_step = None

    def evaluate(self, x=None, y=None) -> tuple[float, int, int]:
        """(accuracy, correct, n): n counts samples, or real tokens for tagging data."""
        x = self.x_test if x is None else x
        y = self.y_test if y is None else y
        correct = total = 0
        b = self.opts.eval_batch
        for i in range(0, len(x), b):
            out = self.ex.forward({self.feed.input: self.feed.batch(x[i:i + b])}, training=False)[self.feed.output]
            c, t = self.feed.count_correct(out, y[i:i + b])
            correct += c
            total += t
        self.ex.values, self.ex._caches = {}, None  # drop the last batch's buffers
        return (correct / total if total else float("nan")), correct, total

    def train_step(self, xb, yb, rng) -> tuple[float, float]:
        """One step; the returned `correct` is scaled to samples, so the epoch's running
        accuracy (correct / samples seen) is the token accuracy for tagging data."""
        out = self.ex.forward({self.feed.input: xb}, training=True, rng=rng)[self.feed.output]
        labels, mask = self.feed.targets(yb)
        loss, dout = masked_loss(self.loss_fn, out, labels, mask)
        if not math.isfinite(loss):
            self._nonfinite_loss(loss)
        hit = out.argmax(axis=-1) == labels
        correct = int(hit.sum()) if mask is None else float(hit[mask].mean()) * len(labels)
        grads = self.ex.backward({self.feed.output: dout})
        self.optimizer.step(self._trainable, grads)
        self._check_weights()
        return loss, correct

    def _run_epoch(self, stop) -> bool:
        stopped = super()._run_epoch(stop)
        ds = self.dataset
        if ds.x_val is not None and self.result.history and self.result.history[-1]["epoch"] == self.epoch \
                and self.step == 0 and "val_accuracy" not in self.result.history[-1]:
            acc, correct, n = self.evaluate(ds.x_val, ds.y_val)
            self.result.history[-1]["val_accuracy"] = acc
            self.log(f"epoch {self.epoch}/{self.epochs}: validation accuracy {100 * acc:.2f}% ({correct}/{n})")
        return stopped

