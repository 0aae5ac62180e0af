"""Read a .net file and run the whole front end: parse -> lower -> passes."""
from __future__ import annotations

import gc
from pathlib import Path

from . import ir
from .errors import Diagnostic, NetdslError, Span
from .lower import lower
from .parser import parse
from .passes import run_passes
from .limits import LIMITS


def read_source(path: str) -> str:
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > LIMITS.max_source_bytes:
            raise NetdslError(Diagnostic(
                "E004", f"file is {size} bytes, over the limit of {LIMITS.max_source_bytes}",
                Span(path, 1, 1, 1, 1), "raise NETDSL_MAX_SOURCE_BYTES to allow larger files"))
        data = p.read_bytes()
    except OSError as e:
        raise NetdslError(Diagnostic("E006", f"cannot read file: {e.strerror or e}", Span(path, 1, 1, 1, 1))) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise NetdslError(Diagnostic("E002", "file is not valid UTF-8", Span(path, line, col, line, col + 1))) from None


def _loader(rel: str, importer: str):
    """Imports resolve next to the importing file; only .net files are read."""
    if not rel.endswith(".net"):
        raise OSError(0, "only .net files can be imported")
    path = str(Path(importer).parent / rel)
    try:
        text = read_source(path)
    except NetdslError as e:
        raise OSError(0, e.diagnostics[0].message) from None
    return path, text


def load_text(text: str, file: str = "<string>") -> ir.Graph:
    sources = {file: text}
    # The front end allocates many small objects and frees none until it returns; the cyclic
    # collector would rescan them over and over (superlinear on 10k-layer models), so pause it.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        module = parse(text, file)
        graph = lower(module, file, sources, _loader)
        return run_passes(graph, sources)
    finally:
        if was_enabled:
            gc.enable()


def load(path: str) -> ir.Graph:
    return load_text(read_source(path), path)
