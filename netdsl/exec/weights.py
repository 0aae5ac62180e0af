"""Canonical weight files (.npz) and seeded initialisation.

A weight file holds exactly the graph's parameters, keyed by canonical name
("<layer>.<short>"), in canonical shape, as float32 or float64 arrays. It is
read with allow_pickle=False: a file that needs pickle is refused, because
unpickling runs code.

Errors are NetdslError diagnostics, E6xx:
- about one parameter (missing, mis-shaped, wrong dtype, non-finite): the span
  is the layer that declares it in the .net file and the message names the
  weight file, so the user sees both ends;
- about the file as a whole (unreadable, not an npz, pickled content, a key
  the model has no parameter for, cannot write): the span is `FILE:1:1`,
  as for `netdsl ir --load`.
All problems of one file are reported together.

Headers are read before data: a file whose entries have the wrong names,
shapes or dtypes is refused without reading (or allocating) any of its
arrays, so an .npz declaring 10^12 elements costs nothing. weight_problems()
is THE rule for a weight file's contents; the generated loaders mirror it.
"""
from __future__ import annotations

import math
import os
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import fsutil, ir
from ..errors import Diagnostic, NetdslError, Span
from . import init as inits
from .kernels import KERNELS

E_READ = "E601"      # cannot read / not an npz archive
E_MISSING = "E602"   # a parameter of the model is absent
E_EXTRA = "E603"     # the file holds a key the model does not have
E_SHAPE = "E604"
E_DTYPE = "E605"
E_PICKLE = "E606"
E_NONFINITE = "E607"
E_WRITE = "E608"

_INIT_RE = re.compile(r"^([a-z_]+)(?:\((.*)\))?$")


def _file_span(path) -> Span:
    return Span(os.fspath(path), 1, 1, 1, 1)


def graph_sources(graph: ir.Graph) -> dict:
    """{file: text} of the model's source, so a diagnostic shows the offending line."""
    try:
        return {graph.source: Path(graph.source).read_text(encoding="utf-8")}
    except (OSError, UnicodeDecodeError, TypeError):
        return {}


def _owners(graph: ir.Graph) -> dict:
    return {p.name: layer for layer in graph.layers for p in layer.params}


# ---------------------------------------------------------------- initialisation

def parse_init(text: str):
    """'uniform(0.05)' -> ('uniform', 0.05); 'zeros' -> ('zeros', None)."""
    m = _INIT_RE.match(text.strip())
    if not m or m.group(1) not in inits.INITIALIZERS:
        raise ValueError(f"unknown initializer {text!r}")
    arg = m.group(2)
    return m.group(1), (float(arg) if arg not in (None, "") else None)


def init_param(layer: ir.Layer, param: ir.Param, rng: np.random.Generator) -> np.ndarray:
    kernel = KERNELS.get(layer.kind)
    fixed = kernel.fixed(layer, param) if kernel is not None else None
    if fixed is not None:  # a constant from the .net file's own .npz, in every canonical weights file
        return fixed
    name, arg = parse_init(param.init)
    shape = tuple(param.shape)
    if name in ("uniform", "normal"):
        key = "scale" if name == "uniform" else "std"
        kwargs = {} if arg is None else {key: arg}
        return inits.initialize(name, shape, rng, **kwargs)
    if name == "constant":
        return inits.constant(shape, rng, value=0.0 if arg is None else arg)
    if name in ("zeros", "ones"):
        return inits.initialize(name, shape, rng)
    kernel = KERNELS.get(layer.kind)
    fan_in, fan_out = kernel.fans(layer, param) if kernel is not None else (None, None)
    return inits.initialize(name, shape, rng, fan_in=fan_in, fan_out=fan_out)


def init_params(graph: ir.Graph, seed: int) -> dict:
    """Fresh float32 parameters: one Generator(PCG64(seed)) drawn in graph order
    (layers, then each layer's params), so the same seed gives the same bits."""
    rng = np.random.default_rng(seed)
    out = {}
    for layer in graph.layers:
        for p in layer.params:
            out[p.name] = init_param(layer, p, rng)
    return out


# ---------------------------------------------------------------- saving

def atomic_savez(path, arrays: dict) -> None:
    """np.savez through fsutil.atomic_write (temp file beside `path`, fsync,
    os.replace): a crash leaves the old file or the new one, never half of
    one, and a killed run's temp file is one fsutil.remove_stale_temps finds."""
    try:
        fsutil.atomic_write(path, lambda f: np.savez(f, **arrays), mode="wb", fsync=True)
    except OSError as e:
        raise NetdslError(Diagnostic(E_WRITE, f"cannot write: {e.strerror or e}", _file_span(path))) from None


