"""`netdsl run`: train or evaluate a model natively on an MNIST-family dataset.

The training block supplies the defaults; flags override them. User mistakes
(missing data, a model the dataset cannot feed, a bad weight file or
checkpoint) are diagnostics with exit status 1, never tracebacks. A run
stopped by SIGINT/SIGTERM exits 130/143 after writing its checkpoint.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time

_T_IMPORT = time.perf_counter()


def _positive(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _nonneg(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def _lr(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (v > 0 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"the learning rate must be a positive number, got {text}")
    return v


def _size(text):
    from .memory import parse_size

    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _fraction(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}") from None
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1 (exclusive), got {text}")
    return v


def register(sub) -> None:
    p = sub.add_parser("run", help="train or evaluate a model with the native executor",
                       description="Train FILE natively on a dataset (IDX, npz, image folder, CSV, CoNLL, "
                       "label-TAB-text: docs/data.md; the training block "
                       "gives the defaults; flags override it), or evaluate saved weights with --eval-only.")
    p.add_argument("file", metavar="FILE")
    d = p.add_argument_group("data")
    d.add_argument("--data", metavar="SPEC", help="dataset: a name such as mnist, or KIND:PATH with KIND one of "
                   "idx, npz, images, csv, conll, tsv (default: the training block's dataset; see docs/data.md)")
    d.add_argument("--data-dir", metavar="DIR", help="where to look for NAME/ first (then $NETDSL_DATA, "
                   "then ~/.cache/netdsl)")
    d.add_argument("--download", action="store_true", help="fetch MNIST into --data-dir, $NETDSL_DATA or "
                   "the cache dir if it is not there")
    d.add_argument("--limit-train", type=_positive, metavar="N", help="train on the first N samples only")
    d.add_argument("--limit-test", type=_positive, metavar="N", help="evaluate on the first N test samples")
    d.add_argument("--label-column", metavar="COL", help="csv: the label column, by header name or 0-based "
                   "index (default: 'label', else the last column)")
    d.add_argument("--val-split", type=_fraction, metavar="F", help="hold out the last fraction F of the "
                   "training split for validation, evaluated after every epoch")
    d.add_argument("--normalize", choices=("auto", "none"), help="auto: scale inputs by the training split's "
                   "per-channel mean and std, stored in --save's weights file (data/mean, data/std)")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=_nonneg, metavar="N")
    t.add_argument("--batch-size", type=_positive, metavar="B")
    t.add_argument("--lr", type=_lr, metavar="X", help="learning rate")
    t.add_argument("--seed", type=_nonneg, metavar="S", help="seeds initialisation, shuffling and dropout "
                   "(default 0); the same seed gives bit-identical runs")
    t.add_argument("--threads", type=_positive, metavar="N", default=1,
                   help="BLAS and numba threads (default 1: see bench/RESULTS.md; results are "
                   "bit-identical only at the same thread count)")
    t.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar (it is shown only on a terminal anyway)")
    w = p.add_argument_group("weights and checkpoints")
    w.add_argument("--load", metavar="W.npz", help="start from these canonical weights")
    w.add_argument("--save", metavar="W.npz", help="write the trained weights here")
    w.add_argument("--eval-only", action="store_true", help="evaluate on the test set; no training")
    w.add_argument("--checkpoint", metavar="PATH", help="write a checkpoint here every epoch (atomically)")
    w.add_argument("--checkpoint-every", type=_positive, metavar="N", help="also every N steps")
    w.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    w.add_argument("--overwrite", action="store_true", help="start afresh over an existing --checkpoint "
                   "(without --resume, an existing checkpoint is refused)")
    p.add_argument("--max-memory", type=_size, metavar="SIZE", help="refuse to run when the estimated "
                   "activation and workspace memory exceeds SIZE (bytes, or with K/M/G/T; default: half "
                   "of the machine's memory)")
    p.add_argument("--timing", action="store_true", help="report where the start-up time went")
    p.set_defaults(func=cmd_run)


def _process_start() -> float:
    """Unix time this process started (Linux /proc; else the import time)."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration, IndexError):
        return time.time() - (time.perf_counter() - _T_IMPORT)


def _timed(fn, timing, *args):
    t0 = time.perf_counter()
    try:
        return fn(*args)
    finally:
        timing["data"] = time.perf_counter() - t0


def cmd_run(args) -> int:
    from ..data import DataError
    from ..errors import printable

    try:
        return _run(args)
    except DataError as e:
        print(f"{printable(args.file)}: error: {e}", file=sys.stderr)
        return 1


