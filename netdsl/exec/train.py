"""The native training loop: data feeding, epochs, evaluation, checkpoints.

Reproducibility. Every random draw of training comes from one Generator per
epoch, derived from (seed, epoch) alone: it first draws the epoch's shuffle,
then every dropout mask of that epoch, in step order. A checkpoint stores that
generator's state at the step boundary where it was written, so a resumed run
draws exactly the numbers the uninterrupted run would have drawn, and — with
the weights, BatchNorm statistics and optimizer state restored bit for bit —
ends with identical weights. (Same machine, same thread count: a different
BLAS thread split may round differently.)

Crash safety. Checkpoints are written to a temp file, fsynced, then renamed
over the old one (weights.atomic_savez): a SIGKILL at any moment leaves the
previous checkpoint or the new one, never half of one. SIGINT/SIGTERM finish
the current step, write a checkpoint (when --checkpoint is set) and stop.

Errors (NetdslError): E701 the dataset cannot feed the model, E702 NaN/Inf
during training, E703 a checkpoint that cannot be resumed.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from .. import data as datamod
from .. import ir
from ..errors import Diagnostic, NetdslError, NO_SPAN, Span
from . import losses, optim
from .graph import Executor
from .weights import _sources, atomic_savez, check_params, read_npz

E_FEED = "E701"
E_NONFINITE = "E702"
E_CHECKPOINT = "E703"

CHECKPOINT_FORMAT = 1
_EPOCH_STREAM = 1  # SeedSequence spawn-key namespace of the per-epoch generators


# --------------------------------------------------------------------- threads

def set_threads(n: int) -> dict:
    """Use n threads in BLAS (numpy's OpenBLAS) and numba. Returns what was set.

    threadpoolctl is used when installed; otherwise OpenBLAS's own
    set_num_threads is called through ctypes on the loaded library, which
    is what threadpoolctl does too.
    """
    done = {}
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(n)
        done["threadpoolctl"] = n
    except ImportError:
        done.update(_openblas_set_threads(n))
    try:
        import numba
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        done["numba"] = numba.get_num_threads()
    except (ImportError, ValueError):
        pass
    return done


def _openblas_set_threads(n: int) -> dict:
    import ctypes

    import numpy  # noqa: F401  (loads the BLAS)

    done = {}
    try:
        with open("/proc/self/maps") as f:
            libs = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return done
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for sym in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_",
                    "scipy_openblas_set_num_threads", "openblas_set_num_threads"):
            fn = getattr(lib, sym, None)
            if fn is not None:
                fn.argtypes = [ctypes.c_int]
                fn(n)
                done[os.path.basename(path)] = n
                break
    return done


def tune_malloc() -> bool:
    """Keep freed memory in the heap (glibc mallopt), so every step does not
    page-fault its multi-megabyte buffers in afresh: glibc hands big blocks
    back to the OS on free and maps them again, zero-filled, on the next
    malloc. Measured on keras_cnn: 1427 page faults per step -> 0, and the
    step 16% faster. Returns False where there is no glibc."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    ok = mallopt(M_MMAP_THRESHOLD, 1 << 30) or mallopt(M_MMAP_THRESHOLD, 32 << 20)
    return bool(ok and mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def blas_threads() -> int | None:
    """OpenBLAS's current thread count (None if it cannot be asked)."""
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            libs = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return None
    for path in libs:
        lib = ctypes.CDLL(path)
        for sym in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                    "scipy_openblas_get_num_threads", "openblas_get_num_threads"):
            fn = getattr(lib, sym, None)
            if fn is not None:
                return int(fn())
    return None


# --------------------------------------------------------------------- warm-up

def warm_up(graph: ir.Graph, params: dict) -> None:
    """One training step on two dummy samples, with copies of everything, so
    numba loads every kernel this model needs from its cache (or compiles it
    once) before the clock of the first real step starts — and while the
    data is still loading in another thread."""
    ex = Executor(graph, {k: v.copy() for k, v in params.items()})
    inputs = {}
    for i in graph.inputs:
        shape = tuple(2 if d is None else d for d in i.type.batch_shape(2))
        inputs[i.name] = np.zeros(shape, np.int64 if i.type.vocab is not None else np.float32)
    out = ex.forward(inputs, training=True, rng=np.random.default_rng(0))
    grads = ex.backward({k: np.ones_like(v) for k, v in out.items()})
    tr = graph.training or ir.Training()
    if tr.optimizer in ("SGD", "Adam", "Adadelta"):
        make_optimizer(tr).step({k: ex.params[k] for k in grads}, grads)


# --------------------------------------------------------------------- options

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


@dataclass
class Result:
    history: list = field(default_factory=list)  # one dict per epoch
    test_accuracy: float | None = None
    interrupted: bool = False
    signal: int | None = None  # the signal that stopped the run
    epoch: int = 0
    step: int = 0


def epoch_generator(seed: int, epoch: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(_EPOCH_STREAM, epoch))))


