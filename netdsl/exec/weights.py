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
"""
from __future__ import annotations

import math
import os
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .. import ir
from ..errors import Diagnostic, NetdslError, Span
from . import init as inits

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


def _sources(graph: ir.Graph) -> dict:
    # Lets the diagnostic show the offending source line under the message.
    try:
        return {graph.source: Path(graph.source).read_text(encoding="utf-8")}
    except (OSError, UnicodeDecodeError, TypeError):
        return {}


def _owners(graph: ir.Graph) -> dict:
    return {p.name: layer for layer in graph.layers for p in layer.params}


# ---------------------------------------------------------------- initialisation

def _fans(layer: ir.Layer, param: ir.Param):
    # LSTM gate matrices stack four (n, in) blocks: each gate is initialised as
    # its own matrix, fan_out = n (not 4n), as CNTK and PyTorch see them.
    if layer.kind == "LSTM" and param.name.endswith((".W", ".H")):
        return param.shape[1], param.shape[0] // 4
    return None, None


def parse_init(text: str):
    """'uniform(0.05)' -> ('uniform', 0.05); 'zeros' -> ('zeros', None)."""
    m = _INIT_RE.match(text.strip())
    if not m or m.group(1) not in inits.INITIALIZERS:
        raise ValueError(f"unknown initializer {text!r}")
    arg = m.group(2)
    return m.group(1), (float(arg) if arg not in (None, "") else None)


def init_param(layer: ir.Layer, param: ir.Param, rng: np.random.Generator) -> np.ndarray:
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
    fan_in, fan_out = _fans(layer, param)
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
    """np.savez into a temp file next to `path`, fsync, then os.replace: a
    crash leaves either the old file or the new one, never half of one."""
    path = Path(os.fspath(path))
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise NetdslError(Diagnostic(E_WRITE, f"cannot write: {e.strerror or e}",
                                     _file_span(path))) from None
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise NetdslError(Diagnostic(E_WRITE, f"cannot write: {e.strerror or e}",
                                         _file_span(path))) from None
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def save_weights(path, params: dict, extra: dict | None = None) -> None:
    """Write canonical parameters to `path` (.npz), atomically; `extra` holds data
    statistics under the reserved "data/" prefix (netdsl.data.stats_arrays)."""
    atomic_savez(path, {**{k: np.asarray(v) for k, v in params.items()}, **(extra or {})})


# ---------------------------------------------------------------- loading

def read_npz(path) -> dict:
    """Every array of an .npz, without pickle; file-level errors as E601/E606."""
    span = _file_span(path)
    try:
        z = np.load(os.fspath(path), allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise NetdslError(Diagnostic(E_READ, f"a single .npy array, not an .npz weight file of "
                                         f"named parameters", span))
        with z:
            out = {}
            for key in z.files:
                try:
                    out[key] = z[key]
                except ValueError as e:
                    if "allow_pickle" in str(e) or "pickle" in str(e):
                        raise NetdslError(Diagnostic(
                            E_PICKLE, f"entry '{key}' is a pickled object array; refusing to load it "
                            f"(unpickling can run code)", span,
                            "weight files hold plain float32/float64 arrays only")) from None
                    raise NetdslError(Diagnostic(E_READ, f"entry '{key}' is unreadable: {e}",
                                                 span)) from None
            return out
    except NetdslError:
        raise
    except FileNotFoundError:
        raise NetdslError(Diagnostic(E_READ, "no such weight file", span)) from None
    except IsADirectoryError:
        raise NetdslError(Diagnostic(E_READ, "is a directory, not a weight file", span)) from None
    except OSError as e:
        raise NetdslError(Diagnostic(E_READ, f"cannot read: {e.strerror or e}", span)) from None
    except ValueError as e:
        if _looks_pickled(path):
            raise NetdslError(Diagnostic(
                E_PICKLE, "the file is a pickle, not an .npz of arrays; refusing to load it "
                "(unpickling can run code)", span)) from None
        raise NetdslError(Diagnostic(E_READ, "not an .npz weight file (no zip archive header)", span)) from None
    except (zipfile.BadZipFile, EOFError) as e:
        raise NetdslError(Diagnostic(E_READ, f"not an .npz weight file ({e})", span)) from None


def _looks_pickled(path) -> bool:
    # Pickle protocol 2+ starts with PROTO (0x80); numpy lumps every non-npy,
    # non-zip file under "pickled data", which would mislead for plain junk.
    try:
        with open(path, "rb") as f:
            return f.read(1) == b"\x80"
    except OSError:
        return False


def check_params(arrays: dict, graph: ir.Graph, path, dtype=np.float32) -> dict:
    """Validate `arrays` against the graph's parameters; return them cast to dtype."""
    owners = _owners(graph)
    diags = []
    out = {}
    fspan = _file_span(path)
    for p in graph.params():
        layer = owners[p.name]
        span = layer.span or fspan
        a = arrays.get(p.name)
        if a is None:
            diags.append(Diagnostic(E_MISSING, f"weight file {path} lacks parameter '{p.name}' "
                                    f"of layer '{layer.name}' ({layer.kind}), shape {tuple(p.shape)}", span))
            continue
        if a.dtype not in (np.float32, np.float64):
            diags.append(Diagnostic(E_DTYPE, f"weight file {path}: parameter '{p.name}' has dtype "
                                    f"{a.dtype}, expected float32 or float64", span))
            continue
        if tuple(a.shape) != tuple(p.shape):
            diags.append(Diagnostic(E_SHAPE, f"weight file {path}: parameter '{p.name}' has shape "
                                    f"{tuple(a.shape)}, expected {tuple(p.shape)}", span))
            continue
        if not np.isfinite(a).all():
            bad = int((~np.isfinite(a)).sum())
            diags.append(Diagnostic(E_NONFINITE, f"weight file {path}: parameter '{p.name}' holds "
                                    f"{bad} NaN/Inf value{'s' if bad != 1 else ''}", span))
            continue
        out[p.name] = np.array(a, dtype=dtype, copy=True)
    known = set(owners)
    # "data/..." entries are the training data's statistics and vocabulary, not parameters.
    for key in sorted(k for k in arrays if k not in known and not k.startswith("data/")):
        diags.append(Diagnostic(E_EXTRA, f"holds '{key}', which is not a parameter of model {graph.name}", fspan, _close(key, known)))
    if diags:
        raise NetdslError(diags, _sources(graph))
    return out


def _close(key, known):
    import difflib

    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def load_weights(path, graph: ir.Graph, dtype=np.float32) -> dict:
    """Load and validate a canonical weight file for `graph`."""
    return check_params(read_npz(path), graph, path, dtype)


def param_count(params: dict) -> int:
    return sum(math.prod(v.shape) for v in params.values())
