"""What every dataset format shares: the error type, the Dataset record, memory bounds."""
from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import printable

# A corrupt or hostile header can claim terabytes: every loader estimates the bytes it
# would hold from headers (and --limit-train/--limit-test) and refuses above this, before
# allocating. The executor's --max-memory, where given, replaces it (see load_spec).
MAX_DATA_BYTES = 2**31

# Top-level names of a weights file that are data statistics and vocabularies, not
# parameters (netdsl/exec/weights.py skips them when checking parameters).
STATS_PREFIX = "data/"


class DataError(Exception):
    """A dataset problem to show the user as a diagnostic, not a traceback.

    The message names the file (and line or sample where it applies). str() makes every
    line terminal-safe the way diagnostics are: a file named with an escape sequence
    cannot drive the terminal.
    """

    def __str__(self) -> str:
        return "\n".join(printable(line) for line in super().__str__().split("\n"))


@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous; compare fields yourself
class Dataset:
    """Splits ready to feed. kind says what x holds:

    - "dense": an array (N, *sample shape), pixels unscaled (models declare scale=1/255);
    - "tags": object arrays of int64 token-id arrays; y the same with tag ids (one per token);
    - "text": x as for "tags", y an int array of one class per sequence.
    """

    x_train: np.ndarray  # dense: (N, ...) e.g. (N, 28, 28) uint8 for MNIST
    y_train: np.ndarray  # (N,) integer labels
    x_test: np.ndarray
    y_test: np.ndarray
    source: Path | None = None  # where the files came from, for messages
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    kind: str = "dense"
    classes: tuple | None = None  # class (or tag) names when the data named them
    vocab: tuple | None = None  # token list, index = id; 0 is the pad, 1 the unknown token
    stats: dict = field(default_factory=dict)  # e.g. {"mean": arr, "std": arr}, applied by the feed
    origin: dict = field(default_factory=dict)  # split -> file or directory it came from
    files: tuple = ()  # every file of the dataset: `run` never writes an output over one of them

    def where(self, split: str) -> str:
        return str(self.origin.get(split) or self.source or f"the {split} split")


def shown(path) -> str:
    """A path for a message."""
    return os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path)


def require_regular(path) -> None:
    """Refuse a FIFO, socket or device before opening it: reading a FIFO blocks forever.
    A missing path is left to the open() that follows, which reports it."""
    try:
        st = os.stat(path)
    except OSError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{shown(path)}: cannot read: is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{shown(path)}: not a regular file (a FIFO, socket or device); refusing to read it")


def check_bytes(what, nbytes: int, limit: int | None, hint: str = "") -> None:
    """Refuse, before allocating, data whose estimated size is over the limit."""
    limit = MAX_DATA_BYTES if limit is None else limit
    if nbytes > limit:
        raise DataError(f"{shown(what)}: loading it would take about {_human(nbytes)} ({nbytes} bytes), "
                        f"over the {_human(limit)} ({limit}-byte) limit{hint}")


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def nbytes_of(shape, dtype) -> int:
    return math.prod(shape) * np.dtype(dtype).itemsize


def check_labels(y, where: str) -> np.ndarray:
    """Integer labels >= 0 as int64, or a DataError naming the first bad sample. One-hot rows (N, K), as
    Keras's to_categorical makes for categorical_crossentropy, are their class indices: the cross-entropy of
    a one-hot row is the cross-entropy of its label, exactly."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1 and y.dtype.kind in "fiub":
        hot = ((y == 0) | (y == 1)).all(axis=1) & (y.sum(axis=1) == 1)
        bad = np.flatnonzero(~hot)
        if bad.size:
            row = ", ".join(f"{v:g}" for v in y[bad[0]][:8].astype(np.float64)) + (", ..." if y.shape[1] > 8 else "")
            raise DataError(f"{where}: sample {bad[0]}: labels of shape (N, K) must be one-hot rows (one 1, the "
                            f"rest 0), got [{row}]")
        return y.argmax(axis=1).astype(np.int64)
    if y.ndim != 1:
        raise DataError(f"{where}: expected labels of shape (N,) or one-hot rows (N, K), got shape {y.shape}")
    if y.dtype.kind == "f":
        bad = np.flatnonzero(y != np.round(y))
        if bad.size:
            raise DataError(f"{where}: sample {bad[0]}: label {y[bad[0]]} is not an integer")
    elif y.dtype.kind not in "iub":
        raise DataError(f"{where}: expected integer labels, got {y.dtype}")
    if y.size and y.min() < 0:
        i = int(np.argmax(y < 0))
        raise DataError(f"{where}: sample {i}: label {y[i]} is negative")
    return y.astype(np.int64)


def check_not_empty(n: int, where: str, split: str) -> None:
    if n == 0:
        raise DataError(f"{where}: the {split} split is empty")