def _span(obj) -> object:
    return getattr(obj, "span", None) or NO_SPAN


# ----------------------------------------------------------------------- data

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
        raise NetdslError(e.diagnostics, _sources(graph)) from None


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


# ------------------------------------------------------------ loss, optimizer

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


class FusedSGD(optim.SGD):
    """optim.SGD with each parameter's update in one numba pass instead of
    three or four numpy passes; the same float32 operations in the same order,
    so the results are bit-identical (tests/test_exec_train.py checks it)."""

    def _update(self, name, p, g):
        if not (p.flags.c_contiguous and p.dtype == g.dtype):
            return super()._update(name, p, g)
        bufs = self.state["momentum_buffer"]
        t = p.dtype.type
        if self.momentum and name not in bufs:
            bufs[name] = g.copy()
            first = True
        else:
            first = False
        buf = bufs.get(name, p)  # unused without momentum
        _sgd_kernel(p.reshape(-1), np.ascontiguousarray(g).reshape(-1), buf.reshape(-1), t(self.lr),
                    t(self.momentum), bool(self.momentum), bool(self.nesterov), first)


class FusedAdam(optim.Adam):
    """optim.Adam in one numba pass per parameter, bit-identical to it."""

    def _update(self, name, p, g):
        if not (p.flags.c_contiguous and p.dtype == g.dtype):
            return super()._update(name, p, g)
        m = self._slot("exp_avg", name, p)
        v = self._slot("exp_avg_sq", name, p)
        n = self.steps[name]
        t = p.dtype.type
        _adam_kernel(p.reshape(-1), np.ascontiguousarray(g).reshape(-1), m.reshape(-1), v.reshape(-1),
                     t(1 - self.beta1), t(self.beta2), t(1 - self.beta2),
                     t(self.lr / (1 - self.beta1 ** n)), t(math.sqrt(1 - self.beta2 ** n)), t(self.eps))


@njit(cache=True)
def _sgd_kernel(p, g, buf, lr, momentum, use_momentum, nesterov, first):
    # Mirrors optim.SGD: buf = momentum*buf + g (buf = g on the first step),
    # the step is g + momentum*buf with nesterov, else buf; p -= lr*step.
    for k in range(p.shape[0]):
        d = g[k]
        if use_momentum:
            b = buf[k] if first else buf[k] * momentum + d
            buf[k] = b
            d = d + momentum * b if nesterov else b
        p[k] = p[k] - lr * d


@njit(cache=True, error_model="numpy")  # IEEE division: no zero check, so it vectorises (7x)
def _adam_kernel(p, g, m, v, one_minus_b1, b2, one_minus_b2, step_size, bc2_sqrt, eps):
    # Mirrors optim.Adam operation for operation (float32 rounding included):
    # m += (1-b1)*(g-m); v = v*b2 + ((1-b2)*g)*g; p -= (step*m) / (sqrt(v)/bc2 + eps)
    for k in range(p.shape[0]):
        gk = g[k]
        mk = m[k] + one_minus_b1 * (gk - m[k])
        vk = v[k] * b2 + one_minus_b2 * gk * gk
        m[k] = mk
        v[k] = vk
        p[k] = p[k] - step_size * mk / (np.sqrt(vk) / bc2_sqrt + eps)


