"""The native training loop: epochs, steps, evaluation, NaN/Inf reports.

Reproducibility. Every random draw of training comes from one Generator per
epoch, derived from (seed, epoch) alone: it first draws the epoch's shuffle,
then every dropout mask of that epoch, in step order. A checkpoint stores that
generator's state at the step boundary where it was written, so a resumed run
draws exactly the numbers the uninterrupted run would have drawn, and -- with
the weights, BatchNorm statistics and optimizer state restored bit for bit --
ends with identical weights. (Same machine, same thread count: a different
BLAS thread split may round differently.)

SIGINT/SIGTERM finish the current step, write a checkpoint (when --checkpoint
is set) and stop. Checkpoints themselves: checkpoint.py. How the dataset
feeds the model: feed.py. Optimizers: optim.py. Threads, warm-up: runtime.py.

Errors (NetdslError): E701 the dataset cannot feed the model, E702 NaN/Inf
during training, E703 a checkpoint that cannot be resumed, E704 a loss or optimizer the executor lacks.
"""
from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .. import data as datamod
from .. import ir
from ..errors import Diagnostic, NetdslError, NO_SPAN, Span
from . import checkpoint as ckpt
from . import memory
from ..data.feed import make_feed, masked_loss
from .feed import make_loss
from .graph import Executor
from .optim import make_optimizer  # noqa: F401  (also imported from here by tests/test_emit_legacy.py)
from .steprule import StepRule, max_norms
from .runtime import blas_threads
from .weights import graph_sources

E_NONFINITE = "E702"
E_CHECKPOINT = ckpt.E_CHECKPOINT

_EPOCH_STREAM = 1  # SeedSequence spawn-key namespace of the per-epoch generators


@dataclass
class Options:
    """Run settings; None means "from the training block" (or the checkpoint)."""

    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int | None = None
    checkpoint: str | None = None
    checkpoint_every: int | None = None  # steps; checkpoints are also written every epoch
    resume: bool = False
    limit_train: int | None = None  # first N training samples (a fixed subset)
    limit_test: int | None = None
    progress: bool | None = None  # None: a tqdm bar when stderr is a terminal
    eval_batch: int = 500  # inference batch: big enough for BLAS, small enough for im2col buffers
    max_memory: int | None = None  # bytes (memory.py); None: half of the machine's memory


@dataclass
class Result:
    history: list = field(default_factory=list)  # one dict per epoch
    test_accuracy: float | None = None
    interrupted: bool = False
    signal: int | None = None  # the signal that stopped the run
    epoch: int = 0
    step: int = 0
    metrics: dict = field(default_factory=dict)  # the train block's metrics beyond accuracy, on the test split


def epoch_generator(seed: int, epoch: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(_EPOCH_STREAM, epoch))))


def _span(obj) -> object:
    return getattr(obj, "span", None) or NO_SPAN


# ------------------------------------------------------------------- signals

class _StopFlag:
    """SIGINT/SIGTERM set a flag checked between steps; a second signal aborts at once."""

    def __init__(self):
        self.signum = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handlers, no clean stop
                pass
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


# ------------------------------------------------------------------- trainer

