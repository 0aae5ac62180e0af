"""Choosing a dataset: `--data KIND:PATH` (or the train block's `dataset = "KIND:PATH"`), or a name.

Kinds: idx (a directory of MNIST-layout IDX files), npz, images (an image folder), csv,
conll (tagging), tsv (label TAB text). Without a kind, an existing path's kind is guessed
from its extension or contents; anything else is a dataset name looked up as before
(--data-dir, $NETDSL_DATA, the user cache).

csv, conll and tsv take a directory holding train.EXT and test.EXT (and optionally
val.EXT, validation.EXT, valid.EXT or dev.EXT), or a training file whose name contains
"train": its test (and validation) file is the same name with "test" ("val", ...) instead.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import arrays, idx, text
from .base import DataError, Dataset, check_not_empty, shown
from .feed import compute_stats

KINDS = ("idx", "npz", "images", "csv", "conll", "tsv")
_EXTS = {"csv": (".csv",), "conll": (".conll", ".iob", ".bio", ".txt"), "tsv": (".tsv", ".txt")}
_GUESS = {".npz": "npz", ".csv": "csv", ".conll": "conll", ".iob": "conll", ".bio": "conll", ".tsv": "tsv"}


def parse_spec(spec: str) -> tuple[str | None, str]:
    """'npz:data.npz' -> ('npz', 'data.npz'); 'mnist' -> (None, 'mnist')."""
    kind, sep, rest = spec.partition(":")
    if sep and kind in KINDS:
        if not rest:
            raise DataError(f"dataset {spec!r}: no path after '{kind}:'")
        return kind, rest
    if sep and kind.isalpha() and len(kind) > 1 and not os.path.exists(spec):
        raise DataError(f"dataset {spec!r}: unknown kind '{kind}' (kinds: {', '.join(KINDS)})")
    return None, spec


def guess_kind(path: str) -> str | None:
    p = Path(path)
    if p.is_file():
        return _GUESS.get(p.suffix.lower())
    if p.is_dir():
        if (p / "train").is_dir():
            return "images"
        if idx._missing(p) == []:
            return "idx"
        for kind, exts in _EXTS.items():
            if any((p / ("train" + e)).is_file() for e in exts):
                return kind
    return None


def _present(p: Path) -> bool:
    # Not is_file(): a FIFO must be found, to be refused by name rather than reported missing.
    return p.exists() and not p.is_dir()


def split_files(kind: str, path: str) -> dict:
    """split -> file for the text-file kinds (see the module docstring)."""
    p = Path(path)
    exts = _EXTS[kind]
    if p.is_dir():
        def find(stem):
            return next((p / (stem + e) for e in exts if _present(p / (stem + e))), None)
        files = {"train": find("train"), "test": find("test")}
        missing = [s for s, f in files.items() if f is None]
        if missing:
            raise DataError(f"{shown(p)}: no {' or '.join(s + '.' + exts[0].lstrip('.') for s in missing)} "
                            f"(a {kind} dataset directory holds train{exts[0]} and test{exts[0]})")
        val = next((f for f in map(find, arrays.VAL_NAMES) if f is not None), None)
    else:
        if not _present(p):
            raise DataError(f"{shown(p)}: no such file or directory")
        name = p.name
        i = name.rfind("train")
        if i < 0:
            raise DataError(f"{shown(p)}: cannot tell where the test split is: name the training file "
                            f"*train*{p.suffix} with a *test*{p.suffix} beside it, or pass a directory "
                            f"holding train{exts[0]} and test{exts[0]}")
        def sib(word):
            return p.with_name(name[:i] + word + name[i + 5:])
        files = {"train": p, "test": sib("test")}
        if not _present(files["test"]):
            raise DataError(f"{shown(files['test'])}: missing: the test split of {shown(p)}")
        val = next((sib(w) for w in arrays.VAL_NAMES if _present(sib(w))), None)
    if val is not None:
        files["val"] = val
    return files


def load_spec(spec: str, graph=None, data_dir=None, label_column=None, limits: dict | None = None,
              max_bytes: int | None = None, val_split: float | None = None, normalize: str | None = None,
              saved: dict | None = None, base_dir: str | None = None) -> Dataset:
    """Load the dataset `spec` names, ready for make_feed.

    graph: the model (image size and channels, vocabulary size); limits: split -> first N
    samples; saved: data arrays of a weights file being loaded (statistics, vocabulary and
    classes it was trained with, reused so ids and scaling match); normalize 'auto':
    per-channel mean/std of the training split; base_dir: where a relative path is
    resolved (the .net file's directory for the train block's dataset string).
    """
    limits = {k: v for k, v in (limits or {}).items() if v is not None}
    saved = saved or {}
    train_limit = limits.get("train")
    if val_split is not None:
        # The validation samples are the last of the whole training split: read it all.
        limits.pop("train", None)
    kind, path = parse_spec(spec)
    if base_dir and not os.path.isabs(path) and (kind or os.sep in path or "." in path):
        path = os.path.join(base_dir, path)
    if kind is None and (os.sep in path or "." in path or os.path.exists(path)):
        kind = guess_kind(path)
        if kind is None:
            if not os.path.exists(path):
                raise DataError(f"dataset {path!r}: no such file or directory")
            raise DataError(f"{shown(path)}: cannot tell the dataset kind: write KIND:{path} "
                            f"(kinds: {', '.join(KINDS)})")
    if kind != "csv" and label_column is not None:
        raise DataError(f"--label-column applies to csv datasets, not to {spec!r}")
    vocab_size = _vocab_size(graph)
    if kind is None:
        ds = idx.load_mnist(path, data_dir, limit_train=limits.get("train"), limit_test=limits.get("test"),
                            max_bytes=max_bytes)
    elif kind == "idx":
        if not Path(path).is_dir():
            raise DataError(f"{shown(path)}: no such directory (idx: takes a directory of the four "
                            f"MNIST-layout IDX files)")
        ds = idx.load_idx_dir(Path(path), limit_train=limits.get("train"), limit_test=limits.get("test"),
                              max_bytes=max_bytes)
    elif kind == "npz":
        ds = arrays.load_npz(path, limits, max_bytes)
    elif kind == "images":
        ds = arrays.load_image_folder(path, arrays.image_shape_of(graph), limits, max_bytes)
    elif kind == "csv":
        ds = arrays.load_csv(split_files(kind, path), label_column, limits, max_bytes)
    elif kind == "conll":
        ds = text.load_conll(split_files(kind, path), limits, max_bytes, vocab_size,
                             saved.get("vocab"), saved.get("classes"))
    else:
        ds = text.load_labelled_text(split_files(kind, path), limits, max_bytes, vocab_size,
                                     saved.get("vocab"), saved.get("classes"))
    if saved.get("classes") is not None and ds.classes is not None and tuple(ds.classes) != saved["classes"]:
        raise DataError(f"{ds.where('train')}: its classes {list(ds.classes)[:8]} differ from those the "
                        f"weights were trained with {list(saved['classes'])[:8]}")
    if val_split is not None:
        ds = carve_validation(ds, val_split, train_limit)
    return with_stats(ds, normalize, saved)


def _vocab_size(graph):
    if graph is not None and len(graph.inputs) == 1 and graph.inputs[0].type.vocab is not None:
        return int(graph.inputs[0].type.vocab)
    return None


def carve_validation(ds: Dataset, fraction: float, limit: int | None = None) -> Dataset:
    """The last `fraction` of the training split becomes the validation split (Keras's
    validation_split: no shuffling, so the split is the same every run)."""
    if ds.x_val is not None:
        raise DataError(f"{ds.where('val')}: the dataset has a validation split already; "
                        f"--val-split would replace it")
    n = len(ds.x_train)
    n_val = int(round(n * fraction))
    if n_val == 0 or n_val == n:
        raise DataError(f"{ds.where('train')}: --val-split {fraction} of {n} samples leaves an empty "
                        f"{'validation' if n_val == 0 else 'training'} split")
    keep = n - n_val
    x_train, y_train = ds.x_train[:keep], ds.y_train[:keep]
    if limit is not None:
        x_train, y_train = x_train[:limit], y_train[:limit]
    check_not_empty(len(x_train), ds.where("train"), "train")
    origin = dict(ds.origin)
    origin["val"] = f"{ds.where('train')} (its last {n_val} samples, --val-split)"
    return replace(ds, x_train=x_train, y_train=y_train, x_val=ds.x_train[keep:], y_val=ds.y_train[keep:],
                   origin=origin)


def with_stats(ds: Dataset, normalize: str | None, saved: dict) -> Dataset:
    """Attach the statistics the feed applies: a weights file's, else computed for 'auto'."""
    if "mean" in saved:
        stats = {"mean": saved["mean"], "std": saved["std"]}
        try:
            np.broadcast_shapes(stats["mean"].shape, ds.x_train.shape[1:])
        except ValueError:
            raise DataError(f"the weights' data statistics have shape {stats['mean'].shape}, which does not "
                            f"fit samples of shape {ds.x_train.shape[1:]}") from None
        return replace(ds, stats=stats)
    if normalize in (None, "none"):
        return ds
    if ds.kind != "dense":
        raise DataError(f"{ds.where('train')}: --normalize applies to numeric data, not to token sequences")
    return replace(ds, stats=compute_stats(ds.x_train))