def make_optimizer(training: ir.Training, lr: float | None = None):
    o = dict(training.optimizer_attrs)
    if lr is not None:
        o["lr"] = lr
    name = training.optimizer
    if name == "SGD":
        return FusedSGD(o.get("lr", 0.01), o.get("momentum", 0.0), o.get("nesterov", False))
    if name == "Adam":
        return FusedAdam(o.get("lr", 1e-3), o.get("beta1", 0.9), o.get("beta2", 0.999), o.get("eps", 1e-8))
    if name == "Adadelta":
        return optim.Adadelta(o.get("lr", 1.0), o.get("rho", 0.9), o.get("eps", 1e-6))
    raise NetdslError(Diagnostic("E704", f"unsupported optimizer '{name}'", _span(training)))


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
        self.feed = make_feed(graph, dataset_name, dataset.x_train.shape[1:])
        self.ex = Executor(graph, params)
        self.loss_fn = make_loss(tr, self.feed.classes)
        self.optimizer = make_optimizer(tr, opts.lr)
        self.seed = 0 if opts.seed is None else int(opts.seed)
        self.batch_size = int(opts.batch_size or tr.batch_size)
        self.epochs = int(tr.epochs if opts.epochs is None else opts.epochs)
        n_train = len(dataset.x_train) if opts.limit_train is None else min(opts.limit_train, len(dataset.x_train))
        n_test = len(dataset.x_test) if opts.limit_test is None else min(opts.limit_test, len(dataset.x_test))
        self.x_train, self.y_train = dataset.x_train[:n_train], dataset.y_train[:n_train].astype(np.int64)
        self.x_test, self.y_test = dataset.x_test[:n_test], dataset.y_test[:n_test].astype(np.int64)
        self.epoch = 0  # completed epochs
        self.step = 0  # completed steps of the current epoch
        self.global_step = 0
        self.rng_state = None  # generator state at (epoch, step) when resuming mid-epoch
        self.running = {"loss": 0.0, "correct": 0, "seen": 0}
        self.result = Result()
        self._trainable = {n: self.ex.params[n] for n in self.ex.trainable}
        self.t_first_step = None  # perf_counter() when the first step began, for timing

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.x_train) // self.batch_size)

    # ------------------------------------------------------------ evaluation
    def evaluate(self, x=None, y=None) -> tuple[float, int, int]:
        """(accuracy, correct, n) on the test split in inference mode."""
        x = self.x_test if x is None else x
        y = self.y_test if y is None else y
        correct = 0
        for i in range(0, len(x), self.opts.eval_batch):
            out = self.ex.forward({self.feed.input: self.feed.batch(x[i:i + self.opts.eval_batch])},
                                  training=False)[self.feed.output]
            correct += int((out.argmax(axis=-1) == y[i:i + self.opts.eval_batch]).sum())
        self.ex.values, self.ex._caches = {}, None  # drop the last batch's buffers
        return (correct / len(x) if len(x) else float("nan")), correct, len(x)

    # -------------------------------------------------------------- training
    def train_step(self, xb: np.ndarray, yb: np.ndarray, rng) -> tuple[float, int]:
        out = self.ex.forward({self.feed.input: xb}, training=True, rng=rng)[self.feed.output]
        loss, dout = self.loss_fn(out, yb)
        if not math.isfinite(loss):
            self._nonfinite_loss(loss)
        correct = int((out.argmax(axis=-1) == yb).sum())
        grads = self.ex.backward({self.feed.output: dout})
        self.optimizer.step(self._trainable, grads)
        self._check_weights()
        return loss, correct

    def fit(self) -> Result:
        """Train from the current state to self.epochs; returns the Result."""
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
        return self.result

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
                loss, correct = self.train_step(self.feed.batch(self.x_train[idx]), self.y_train[idx], rng)
                self.step += 1
                self.global_step += 1
                r = self.running
                r["loss"] += loss * len(idx)
                r["correct"] += correct
                r["seen"] += len(idx)
                if bar is not None:
                    dt = time.perf_counter() - t0
                    bar.update(1)
                    bar.set_postfix_str(f"loss {r['loss'] / r['seen']:.4f} acc {100 * r['correct'] / r['seen']:.2f}% "
                                        f"{(r['seen'] - seen0) / max(dt, 1e-9):.0f} samples/s", refresh=False)
                if self.step < steps and self.opts.checkpoint and self.opts.checkpoint_every \
                        and self.global_step % self.opts.checkpoint_every == 0:
                    self.save_checkpoint(rng)
                if stop.signum is not None and self.step < steps:
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
        return stop.signum is not None and self.epoch < self.epochs

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
            "format": CHECKPOINT_FORMAT, "model": self.graph.name, "seed": self.seed,
            "epoch": self.epoch, "step": self.step, "global_step": self.global_step,
            "batch_size": self.batch_size, "n_train": len(self.x_train),
            "optimizer": self.training.optimizer, "loss": self.training.loss,
            "rng_state": None if rng is None else rng.bit_generator.state,
            "running": self.running, "history": self.result.history, "threads": blas_threads(),
        }

    def save_checkpoint(self, rng) -> None:
        arrays = {f"param/{k}": v for k, v in self.ex.params.items()}
        for k, v in self.optimizer.state_dict().items():
            arrays[f"optim/{k}"] = np.asarray(v)
        arrays["meta"] = np.array(json.dumps(self._meta(rng)))
        atomic_savez(self.opts.checkpoint, arrays)

    def load_checkpoint(self, path, explicit: dict) -> None:
        """Restore state from `path`. `explicit` holds the flags the user typed
        (name -> value); each must agree with the checkpoint."""
        arrays = read_npz(path)
        span = Span(os.fspath(path), 1, 1, 1, 1)
        try:
            meta = json.loads(str(arrays.pop("meta")[()]))
            if meta.get("format") != CHECKPOINT_FORMAT:
                raise ValueError(f"checkpoint format {meta.get('format')}, expected {CHECKPOINT_FORMAT}")
        except (KeyError, ValueError, TypeError) as e:
            raise NetdslError(Diagnostic(E_CHECKPOINT, f"not a netdsl checkpoint ({e})", span)) from None
        if meta["model"] != self.graph.name:
            raise NetdslError(Diagnostic(E_CHECKPOINT, f"checkpoint is of model {meta['model']}, not "
                                         f"{self.graph.name}", span))
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
        if meta["optimizer"] != self.training.optimizer:
            raise NetdslError(Diagnostic(E_CHECKPOINT, f"checkpoint was trained with {meta['optimizer']}, "
                                         f"the model now says {self.training.optimizer}", span))
        self.seed, self.batch_size = int(meta["seed"]), int(meta["batch_size"])
        params = check_params({k[6:]: v for k, v in arrays.items() if k.startswith("param/")},
                              self.graph, path, self.ex.dtype)
        for k, v in params.items():
            self.ex.params[k][...] = v  # in place: the optimizer holds these arrays
        state = {k[6:]: v for k, v in arrays.items() if k.startswith("optim/")}
        try:
            self.optimizer.load_state_dict(state)
        except (KeyError, ValueError, TypeError) as e:
            raise NetdslError(Diagnostic(E_CHECKPOINT, f"optimizer state is unreadable ({e})", span)) from None
        if "lr" in explicit and explicit["lr"] is not None:
            self.optimizer.lr = float(explicit["lr"])
        self.epoch, self.step, self.global_step = int(meta["epoch"]), int(meta["step"]), int(meta["global_step"])
        self.rng_state = meta["rng_state"]
        if meta.get("threads") != blas_threads():
            # Not an error: the run continues correctly, only not bit for bit.
            print(f"warning: checkpoint was written with {meta.get('threads')} BLAS thread(s), this run "
                  f"uses {blas_threads()}: it will not match an uninterrupted run bit for bit "
                  f"(pass --threads {meta.get('threads')})", file=sys.stderr)
        self.running = dict(meta["running"])
        self.result.history = list(meta["history"])
