"""Read a .net file and run the whole front end: parse -> lower -> passes."""
from __future__ import annotations

import gc
import os
import stat
from dataclasses import replace
from pathlib import Path

from . import ir
from .errors import Diagnostic, NetdslError, Span
from .lower import lower
from .parser import parse
from .passes import run_passes
from .limits import LIMITS


def read_source(path: str, regular_only: bool = False) -> str:
    """The text of a .net file, read with a bound: st_size is 0 for pipes and /proc files and
    /dev/zero never ends, so the limit is enforced on the bytes read, not on what stat says."""
    limit = LIMITS.max_source_bytes
    too_big = Diagnostic("E004", f"file is over the limit of {limit} bytes", Span(path, 1, 1, 1, 1),
                         "raise NETDSL_MAX_SOURCE_BYTES to allow larger files")
    try:
        # O_NONBLOCK: a blocking open of a FIFO waits forever for a writer. The check is on the
        # opened file (fstat), so the path cannot be swapped for a FIFO between check and read.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with open(fd, "rb") as f:
            st = os.fstat(fd)
            if (regular_only and not stat.S_ISREG(st.st_mode)) or stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode):
                raise NetdslError(Diagnostic("E006", "cannot read file: not a regular file", Span(path, 1, 1, 1, 1)))
            if st.st_size > limit:
                raise NetdslError(replace(too_big, message=f"file is {st.st_size} bytes, over the limit of {limit}"))
            os.set_blocking(fd, True)
            data = _read_at_most(f, limit + 1)
    except OSError as e:
        raise NetdslError(Diagnostic("E006", f"cannot read file: {e.strerror or e}", Span(path, 1, 1, 1, 1))) from None
    except ValueError as e:  # a NUL character or an unencodable surrogate in the path ("\0.net" in an import)
        raise NetdslError(Diagnostic("E006", f"cannot read file: invalid path ({e})", Span(path, 1, 1, 1, 1))) from None
    if len(data) > limit:
        raise NetdslError(too_big)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        line_start = data.rfind(b"\n", 0, e.start) + 1
        col = len(data[line_start: e.start].decode("utf-8")) + 1  # in characters, as the lexer counts
        raise NetdslError(Diagnostic("E002", "file is not valid UTF-8", Span(path, line, col, line, col + 1))) from None
    return text[1:] if text.startswith("\ufeff") else text  # a byte-order mark is not part of the program


def _read_at_most(f, n: int) -> bytes:
    """Up to n bytes, in 1 MB reads: f.read(n) would allocate n bytes up front, and n comes from
    NETDSL_MAX_SOURCE_BYTES."""
    chunks, total = [], 0
    while total < n:
        chunk = f.read(min(1 << 20, n - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _loader(rel: str, importer: str):
    """Imports resolve next to the importing file; only regular .net files are read."""
    if not rel.endswith(".net"):
        raise OSError(0, "only .net files can be imported")
    path = str(Path(importer).parent / rel)
    try:
        text = read_source(path, regular_only=True)
    except NetdslError as e:
        raise OSError(0, e.diagnostics[0].message) from None
    return path, text


def load_text(text: str, file: str = "<string>") -> ir.Graph:
    return _load(text, file, {file: text})[1]


def _load(text: str, file: str, sources: dict) -> tuple:
    """parse -> lower -> passes: (syntax tree, graph); `sources` collects the text of every file
    read (imports too). The lint rules read the syntax tree too (a loss alias is not in the IR)."""
    # The front end allocates many small objects and frees none until it returns; the cyclic
    # collector would rescan them over and over (superlinear on 10k-layer models), so pause it.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        module = parse(text, file)
        graph = lower(module, file, sources, _loader)
        return module, run_passes(graph, sources)
    finally:
        if was_enabled:
            gc.enable()


def load(path: str) -> ir.Graph:
    return load_text(read_source(path), path)


def load_with_warnings(path: str) -> tuple[ir.Graph, list[Diagnostic], dict[str, str]]:
    """load(), plus the lint warnings (netdsl/lint.py) and the text of every file read (the file
    and its imports), so a command can show the warnings and refuse to write over any input."""
    from .lint import lint

    text = read_source(path)
    sources = {path: text}
    module, graph = _load(text, path, sources)
    return graph, lint(graph, module), sources