def saved_data(path) -> dict:
    """The data entries (statistics, vocabulary, classes) of a weights file, checked.

    Only "data/..." entries are read, without pickle; other problems of the file are
    left to the weights loader, which reports them with their own diagnostics.
    """
    from .base import STATS_PREFIX
    from .feed import read_stats

    from ..fsutil import is_regular_readable

    if path is None or not is_regular_readable(path):  # a FIFO would block; the loader reports it
        return {}
    try:
        with np.load(os.fspath(path), allow_pickle=False) as z:
            entries = {k: z[k] for k in z.files if k.startswith(STATS_PREFIX)}
    except (OSError, ValueError, EOFError, AttributeError, TypeError, __import__("zipfile").BadZipFile):
        return {}
    return read_stats(entries, shown(path))


def load_for_run(spec: str, graph, args) -> Dataset:
    """load_spec with `netdsl run`'s flags (and --max-memory where the executor defines it).

    A path in the train block's dataset string is relative to the .net file; one in --data
    to the current directory.
    """
    from_block = getattr(args, "data", None) is None and graph is not None and graph.source
    val_split = getattr(args, "val_split", None)
    if val_split is None and graph is not None and graph.training is not None and graph.training.validation_split:
        val_split = graph.training.validation_split  # the train block's, unless --val-split says otherwise
    return load_spec(spec, graph, data_dir=args.data_dir, label_column=getattr(args, "label_column", None),
                     limits={"train": args.limit_train, "test": args.limit_test},
                     max_bytes=getattr(args, "max_memory", None), val_split=val_split,
                     normalize=getattr(args, "normalize", None), saved=saved_data(getattr(args, "load", None)),
                     base_dir=os.path.dirname(os.path.abspath(graph.source)) if from_block else None)