def save_weights(path, params: dict, extra: dict | None = None) -> None:
    """Write canonical parameters to `path` (.npz), atomically; `extra` holds data
    statistics under the reserved "data/" prefix (netdsl.data.stats_arrays)."""
    atomic_savez(path, {**{k: np.asarray(v) for k, v in params.items()}, **(extra or {})})


# ---------------------------------------------------------------- the rule

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
DATA_PREFIX = "data/"


@dataclass(frozen=True)
class Header:
    """What an .npy header declares, read without the data."""

    shape: tuple
    dtype: np.dtype


@dataclass(frozen=True)
class WeightProblem:
    code: str
    name: str
    message: str


def weight_problems(arrays, expected) -> list:
    """THE rule for the contents of a canonical weight file, shared with the
    generated loaders (keep the messages stable; they mirror them).

    `arrays` maps entry name -> ndarray, or -> Header (shape and dtype only, no
    finiteness check yet); `expected` maps parameter name -> shape. For each
    expected name, in order: missing -> E602; dtype not float32/float64 ->
    E605; shape differs -> E604; any NaN/Inf -> E607 (the first failing check
    only). Then every entry not expected, sorted -> E603. Messages:
      E602 missing parameter '{name}', shape {shape}
      E605 parameter '{name}' has dtype {dtype}, expected float32 or float64
      E604 parameter '{name}' has shape {shape}, expected {expected}
      E607 parameter '{name}' holds {n} NaN/Inf value(s)   ("value" when n == 1)
      E603 unexpected entry '{name}'
    (Refusing pickles, E606, is np.load(..., allow_pickle=False)'s part.)
    """
    out = []
    for name, shape in expected.items():
        shape = tuple(shape)
        a = arrays.get(name)
        if a is None:
            out.append(WeightProblem(E_MISSING, name, f"missing parameter '{name}', shape {shape}"))
        elif a.dtype not in FLOAT_DTYPES:
            out.append(WeightProblem(E_DTYPE, name, f"parameter '{name}' has dtype {a.dtype}, "
                                     f"expected float32 or float64"))
        elif tuple(a.shape) != shape:
            out.append(WeightProblem(E_SHAPE, name, f"parameter '{name}' has shape {tuple(a.shape)}, "
                                     f"expected {shape}"))
        elif isinstance(a, np.ndarray) and not np.isfinite(a).all():
            bad = int((~np.isfinite(a)).sum())
            out.append(WeightProblem(E_NONFINITE, name, f"parameter '{name}' holds {bad} NaN/Inf "
                                     f"value{'s' if bad != 1 else ''}"))
    # "data/..." entries are the training data's statistics and vocabulary (netdsl.data), not parameters
    for name in sorted(k for k in arrays if k not in expected and not k.startswith(DATA_PREFIX)):
        out.append(WeightProblem(E_EXTRA, name, f"unexpected entry '{name}'"))
    return out


# ---------------------------------------------------------------- reading