class Trainer:
    def __init__(self, graph: ir.Graph, params: dict, dataset: datamod.Dataset, opts: Options,
                 dataset_name: str = "mnist", log=None):
        self.graph = graph
        self.opts = opts
        self.log = log or (lambda s: print(s, flush=True))
        tr = graph.training or ir.Training()
        self.training = tr
        self.dataset = dataset
        # any dataset netdsl.data reads: dense arrays, or token sequences padded per batch
        self.feed = make_feed(graph, dataset, dataset_name)
        self.ex = Executor(graph, params)
        self.loss_fn = make_loss(tr, self.feed.classes)
        self.optimizer = make_optimizer(tr, opts.lr)
        # schedule, weight decay, clipping, max_norm (docs/language.md)
        self.rule = StepRule(tr, self.optimizer.lr, max_norms(graph))
        self.seed = int(opts.seed if opts.seed is not None else tr.seed if tr.seed is not None else 0)
        self.best_val_loss, self.bad_epochs = math.inf, 0  # early_stopping
        self.batch_size = int(opts.batch_size or tr.batch_size)
        self.epochs = int(tr.epochs if opts.epochs is None else opts.epochs)
        n_train = len(dataset.x_train) if opts.limit_train is None else min(opts.limit_train, len(dataset.x_train))
        n_test = len(dataset.x_test) if opts.limit_test is None else min(opts.limit_test, len(dataset.x_test))
        self.x_train, self.y_train = dataset.x_train[:n_train], dataset.y_train[:n_train]
        self.x_test, self.y_test = dataset.x_test[:n_test], dataset.y_test[:n_test]
        self.epoch = 0  # completed epochs
        self.step = 0  # completed steps of the current epoch
        self.global_step = 0
        self.rng_state = None  # generator state at (epoch, step) when resuming mid-epoch
        self.running = {"loss": 0.0, "correct": 0, "seen": 0}
        self.result = Result()
        self._trainable = {n: self.ex.params[n] for n in self.ex.trainable}
        self.t_first_step = None  # perf_counter() when the first step began, for timing
        self.memory_limit = opts.max_memory or memory.default_limit()
        sample = self.feed.batch(self.x_train[:1]) if len(self.x_train) else None
        self.seq_len = sample.shape[1] if sample is not None and graph.inputs[0].type.seq else 1
        # Inference batches are ours to choose: smaller ones where 500 would not fit.
        self.eval_batch = memory.fitting_batch(graph, self.memory_limit, opts.eval_batch, self.seq_len)
        if not self.eval_batch:
            self._check_memory(1, "evaluation")

    def _check_memory(self, batch, what):
        memory.check(self.graph, batch, self.memory_limit, self.seq_len, what, graph_sources(self.graph))

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.x_train) // self.batch_size)

    # ------------------------------------------------------------ evaluation
    def evaluate(self, x=None, y=None) -> tuple[float, int, int]:
        """(accuracy, correct, n) on the test split in inference mode; n counts samples,
        or real tokens for tagging data."""
        x = self.x_test if x is None else x
        y = self.y_test if y is None else y
        correct = total = 0
        for out, yb in self._inference(x, y):
            c, t = self.feed.count_correct(out, yb)
            correct += c
            total += t
        return (correct / total if total else float("nan")), correct, total

    def _inference(self, x, y):
        """(outputs, their samples' y) per inference batch of a split, padded batches with their lengths;
        the last batch's buffers are dropped at the end."""
        bs = self.eval_batch
        for i in range(0, len(x), bs):
            yield self.ex.forward(**self.feed.forward_args(x[i:i + bs]), training=False)[self.feed.output], y[i:i + bs]
        self.ex.release()

    # -------------------------------------------------------------- training
    def train_step(self, xb: np.ndarray, yb, rng, lengths=None) -> tuple[float, float]:
        """One step on the input batch xb (its (N,) lengths when padded); `correct` is scaled to
        samples, so the epoch's running accuracy (correct / samples seen) is the token accuracy
        for tagging data."""
        lens = None if lengths is None else {self.feed.input: lengths}
        out = self.ex.forward({self.feed.input: xb}, training=True, rng=rng, lengths=lens)[self.feed.output]
        labels, mask = self.feed.targets(yb)
        loss, dout = masked_loss(self.loss_fn, out, labels, mask)
        loss += self.rule.penalty(self._trainable)
        if not math.isfinite(loss):
            self._nonfinite_loss(loss)
        hit = out.argmax(axis=-1) == labels
        correct = int(hit.sum()) if mask is None else float(hit[mask].mean()) * len(labels)
        grads = self.ex.backward({self.feed.output: dout})
        if self.rule.plain:
            self.optimizer.step(self._trainable, grads)
        else:
            self.rule.step(self.optimizer, self._trainable, grads, self.epoch, self.global_step, len(labels))
        self._check_weights()
        return loss, correct

    def fit(self) -> Result:
        """Train from the current state to self.epochs; returns the Result."""
        self._check_memory(self.batch_size, "training")
        self._write_header()
        # Overflow is reported once, as E702 naming the step and layer, not as
        # a shower of numpy RuntimeWarnings before it.
        with _StopFlag() as stop, np.errstate(over="ignore", invalid="ignore"):
            while self.epoch < self.epochs:
                if self._run_epoch(stop):
                    return self._interrupted(stop.signum)
        acc, correct, n = self.evaluate()
        self.result.test_accuracy = acc
        self.log(f"final test accuracy: {100 * acc:.2f}% ({correct}/{n})")
        if any(m != "accuracy" for m in self.training.metrics):
            self.report_metrics()
        return self.result

    def report_metrics(self) -> dict:
        """The train block's other metrics on the test split: top-k accuracy, the confusion matrix
        (rows: the true class, columns: the predicted one); logged and kept in result.metrics."""
        scores, labels = [], []
        for out, yb in self._inference(self.x_test, self.y_test):
            lab, mask = self.feed.targets(yb)
            scores.append(out[mask] if mask is not None else out.reshape(-1, out.shape[-1]))
            labels.append(lab[mask] if mask is not None else lab.reshape(-1))
        z, y = np.concatenate(scores), np.concatenate(labels)
        k_classes = z.shape[1]
        found = {}
        for m in self.training.metrics:
            if m.startswith("top_"):
                k = min(int(m.split("_")[1]), k_classes)
                top = np.argpartition(-z, k - 1, axis=1)[:, :k]
                found[m] = float((top == y[:, None]).any(axis=1).mean())
                self.log(f"test {m.replace('_', ' ')}: {100 * found[m]:.2f}%")
            elif m == "confusion_matrix":
                cm = np.bincount(y * k_classes + z.argmax(axis=1), minlength=k_classes ** 2)
                found[m] = cm.reshape(k_classes, k_classes)
                width = max(5, len(str(int(cm.max()))) + 1)
                self.log("confusion matrix (rows: true class, columns: predicted):")
                self.log(" " * 6 + "".join(f"{j:>{width}}" for j in range(k_classes)))
                for j, row in enumerate(found[m]):
                    self.log(f"{j:>5} " + "".join(f"{int(v):>{width}}" for v in row))
        self.result.metrics = found
        return found

    def _run_epoch(self, stop) -> bool:
        """One epoch from self.step; True if a signal stopped it."""
        e = self.epoch
        rng = epoch_generator(self.seed, e)
        perm = rng.permutation(len(self.x_train))
        if self.step and self.rng_state is not None:
            rng.bit_generator.state = self.rng_state
        self.rng_state = None
        bs, steps = self.batch_size, self.steps_per_epoch
        bar = self._bar(e, steps)
        t0 = time.perf_counter()
        seen0 = self.running["seen"]
        try:
            while self.step < steps:
                idx = perm[self.step * bs:(self.step + 1) * bs]
                if self.t_first_step is None:
                    self.t_first_step = time.perf_counter()
                xb, lengths = self.feed.batch_lengths(self.x_train[idx])
                loss, correct = self.train_step(xb, self.y_train[idx], rng, lengths)
                self.step += 1
                self.global_step += 1
                r = self.running
                r["loss"] += loss * len(idx)
                r["correct"] += correct
                r["seen"] += len(idx)
                every = self.training.log_every
                if every and self.global_step % every == 0:
                    self.log(f"epoch {e + 1}, step {self.step}/{steps}: loss {r['loss'] / r['seen']:.4f}, "
                             f"train accuracy {100 * r['correct'] / r['seen']:.2f}%, lr {self.optimizer.lr:.6g}")
                if bar is not None:
                    dt = time.perf_counter() - t0
                    bar.update(1)
                    bar.set_postfix_str(f"loss {r['loss'] / r['seen']:.4f} acc {100 * r['correct'] / r['seen']:.2f}% "
                                        f"{(r['seen'] - seen0) / max(dt, 1e-9):.0f} samples/s", refresh=False)
                if self.step < steps and self.opts.checkpoint and self.opts.checkpoint_every \
                        and self.global_step % self.opts.checkpoint_every == 0:
                    self.save_checkpoint(rng)
                if stop.signum is not None and self.step < steps:
                    if self.opts.checkpoint:  # without one, _interrupted says nothing was saved
                        self.save_checkpoint(rng)
                    return True
        finally:
            if bar is not None:
                bar.close()
        dt = time.perf_counter() - t0
        r = self.running
        acc, correct, n = self.evaluate()
        rec = {"epoch": e + 1, "loss": r["loss"] / max(r["seen"], 1), "train_accuracy": r["correct"] / max(r["seen"], 1),
               "test_accuracy": acc, "seconds": dt, "samples_per_s": (r["seen"] - seen0) / max(dt, 1e-9)}
        self.result.history.append(rec)
        self.epoch, self.step = e + 1, 0
        self.running = {"loss": 0.0, "correct": 0, "seen": 0}
        if self.opts.checkpoint:
            self.save_checkpoint(None)
        self.log(f"epoch {e + 1}/{self.epochs}: loss {rec['loss']:.4f}, train accuracy "
                 f"{100 * rec['train_accuracy']:.2f}%, test accuracy {100 * acc:.2f}% ({correct}/{n}), "
                 f"{dt:.1f} s, {rec['samples_per_s']:.0f} samples/s")
        if getattr(self.dataset, "x_val", None) is not None:
            vacc, vcorrect, vn = self.evaluate(self.dataset.x_val, self.dataset.y_val)
            rec["val_accuracy"] = vacc
            self.log(f"epoch {e + 1}/{self.epochs}: validation accuracy {100 * vacc:.2f}% ({vcorrect}/{vn})")
            if self.training.early_stopping:
                self._early_stopping(rec)
        return stop.signum is not None and self.epoch < self.epochs

    def validation_loss(self) -> float:
        """The loss (without weight decay) on the validation split, in inference mode."""
        total = count = 0.0
        for out, yb in self._inference(self.dataset.x_val, self.dataset.y_val):
            labels, mask = self.feed.targets(yb)
            loss, _ = masked_loss(self.loss_fn, out, labels, mask)
            total += loss * len(labels)
            count += len(labels)
        return total / max(count, 1)

    def _early_stopping(self, rec) -> None:
        """Keras's EarlyStopping(monitor="val_loss", patience=p): stop after p epochs without a lower loss."""
        loss = rec["val_loss"] = self.validation_loss()
        if loss < self.best_val_loss:
            self.best_val_loss, self.bad_epochs = loss, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.training.early_stopping:
            self.log(f"early stopping after epoch {self.epoch}: the validation loss has not improved for "
                     f"{self.bad_epochs} epoch{'s' if self.bad_epochs != 1 else ''} (best {self.best_val_loss:.4f})")
            self.epochs = self.epoch

    def _interrupted(self, signum) -> Result:
        name = signal.Signals(signum).name if signum else "signal"
        where = f"epoch {self.epoch + 1}, step {self.step}/{self.steps_per_epoch}"
        if self.opts.checkpoint:
            self.log(f"{name}: stopped at {where}; checkpoint saved to {self.opts.checkpoint} "
                     f"(continue with --resume)")
        else:
            self.log(f"{name}: stopped at {where}; nothing saved (no --checkpoint given)")
        self.result.interrupted = True
        self.result.signal = signum
        self.result.epoch, self.result.step = self.epoch, self.step
        return self.result

    def _bar(self, epoch, steps):
        if self.opts.progress is False or (self.opts.progress is None and not sys.stderr.isatty()):
            return None
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        return tqdm(total=steps, initial=self.step, desc=f"epoch {epoch + 1}/{self.epochs}",
                    unit="step", file=sys.stderr, leave=False, dynamic_ncols=True)

    def _write_header(self):
        tr = self.training
        opt = self.optimizer
        hyper = ", ".join(f"{k}={getattr(opt, k)}" for k in opt.hyper)
        self.log(f"training {self.graph.name}: {len(self.x_train)} samples, batch {self.batch_size}, "
                 f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}, {tr.loss}, "
                 f"{tr.optimizer}({hyper}), seed {self.seed}"
                 + self._resume_note())

    def _resume_note(self) -> str:
        if self.epoch >= self.epochs:
            return f"; the checkpoint has finished all {self.epochs} epochs"
        if self.epoch or self.step:
            return f", resuming at epoch {self.epoch + 1} step {self.step}"
        return ""

    # ------------------------------------------------------------ NaN / Inf
    def _where(self) -> str:
        return f"epoch {self.epoch + 1}, step {self.step + 1}"

    def _nonfinite_loss(self, loss):
        hit = self.ex.first_nonfinite()
        if hit is not None:
            node, layer = hit
            label = node.name if node.name == layer.name else f"{node.name} ({layer.name})"
            raise NetdslError(Diagnostic(
                E_NONFINITE, f"training diverged at {self._where()}: the loss is {loss}; the first "
                f"non-finite value is the output of {layer.kind} '{label}'", _span(node),
                "lower the learning rate (--lr) or check the input scaling"))
        raise NetdslError(Diagnostic(
            E_NONFINITE, f"training diverged at {self._where()}: the loss is {loss} "
            f"(all layer outputs are finite; the loss itself overflowed)", _span(self.training),
            "lower the learning rate (--lr)"))

    def _check_weights(self):
        # A float32 sum is one fast pass; it can overflow for huge finite weights,
        # so a non-finite sum is confirmed element-wise before complaining.
        for layer in self.graph.layers:
            for p in layer.params:
                a = self.ex.params[p.name]
                if math.isfinite(float(a.sum())) or np.isfinite(a).all():
                    continue
                raise NetdslError(Diagnostic(
                    E_NONFINITE, f"training diverged at {self._where()}: after the update, parameter "
                    f"'{p.name}' of {layer.kind} '{layer.name}' holds NaN/Inf (the first layer that does)",
                    _span(layer), "lower the learning rate (--lr)"))

    # ----------------------------------------------------------- checkpoints
    def _meta(self, rng) -> dict:
        return {
            "format": ckpt.CHECKPOINT_FORMAT, "model": self.graph.name, "seed": self.seed,
            "epoch": self.epoch, "step": self.step, "global_step": self.global_step,
            "batch_size": self.batch_size, "n_train": len(self.x_train),
            "optimizer": self.training.optimizer, "loss": self.training.loss,
            "rng_state": None if rng is None else rng.bit_generator.state,
            "running": self.running, "history": self.result.history, "threads": blas_threads(),
        }

    def save_checkpoint(self, rng) -> None:
        ckpt.write(self.opts.checkpoint, self.ex.params, self.optimizer, self._meta(rng))

    def read_checkpoint(self, path) -> ckpt.Checkpoint:
        """The checkpoint at `path`, validated against this model and optimizer."""
        return ckpt.read(path, self.graph, self.optimizer, self.ex.dtype)

    def load_checkpoint(self, path, explicit: dict) -> None:
        """Restore state from `path`; see restore()."""
        self.restore(self.read_checkpoint(path), explicit)

    def restore(self, ck: ckpt.Checkpoint, explicit: dict) -> None:
        """Continue from a validated checkpoint. `explicit` holds the flags the
        user typed (name -> value); each must agree with the checkpoint."""
        meta = ck.meta
        span = _file_span(ck.path)
        checks = {"seed": ("--seed", meta["seed"]), "batch_size": ("--batch-size", meta["batch_size"]),
                  "n_train": ("--limit-train", meta["n_train"])}
        current = {"seed": self.seed, "batch_size": self.batch_size, "n_train": len(self.x_train)}
        for key, (flag, value) in checks.items():
            if current[key] != value and key in explicit:
                raise NetdslError(Diagnostic(
                    E_CHECKPOINT, f"checkpoint was written with {flag} {value}, this run has {current[key]}; "
                    f"a resumed run must use the same value to continue the same run", span))
        if meta["n_train"] != len(self.x_train):
            raise NetdslError(Diagnostic(
                E_CHECKPOINT, f"checkpoint was trained on {meta['n_train']} samples, this run has "
                f"{len(self.x_train)}: pass the same --limit-train", span))
        self.seed, self.batch_size = meta["seed"], meta["batch_size"]
        for k, v in ck.params.items():
            self.ex.params[k][...] = v  # in place: the optimizer holds these arrays
        self.optimizer.load_state_dict(ck.optim_state)
        if "lr" in explicit and explicit["lr"] is not None:
            self.optimizer.lr = float(explicit["lr"])
            self.rule.base_lr = float(explicit["lr"])
        self.epoch, self.step, self.global_step = meta["epoch"], meta["step"], meta["global_step"]
        self.rng_state = meta.get("rng_state")  # checkpoint.read allows none at the start of an epoch
        if meta.get("threads") != blas_threads():
            # Not an error: the run continues correctly, only not bit for bit.
            print(f"warning: checkpoint was written with {meta.get('threads')} BLAS thread(s), this run "
                  f"uses {blas_threads()}: it will not match an uninterrupted run bit for bit "
                  f"(pass --threads {meta.get('threads')})", file=sys.stderr)
        self.running = dict(meta["running"])
        self.result.history = list(meta["history"])


def _file_span(path) -> Span:
    return Span(str(path), 1, 1, 1, 1)