def _run(args) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from .. import data as datamod
    from .. import ir
    from ..data import DataError
    from ..errors import Diagnostic, NetdslError, NO_SPAN
    from ..lint import load_and_warn

    if (args.resume or args.checkpoint_every) and not args.checkpoint:
        flag = "--resume" if args.resume else "--checkpoint-every"
        print(f"netdsl run: error: {flag} needs --checkpoint PATH", file=sys.stderr)
        return 2
    graph, inputs = load_and_warn(args.file)  # warnings to stderr
    _check_outputs(args, inputs)
    tr = graph.training
    name = args.data or (tr.dataset if tr else None)
    if not name:
        raise NetdslError(Diagnostic(
            "E701", f"model {graph.name} names no dataset and none was given",
            (tr.span if tr and tr.span else graph.span) or NO_SPAN,
            "pass --data mnist (or write dataset = \"mnist\" in the train block)"))
    if args.download:
        if datamod.parse_spec(name) != (None, "mnist"):
            print(f"netdsl run: error: --download fetches only 'mnist', not {name!r}", file=sys.stderr)
            return 2
        root = args.data_dir or os.environ.get("NETDSL_DATA") or datamod.cache_dir()
        if root is None:
            raise DataError("--download: no place to put the data: pass --data-dir DIR or set NETDSL_DATA")
        try:
            datamod.find_dataset(name, args.data_dir)
        except DataError:
            datamod.download_mnist(root, log=lambda s: print(s, file=sys.stderr))

    # Read the data in a thread while numba starts and loads the cached kernels
    # here: gzip and sha256 release the GIL, so the two overlap (--timing shows it).
    timing = {}
    with ThreadPoolExecutor(1) as pool:
        t0 = time.perf_counter()
        future = pool.submit(_timed, datamod.load_for_run, timing, name, graph, args)
        from . import checkpoint, memory, runtime, train
        from .optim import make_optimizer
        from .weights import graph_sources, init_params, load_weights, save_weights

        runtime.set_threads(args.threads)
        runtime.tune_malloc()
        # Before allocating anything: the warm-up (batch 2) and, unless only
        # evaluating, a training step; sequence lengths are not known yet.
        limit = args.max_memory or memory.default_limit()
        batch = 2 if args.eval_only else max(2, args.batch_size or (tr.batch_size if tr else 64))
        memory.check(graph, batch, limit, 1, "warm-up" if args.eval_only else "training", graph_sources(graph))
        if args.seed is None and tr is not None and tr.seed is not None:
            args.seed = tr.seed  # the train block's seed, unless --seed says otherwise
        seed = 0 if args.seed is None else args.seed
        params = load_weights(args.load, graph) if args.load else init_params(graph, seed)
        resume = None
        if args.resume and os.path.lexists(args.checkpoint):
            # Every array and field is checked before anything runs (warm-up included).
            resume = checkpoint.read(args.checkpoint, graph, make_optimizer(tr or ir.Training(), args.lr))
        t1 = time.perf_counter()
        runtime.warm_up(graph, params)
        timing["warm-up"] = time.perf_counter() - t1
        timing["imports+init"] = t1 - t0
        dataset = future.result()
    _check_outputs_spare_data(args, dataset)

    opts = train.Options(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
                         resume=args.resume, limit_train=args.limit_train, limit_test=args.limit_test,
                         progress=args.progress, max_memory=limit)
    trainer = train.Trainer(graph, params, dataset, opts, dataset_name=name)

    if args.resume:
        if resume is not None:
            explicit = {k: getattr(args, a) for k, a in (("seed", "seed"), ("batch_size", "batch_size"),
                                                        ("n_train", "limit_train"), ("lr", "lr"))
                        if getattr(args, a) is not None}
            trainer.restore(resume, explicit)
            print(f"resuming from {args.checkpoint}: epoch {trainer.epoch + 1}, step {trainer.step}",
                  file=sys.stderr)
        else:
            print(f"no checkpoint at {args.checkpoint} yet: starting from the beginning", file=sys.stderr)

    if args.eval_only:
        acc, correct, n = trainer.evaluate()
        print(f"test accuracy: {100 * acc:.2f}% ({correct}/{n})", flush=True)
        return 0
    result = trainer.fit()
    if args.timing and trainer.t_first_step is not None:
        parts = ", ".join(f"{k} {v:.3f} s" for k, v in timing.items())
        since_start = time.time() - _process_start() - (time.perf_counter() - trainer.t_first_step)
        print(f"timing: the first step began {trainer.t_first_step - _T_IMPORT:.3f} s after netdsl.exec.cli "
              f"was imported, {since_start:.3f} s after the process started ({parts}; data loading "
              f"overlaps the rest)", file=sys.stderr)
    if result.interrupted:
        return 128 + int(result.signal or signal.SIGINT)
    if args.save:
        save_weights(args.save, trainer.ex.params, datamod.stats_arrays(dataset))
        print(f"weights saved to {args.save}", file=sys.stderr)
    return 0


def _check_outputs_spare_data(args, dataset) -> None:
    """Once the dataset is known, before training: no output is one of its files."""
    from .. import fsutil
    from ..errors import Diagnostic, NetdslError, Span

    for flag, path in (("--save", args.save), ("--checkpoint", args.checkpoint)):
        if path and os.path.lexists(path) and not args.eval_only:
            try:
                fsutil.check_output(path, dataset.files, what=flag[2:])
            except fsutil.OutputPathError as e:
                raise NetdslError(Diagnostic("E608", f"{flag}: {e}", Span(path, 1, 1, 1, 1))) from None


def _check_outputs(args, model_files) -> None:
    """Before any work: every file this run will write is a place it may write
    (not an input, a regular file or new, in a writable directory; an existing
    checkpoint only with --resume or --overwrite). Temp files that a killed
    earlier run left beside them are removed."""
    from .. import fsutil
    from ..errors import Diagnostic, NetdslError, Span

    if args.eval_only:
        return  # writes nothing
    inputs = [*model_files, args.load]
    outputs = [("--save", args.save, True), ("--checkpoint", args.checkpoint, args.resume or args.overwrite)]
    if args.save and args.checkpoint and os.path.abspath(args.save) == os.path.abspath(args.checkpoint):
        raise NetdslError(Diagnostic("E608", "--save and --checkpoint name the same file",
                                     Span(args.save, 1, 1, 1, 1)))
    for flag, path, overwrite in outputs:
        if not path:
            continue
        try:
            fsutil.check_output(path, inputs, what=flag[2:], overwrite=overwrite)
        except fsutil.OutputPathError as e:
            note = ("continue it with --resume, or replace it with --overwrite"
                    if flag == "--checkpoint" and "already exists" in str(e) else None)
            raise NetdslError(Diagnostic("E608", f"{flag}: {e}", Span(path, 1, 1, 1, 1), note)) from None
        fsutil.remove_stale_temps(path)