class NpzArchive:
    """An .npz opened for checking: `headers` (entry -> Header) are read on
    opening, an entry's data only by read(name). File-level problems are
    E601 (E606 for pickles). Use as a context manager."""

    def __init__(self, path):
        self.path = path
        self.span = _file_span(path)
        self._zip = None
        self.headers = {}
        self._members = {}
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def error(self, message, code=E_READ, note=None):
        """Raise a file-level diagnostic about this archive."""
        raise NetdslError(Diagnostic(code, message, self.span, note))

    def _open(self):
        path = self.path
        try:
            os.stat(path)
        except FileNotFoundError:
            self.error("no such weight file")
        except OSError as e:
            self.error(f"cannot read: {e.strerror or e}")
        except ValueError as e:  # a NUL in the path
            self.error(f"cannot read: invalid path ({e})")
        if os.path.isdir(path):
            self.error("is a directory, not a weight file")
        if not fsutil.is_regular_readable(path):
            # opening a FIFO would block until someone writes to it
            self.error("not a regular file (a FIFO, socket or device)")
        try:
            with open(path, "rb") as f:
                magic = f.read(6)
            if magic.startswith(b"\x93NUMPY"):
                self.error("a single .npy array, not an .npz weight file of named parameters")
            if magic[:1] == b"\x80":
                # Pickle protocol 2+ starts with PROTO (0x80).
                self.error("the file is a pickle, not an .npz of arrays; refusing to load it "
                           "(unpickling can run code)", E_PICKLE)
            if not magic.startswith(b"PK"):
                self.error("not an .npz weight file (no zip archive header)")
            self._zip = zipfile.ZipFile(path)
            for info in self._zip.infolist():
                if not info.filename.endswith(".npy"):
                    self.error(f"entry '{info.filename}' is not a .npy array")
                name = info.filename[:-4]
                if name in self._members:
                    self.error(f"holds entry '{name}' twice")
                self._members[name] = info
                self.headers[name] = self._header(name, info)
        except OSError as e:
            self.error(f"cannot read: {e.strerror or e}")
        except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError, RuntimeError) as e:
            self.error(f"not an .npz weight file ({e})")

    def _header(self, name, info) -> Header:
        try:
            with self._zip.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f"unsupported .npy format version {version}")
        except (ValueError, EOFError, SyntaxError, TypeError) as e:
            self.error(f"entry '{name}' is unreadable: {e}")
        if dtype.hasobject:
            self.error(f"entry '{name}' is a pickled object array; refusing to load it "
                       f"(unpickling can run code)", E_PICKLE,
                       "weight files hold plain float32/float64 arrays only")
        return Header(tuple(shape), dtype)

    def nbytes(self, name) -> int:
        h = self.headers[name]
        return math.prod(h.shape) * h.dtype.itemsize

    def read(self, name) -> np.ndarray:
        try:
            with self._zip.open(self._members[name]) as f:
                return np.lib.format.read_array(f, allow_pickle=False)
        except (ValueError, EOFError, OSError, zlib.error, zipfile.BadZipFile) as e:
            self.error(f"entry '{name}' is unreadable: {e}")

    def close(self):
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


MAX_ENTRY_BYTES = 1 << 31  # read_npz's bound on one entry: it does not know the shapes to expect


def read_npz(path, max_entry_bytes: int = MAX_ENTRY_BYTES) -> dict:
    """Every array of an .npz, without pickle; file-level errors as E601/E606."""
    with NpzArchive(path) as z:
        for name in z.headers:
            if z.nbytes(name) > max_entry_bytes:
                z.error(f"entry '{name}' declares {z.nbytes(name)} bytes, over the limit of "
                        f"{max_entry_bytes}")
        return {name: z.read(name) for name in z.headers}


def expected_shapes(graph: ir.Graph) -> dict:
    return {p.name: tuple(p.shape) for p in graph.params()}


def check_params(arrays: dict, graph: ir.Graph, path, dtype=np.float32) -> dict:
    """Validate `arrays` (name -> ndarray or Header) against the graph's
    parameters with weight_problems(); return the ndarrays cast to dtype."""
    owners = _owners(graph)
    fspan = _file_span(path)
    expected = expected_shapes(graph)
    diags = []
    for pr in weight_problems(arrays, expected):
        if pr.code == E_EXTRA:
            diags.append(Diagnostic(E_EXTRA, f"holds '{pr.name}', which is not a parameter of model "
                                    f"{graph.name}", fspan, _close(pr.name, set(owners))))
            continue
        layer = owners[pr.name]
        span = layer.span or fspan
        if pr.code == E_MISSING:
            diags.append(Diagnostic(E_MISSING, f"weight file {path} lacks parameter '{pr.name}' of layer "
                                    f"'{layer.name}' ({layer.kind}), shape {expected[pr.name]}", span))
        else:
            diags.append(Diagnostic(pr.code, f"weight file {path}: {pr.message}", span))
    if diags:
        raise NetdslError(diags, graph_sources(graph))
    return {k: np.array(v, dtype=dtype, copy=True) for k, v in arrays.items()
            if k in expected and isinstance(v, np.ndarray)}


def _close(key, known):
    import difflib

    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def load_weights(path, graph: ir.Graph, dtype=np.float32) -> dict:
    """Load and validate a canonical weight file for `graph`: names, shapes
    and dtypes from the headers first, then the data (finiteness)."""
    with NpzArchive(path) as z:
        check_params(z.headers, graph, path, dtype)
        arrays = {name: z.read(name) for name in z.headers}
    return check_params(arrays, graph, path, dtype)


def param_count(params: dict) -> int:
    return sum(math.prod(v.shape) for v in params.values())
