"""Loading MNIST-family datasets stored as IDX files (gzipped or raw).

Every problem a user can cause (missing directory, bad download, wrong file)
surfaces as a DataError whose message names the file and the problem, so the
CLI can print it as a diagnostic instead of a traceback.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import math
import os
import struct
import tempfile
import urllib.request
import zlib
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from .base import (
    MAX_DATA_BYTES, DataError, Dataset, check_bytes, check_labels, check_not_empty, require_regular,
)

__all__ = [
    "MNIST_FILES", "MNIST_SHA256", "MNIST_MIRRORS", "MAX_IDX_BYTES", "MAX_IDX_DIMS", "NUM_CLASSES",
    "cache_dir", "find_dataset", "load_idx", "load_mnist", "load_idx_dir", "download_mnist",
    "as_images", "as_rows", "as_vectors",
]

# The four files every MNIST-family dataset (MNIST, Fashion-MNIST, ...) ships.
MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

# SHA-256 of the *uncompressed* genuine MNIST files. Mirrors recompress, so the
# .gz bytes differ between copies while the content is identical.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

# Tried in order; any mirror will do because the content is checksummed.
MNIST_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]

MAX_IDX_BYTES = MAX_DATA_BYTES
# Real IDX files have 1 to 4 dimensions; numpy refuses more than 32 (64 in numpy 2).
MAX_IDX_DIMS = 16

# The output size of the MNIST models; labels are checked against the model's own
# output size when a model is fed (feed.py), not against this.
NUM_CLASSES = 10

# Downloads are bounded too: the largest MNIST file is under 10 MB gzipped.
_MAX_DOWNLOAD_BYTES = 64 * 2**20

_IDX_TYPES = {
    0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


# --------------------------------------------------------------------------- #
# Finding the files

def _public(name: str):
    # The tables as netdsl.data exports them, so that replacing netdsl.data.MNIST_MIRRORS
    # (a test's local mirror, a site's own) takes effect here too.
    import netdsl.data

    return getattr(netdsl.data, name)


def cache_dir(env: Mapping[str, str] = os.environ) -> Path | None:
    """The user cache root, ~/.cache/netdsl (or $XDG_CACHE_HOME/netdsl)."""
    xdg = env.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):  # the XDG spec says relative values are to be ignored
        return Path(xdg) / "netdsl"
    home = env.get("HOME")
    if not home:
        try:
            home = str(Path.home())
        except RuntimeError:
            return None
    return Path(home) / ".cache" / "netdsl"


def _exists(path: Path, kind: str) -> bool:
    # Path.is_dir() raises on e.g. permission errors; for searching, that just means "not here".
    try:
        # A FIFO or device counts as a file here, so that reading it is refused by name.
        return path.is_dir() if kind == "dir" else (path.exists() and not path.is_dir())
    except (OSError, ValueError):
        return False


def _idx_path(directory: Path, base: str) -> Path | None:
    # Raw first: it skips decompression. Sniffing later decides the format, so
    # a mis-named file (raw bytes saved as .gz) still loads.
    for candidate in (directory / base, directory / (base + ".gz")):
        if _exists(candidate, "file"):
            return candidate
    return None


def _missing(directory: Path) -> list[str]:
    return [b for b in MNIST_FILES.values() if _idx_path(directory, b) is None]


def find_dataset(name: str, data_dir: str | os.PathLike | None = None,
                 env: Mapping[str, str] = os.environ) -> Path:
    """Return the directory holding the four IDX files of dataset `name`.

    Roots are tried in order: `data_dir` (--data-dir), $NETDSL_DATA, the user
    cache. Each root may hold `<name>/` or the files directly.
    """
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise DataError(f"invalid dataset name {name!r}: expected a plain name such as 'mnist'")

    cache = cache_dir(env)
    roots = [
        ("--data-dir", data_dir or None),
        ("$NETDSL_DATA", env.get("NETDSL_DATA") or None),
        ("user cache", cache),
    ]
    looked = []
    for label, root in roots:
        if root is None:
            looked.append(f"  {label}: (not set)")
            continue
        root = Path(os.path.expanduser(os.fspath(root)))
        for directory in (root / name, root):
            if not _exists(directory, "dir"):
                why = "no such directory"
            else:
                missing = _missing(directory)
                if not missing:
                    return directory
                why = ("no IDX files" if len(missing) == len(MNIST_FILES)
                       else "incomplete: lacks " + ", ".join(f"{m}[.gz]" for m in missing))
            looked.append(f"  {label}: {directory} ({why})")

    files = ", ".join(f + ".gz" for f in MNIST_FILES.values())
    fetch = (", or run `netdsl run ... --download` to fetch it" if name == "mnist"
             else ". (--download fetches only 'mnist'.)")
    raise DataError(
        f"dataset {name!r} not found. Looked in:\n" + "\n".join(looked) + "\n"
        f"Fix: pass --data-dir DIR or set NETDSL_DATA=DIR, where DIR contains "
        f"{name}/ (or the files directly): {files}{fetch}"
    )


# --------------------------------------------------------------------------- #
# Parsing IDX

def _open(path: Path):
    # Sniff rather than trust the extension: browsers and some mirrors hand
    # out decompressed bytes under a .gz name.
    require_regular(path)
    with open(path, "rb") as f:
        head = f.read(2)
    return gzip.open(path, "rb") if head == _GZIP_MAGIC else open(path, "rb")


def _header(f, name):
    """Read an IDX header from the open file: (dtype, dims, raw header bytes)."""
    magic = f.read(4)
    if len(magic) < 4:
        raise DataError(f"{name}: too short to be an IDX file "
                        f"({len(magic)} bytes; the 4-byte header is missing)")
    if magic[:2] != b"\0\0":
        hint = " (looks like an HTML page: a failed download?)" if magic[:1] == b"<" else ""
        raise DataError(f"{name}: not an IDX file: bad magic number 0x{magic.hex()}{hint}; "
                        f"expected 0x0000TTNN (type code TT, NN dimensions)")
    code, ndim = magic[2], magic[3]
    if code not in _IDX_TYPES:
        raise DataError(f"{name}: unsupported IDX element type 0x{code:02x} "
                        f"(supported: {', '.join(f'0x{c:02x}' for c in _IDX_TYPES)})")
    if ndim == 0:
        raise DataError(f"{name}: IDX header declares 0 dimensions")
    if ndim > MAX_IDX_DIMS:
        raise DataError(f"{name}: IDX header declares {ndim} dimensions; at most {MAX_IDX_DIMS} are "
                        f"supported (the header is corrupt or this is not an IDX file)")
    dims_raw = f.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise DataError(f"{name}: truncated IDX header: {ndim} dimensions declared "
                        f"but only {len(dims_raw)} of {4 * ndim} size bytes present")
    return _IDX_TYPES[code], struct.unpack(f">{ndim}I", dims_raw), magic + dims_raw


@contextlib.contextmanager
def _guard(name):
    """Turn every way a damaged file can fail to read into a DataError naming it."""
    try:
        yield
    except (gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{name}: corrupt gzip data ({e})") from None
    except EOFError:
        raise DataError(f"{name}: corrupt gzip data (compressed stream is truncated)") from None
    except FileNotFoundError:
        raise DataError(f"{name}: file not found") from None
    except OSError as e:
        raise DataError(f"{name}: cannot read: {e.strerror or e}") from None
    except MemoryError:
        raise DataError(f"{name}: not enough memory to load it") from None


def idx_header(path: Path, label: str | None = None):
    """(dtype, dims) of an IDX file, reading only its header."""
    name = label or path
    with _guard(name), _open(path) as f:
        dtype, dims, _ = _header(f, name)
    return dtype, dims


def _read_idx(path: Path, max_bytes: int, want_hash: bool = False, label: str | None = None,
              limit: int | None = None):
    """Parse one IDX file; return (array, sha256 hex of the uncompressed bytes or None).

    Only the first `limit` records (first dimension) are read when it is given; the size
    is checked against `max_bytes` from the header, before anything is allocated.
    `label` replaces the path in messages (a download's temp file means nothing to users).
    """
    name = label or path
    with _guard(name), _open(path) as f:
        dtype, dims, head = _header(f, name)
        full = math.prod(dims) * dtype.itemsize
        n = dims[0] if limit is None or want_hash else min(dims[0], limit)
        shape = (n, *dims[1:])
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        if nbytes > max_bytes:
            raise DataError(f"{name}: IDX header claims shape {dims} = {full} bytes"
                            + (f" ({nbytes} for the first {n})" if n != dims[0] else "")
                            + f", over the {max_bytes}-byte limit; the header is corrupt "
                            f"or this is not the file you meant")
        arr = np.empty(count, dtype)
        buf = memoryview(arr.view(np.uint8))
        got = 0
        while got < nbytes:
            k = f.readinto(buf[got:])
            if not k:
                break
            got += k
        if got < nbytes:
            raise DataError(f"{name}: truncated: header promises shape {dims} = {full} "
                            f"data bytes but the file holds only {got}")
        # With a limit the rest of the file is not read, so trailing bytes go unseen.
        if n == dims[0] and f.read(1):
            raise DataError(f"{name}: trailing garbage: unexpected data after the {nbytes} "
                            f"bytes that header shape {dims} describes")

    digest = None
    if want_hash:
        h = hashlib.sha256(head)
        h.update(buf)
        digest = h.hexdigest()
    if dtype.itemsize > 1:
        arr = arr.astype(dtype.newbyteorder("="))  # compute in native byte order
    return arr.reshape(shape), digest


def load_idx(path: str | os.PathLike, max_bytes: int | None = None, limit: int | None = None) -> np.ndarray:
    """Parse an IDX file (gzipped or raw) into a native-endian array.

    Headers whose data would exceed `max_bytes` (default MAX_IDX_BYTES) are
    refused before any allocation. `limit` reads only the first records.
    """
    lim = MAX_IDX_BYTES if max_bytes is None else max_bytes
    return _read_idx(Path(path), lim, limit=limit)[0]


# --------------------------------------------------------------------------- #
# Loading a dataset

def _in_cache(directory: Path, env: Mapping[str, str]) -> bool:
    cache = cache_dir(env)
    if cache is None:
        return False
    try:
        return Path(os.path.realpath(directory)).is_relative_to(os.path.realpath(cache))
    except (OSError, ValueError):
        return False


def load_mnist(name: str = "mnist", data_dir: str | os.PathLike | None = None,
               verify: bool = True, env: Mapping[str, str] = os.environ,
               limit_train: int | None = None, limit_test: int | None = None,
               max_bytes: int | None = None) -> Dataset:
    """Find and load an MNIST-family dataset (see find_dataset for where it looks).

    Checksums verify what netdsl downloads into its own cache: for name "mnist" found
    in the user cache (and verify=True), each file's uncompressed content must match
    genuine MNIST. A directory the user points at (--data-dir, $NETDSL_DATA) trains on
    whatever it holds.
    """
    root = find_dataset(name, data_dir, env)
    return load_idx_dir(root, verify=verify and name == "mnist" and _in_cache(root, env),
                        limit_train=limit_train, limit_test=limit_test, max_bytes=max_bytes)


def load_idx_dir(root: Path, verify: bool = False, limit_train: int | None = None,
                 limit_test: int | None = None, max_bytes: int | None = None) -> Dataset:
    """Load the four MNIST-layout IDX files of `root`, headers first."""
    root = Path(root)
    paths = {}
    for key, base in MNIST_FILES.items():
        path = _idx_path(root, base)
        if path is None:
            raise DataError(f"{root / base}[.gz]: file not found")
        paths[key] = path
    # Headers first: counts, shapes and the memory estimate are checked before any data is read.
    heads = {k: idx_header(p) for k, p in paths.items()}
    total = 0
    for split, limit in (("train", limit_train), ("test", limit_test)):
        (xd, xdims), (yd, ydims) = heads["x_" + split], heads["y_" + split]
        xp, yp = paths["x_" + split], paths["y_" + split]
        if len(xdims) < 2:
            raise DataError(f"{xp}: expected {split} samples of shape (N, ...), got shape {xdims}")
        if len(ydims) != 1:
            raise DataError(f"{yp}: expected {split} labels of shape (N,), got shape {ydims}")
        if xdims[0] != ydims[0]:
            raise DataError(f"{split} count mismatch: {xp} has {xdims[0]} images "
                            f"but {yp} has {ydims[0]} labels")
        check_not_empty(xdims[0], xp, split)
        n = xdims[0] if limit is None or verify else min(limit, xdims[0])
        total += n * (math.prod(xdims[1:]) * xd.itemsize + yd.itemsize)
    if heads["x_train"][1][1:] != heads["x_test"][1][1:]:
        raise DataError(f"image size mismatch: {paths['x_train']} has "
                        f"{heads['x_train'][1][1:]} images but {paths['x_test']} has "
                        f"{heads['x_test'][1][1:]}")
    limit_note = "" if limit_train or limit_test else "; --limit-train/--limit-test read only the first samples"
    check_bytes(root, total, max_bytes, limit_note)
    budget = MAX_IDX_BYTES if max_bytes is None else max_bytes

    arrays = {}
    for key, path in paths.items():
        base = MNIST_FILES[key]
        limit = limit_train if key.endswith("train") else limit_test
        arr, digest = _read_idx(path, budget, want_hash=verify, limit=limit)
        want = _public("MNIST_SHA256").get(base)
        if verify and want and digest != want:
            raise DataError(
                f"{path}: checksum mismatch: uncompressed SHA-256 is {digest}, expected "
                f"{want} for genuine MNIST. The file in netdsl's cache is corrupt; delete it "
                f"and download again (--download).")
        if limit is not None:
            arr = arr[:limit]
        if key.startswith("y"):
            arr = check_labels(arr, str(path))
        arrays[key] = arr
    origin = {"train": paths["x_train"], "test": paths["x_test"]}
    return Dataset(source=root, origin=origin, files=tuple(paths.values()), **arrays)


# --------------------------------------------------------------------------- #
# Downloading (only ever on an explicit --download)

def _fetch(url: str, dest: Path, timeout: float) -> None:
    """Stream `url` into `dest`, refusing bodies over _MAX_DOWNLOAD_BYTES."""
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:
        total = 0
        while chunk := resp.read(1 << 16):
            total += len(chunk)
            if total > _MAX_DOWNLOAD_BYTES:
                raise DataError(f"{url}: response exceeds {_MAX_DOWNLOAD_BYTES} bytes")
            out.write(chunk)


def download_mnist(dest_root: str | os.PathLike, mirrors: list[str] | None = None,
                   timeout: float = 60.0, log: Callable[[str], None] | None = None) -> Path:
    """Download MNIST into `<dest_root>/mnist/` and return that directory.

    Each file is checked against MNIST_SHA256 before it is moved into place
    (temp file + os.replace), so an interrupted or bad download never leaves a
    file that looks valid. Files already present and correct are kept.
    """
    mirrors = list(_public("MNIST_MIRRORS") if mirrors is None else mirrors)
    table = _public("MNIST_SHA256")
    dest = Path(os.path.expanduser(os.fspath(dest_root))) / "mnist"
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{dest}: cannot create download directory: {e.strerror or e}") from None

    for base in MNIST_FILES.values():
        want = table[base]
        final = dest / (base + ".gz")
        if _exists(final, "file"):
            try:
                if _read_idx(final, MAX_IDX_BYTES, want_hash=True)[1] == want:
                    continue
            except DataError:
                pass  # bad existing copy: replace it
        failures = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + base + ".gz"
            if log:
                log(f"downloading {url}")
            try:
                fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=f".{base}.", suffix=".part")
            except OSError as e:
                raise DataError(f"{dest}: cannot write there: {e.strerror or e}") from None
            os.close(fd)
            tmp = Path(tmp_name)
            try:
                _fetch(url, tmp, timeout)
                digest = _read_idx(tmp, MAX_IDX_BYTES, want_hash=True, label=url)[1]
                if digest != want:
                    raise DataError(f"checksum mismatch: uncompressed SHA-256 {digest}, expected {want}")
                os.chmod(tmp, 0o644)  # mkstemp makes it private; a data cache is meant to be shared
                os.replace(tmp, final)
                break
            except DataError as e:
                failures.append(f"  {e}" if str(e).startswith(url) else f"  {url}: {e}")
            except (OSError, ValueError, http.client.HTTPException) as e:
                failures.append(f"  {url}: {e}")
            finally:
                tmp.unlink(missing_ok=True)
        else:
            raise DataError(f"could not download {base}.gz from any mirror:\n" + "\n".join(failures))
    return dest


# --------------------------------------------------------------------------- #
# Views the executor and generated scripts feed to models. Pixels stay in
# 0..255: scaling is the model's job (models declare scale=1/255).

def _check_images(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"expected images of shape (N, rows, cols), got {x.shape}")
    return x


def as_images(x: np.ndarray) -> np.ndarray:
    """(N, H, W) -> (N, 1, H, W) float32, one channel for convolutions."""
    x = _check_images(x)
    return x.astype(np.float32).reshape(x.shape[0], 1, *x.shape[1:])


def as_rows(x: np.ndarray) -> np.ndarray:
    """(N, H, W) -> (N, H, W) float32: H time steps of W features for recurrent models."""
    return _check_images(x).astype(np.float32)


def as_vectors(x: np.ndarray) -> np.ndarray:
    """(N, H, W) -> (N, H*W) float32 for dense models."""
    x = _check_images(x)
    return x.reshape(x.shape[0], -1).astype(np.float32)
