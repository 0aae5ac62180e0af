"""Where netdsl writes: one rule for every output path of every command.

- Never write over an input of the same command (the .net file, its imports, weights it reads).
- Only regular files are replaced: a FIFO, a device node (/dev/null as root) or a directory is refused.
- Check before long work starts that the directory exists and is writable.
- Write through a temp file beside the target and os.replace it, so a crash never leaves half a file.
- An existing file keeps its mode; a new one gets 0666 less the umask, as open() would give it.
- Temp files carry one recognisable prefix/suffix so a later run can remove stale ones safely.
"""
from __future__ import annotations

import os
import stat
import tempfile
import time
from pathlib import Path

TMP_SUFFIX = ".netdsl-tmp"


class OutputPathError(Exception):
    """An output path netdsl refuses; str() is the message to show, naming the path."""


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def check_output(path, inputs=(), what: str = "output", overwrite: bool = True) -> Path:
    """Validate `path` as a place to write, before any work. Returns it as a Path.

    `inputs` are the files the command reads; `overwrite=False` refuses an existing file.
    """
    p = Path(path)
    shown = os.fsdecode(p)
    for src in inputs:
        if src is not None and _same_file(p, Path(src)):
            raise OutputPathError(f"{what} {shown!r} is also an input of this command; refusing to overwrite it")
    try:
        st = os.stat(p)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise OutputPathError(f"cannot use {what} {shown!r}: {e.strerror}") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise OutputPathError(f"{what} {shown!r} is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise OutputPathError(f"{what} {shown!r} is not a regular file (a FIFO, socket or device); refusing to replace it")
        if not overwrite:
            raise OutputPathError(f"{what} {shown!r} already exists (pass --overwrite to replace it)")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OutputPathError(f"cannot write {what} {shown!r}: directory {os.fsdecode(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write {what} {shown!r}: directory {os.fsdecode(parent)!r} is not writable")
    return p


def _new_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path, data, mode: str = "w", fsync: bool = False) -> None:
    """Write str/bytes (or call `data(fileobj)`) to `path` through a temp file beside it."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    try:
        keep = stat.S_IMODE(os.stat(p).st_mode)
    except FileNotFoundError:
        keep = _new_file_mode()
    fd, tmp = tempfile.mkstemp(dir=str(parent), prefix=f".{p.name}.", suffix=TMP_SUFFIX)
    try:
        kwargs = {"encoding": "utf-8"} if "b" not in mode else {}
        with os.fdopen(fd, mode, **kwargs) as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, keep)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if fsync:
        try:
            dfd = os.open(parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)


def remove_stale_temps(path, older_than: float = 60.0) -> int:
    """Remove temp files an interrupted earlier write of `path` left beside it (kill -9 mid-write).

    Only files named like ours for this very target and not modified for `older_than` seconds,
    so a concurrent writer's live temp file is left alone. Returns how many were removed.
    """
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    prefix = f".{p.name}."
    removed = 0
    now = time.time()
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return 0
    for e in entries:
        if not (e.name.startswith(prefix) and e.name.endswith(TMP_SUFFIX)):
            continue
        try:
            st = e.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and now - st.st_mtime >= older_than:
                os.unlink(e.path)
                removed += 1
        except OSError:
            pass
    return removed


def is_regular_readable(path) -> bool:
    """True for a regular file: opening a FIFO for reading would block forever."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False
