"""Array datasets: .npz files, image folders and CSV tables.

Each loader checks what it reads as it reads it and raises a DataError naming the file
(and the line or sample) on the first problem; a Dataset is returned only when every
split loaded completely. Sizes are estimated from headers, file counts or file sizes and
checked against the memory limit before the data is read.
"""
from __future__ import annotations

import csv
import math
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .base import DataError, Dataset, check_bytes, check_labels, check_not_empty, require_regular, shown

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VAL_NAMES = ("val", "validation", "valid", "dev")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test", "x_val", "y_val")


# --------------------------------------------------------------------------- npz

def _npy_header(f, where):
    """(shape, fortran, dtype) of an .npy stream, refusing object (pickled) arrays."""
    try:
        version = np.lib.format.read_magic(f)
        shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                 else np.lib.format.read_array_header_2_0(f))
    except ValueError as e:
        raise DataError(f"{where}: not a readable .npy array ({e})") from None
    if dtype.hasobject:
        raise DataError(f"{where}: holds Python objects (pickled); refusing to load it "
                        f"(unpickling can run code): store plain numeric arrays")
    if dtype.kind not in "biuf":
        raise DataError(f"{where}: dtype {dtype} is not numeric")
    if not shape:
        raise DataError(f"{where}: is a scalar; expected one row per sample")
    return shape, fortran, dtype


def _npz_rows(zf, key, limit):
    """(rows to read, their shape, dtype, fortran, full shape) of member `key`, from its header."""
    with zf.open(key + ".npy") as f:
        shape, fortran, dtype = _npy_header(f, key)
    n = shape[0] if limit is None else min(limit, shape[0])
    return (n, *shape[1:]), dtype, fortran, shape


def _npy_member(zf: zipfile.ZipFile, key: str, path, limit: int | None) -> np.ndarray:
    """Read array `key` of an open .npz, at most `limit` rows, without np.load's full read."""
    where = f"{shown(path)}: array '{key}'"
    with zf.open(key + ".npy") as f:
        shape, fortran, dtype = _npy_header(f, where)
        n = shape[0] if limit is None else min(limit, shape[0])
        rows = (n, *shape[1:])
        if fortran and n != shape[0]:
            raise DataError(f"{where}: Fortran-ordered arrays cannot be read partially; save it "
                            f"C-ordered (np.ascontiguousarray)")
        nbytes = math.prod(rows) * dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) < nbytes:
            raise DataError(f"{where}: truncated: header promises shape {shape} but the data ends early")
    arr = np.frombuffer(raw, dtype=dtype)
    arr = arr.reshape(rows[::-1]).T if fortran else arr.reshape(rows)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _open_zip(path) -> zipfile.ZipFile:
    require_regular(path)
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise DataError(f"{shown(path)}: file not found") from None
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, struct.error) as e:
        raise DataError(f"{shown(path)}: not an .npz archive ({getattr(e, 'strerror', None) or e})") from None


# What a damaged archive raises while reading a member (RuntimeError: "encrypted").
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError,
               ValueError, struct.error)


def load_npz(path, limits: dict | None = None, max_bytes: int | None = None) -> Dataset:
    """x_train, y_train, x_test, y_test and optionally x_val, y_val from one .npz (no pickle).

    Every member's header is read first and the total checked against the memory limit.
    """
    limits = limits or {}
    out = {}
    with _open_zip(path) as zf:
        present = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
        missing = [k for k in NPZ_KEYS[:4] if k not in present]
        if missing:
            raise DataError(f"{shown(path)}: lacks {', '.join(missing)} (it holds: "
                            f"{', '.join(sorted(present)) or 'nothing'}); expected x_train, y_train, "
                            f"x_test, y_test, optionally x_val, y_val")
        if ("x_val" in present) != ("y_val" in present):
            raise DataError(f"{shown(path)}: has only one of x_val and y_val")
        keys = [k for k in NPZ_KEYS if k in present]
        try:
            heads = {k: _npz_rows(zf, k, limits.get(k[2:])) for k in keys}
            total = sum(math.prod(h[0]) * h[1].itemsize for h in heads.values())
            check_bytes(path, total, max_bytes)
            for k in keys:
                out[k] = _npy_member(zf, k, path, limits.get(k[2:]))
        except DataError as e:
            msg = str(e)
            raise DataError(msg if msg.startswith(shown(path)) else f"{shown(path)}: array {msg}") from None
        except _ZIP_ERRORS as e:
            raise DataError(f"{shown(path)}: corrupt archive ({e})") from None
    splits = [s for s in ("train", "test", "val") if "x_" + s in out]
    for s in splits:
        x, y = out["x_" + s], out["y_" + s]
        check_not_empty(len(x), shown(path), s)
        out["y_" + s] = check_labels(y, f"{shown(path)}: y_{s}")
        if len(x) != len(y):
            raise DataError(f"{shown(path)}: x_{s} has {len(x)} samples but y_{s} has {len(y)} labels")
    if out["x_train"].shape[1:] != out["x_test"].shape[1:]:
        raise DataError(f"{shown(path)}: x_train samples have shape {out['x_train'].shape[1:]} "
                        f"but x_test samples {out['x_test'].shape[1:]}")
    origin = {s: f"{shown(path)}: x_{s}" for s in splits}
    return Dataset(source=Path(path), origin=origin, files=(path,), **out)


def load_npz_inputs(path, max_bytes: int | None = None) -> np.ndarray:
    """The array `x` (else `x_test`) of an .npz, for predict."""
    with _open_zip(path) as zf:
        present = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
        key = "x" if "x" in present else "x_test" if "x_test" in present else None
        if key is None:
            raise DataError(f"{shown(path)}: has no array 'x' to predict on (it holds: "
                            f"{', '.join(sorted(present)) or 'nothing'})")
        try:
            rows, dtype, _, _ = _npz_rows(zf, key, None)
            check_bytes(path, math.prod(rows) * dtype.itemsize, max_bytes)
            return _npy_member(zf, key, path, None)
        except DataError as e:
            msg = str(e)
            raise DataError(msg if msg.startswith(shown(path)) else f"{shown(path)}: array {msg}") from None
        except _ZIP_ERRORS as e:
            raise DataError(f"{shown(path)}: corrupt archive ({e})") from None


# ------------------------------------------------------------------ image folder

def _image_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


_CHANNELS = {"1": 1, "L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4, "YCbCr": 3}


def read_image(path: Path, expect: tuple | None) -> np.ndarray:
    """One image file as a (C, H, W) uint8 array, checked against `expect` (C, H, W)."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DataError("reading image folders needs Pillow: pip install pillow") from None
    try:
        require_regular(path)
        with Image.open(path) as im:
            # The size is in the header: check it before decoding (a huge image is refused unread).
            w, h = im.size
            if expect is not None and (h, w) != tuple(expect[1:]):
                raise DataError(f"{shown(path)}: image is {w}x{h} (width x height); the model's Input "
                                f"expects {expect[2]}x{expect[1]}")
            if expect is None and w * h > 2**26:
                raise DataError(f"{shown(path)}: image is {w}x{h}, too large to load")
            im.load()
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            if im.mode not in _CHANNELS:
                raise DataError(f"{shown(path)}: image mode {im.mode} is not supported (only 8-bit "
                                f"grayscale, RGB or RGBA images)")
            if im.mode == "1":
                im = im.convert("L")
            c = _CHANNELS[im.mode]
            if expect is not None:
                ec = expect[0]
                if c != ec:
                    raise DataError(f"{shown(path)}: image has {c} channel{'s' if c != 1 else ''} ({im.mode}); "
                                    f"the model's Input expects {ec}")
            arr = np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{shown(path)}: not a readable image ({e})") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def image_shape_of(graph) -> tuple | None:
    """The (C, H, W) a model's single image input wants, or None."""
    if graph is None or len(graph.inputs) != 1:
        return None
    return image_shape_of_type(graph.inputs[0].type)


def image_shape_of_type(t) -> tuple | None:
    if t.seq or t.vocab is not None or len(t.shape) != 3:
        return None
    return tuple(int(d) for d in t.shape)


def _class_dirs(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir())


def load_image_folder(root, expect: tuple | None = None, limits: dict | None = None,
                      max_bytes: int | None = None) -> Dataset:
    """root/<split>/<class>/*.png|jpg, splits train and test (and val/validation/valid/dev)."""
    root = Path(root)
    limits = limits or {}
    if not root.is_dir():
        raise DataError(f"{shown(root)}: no such directory (an image folder has train/<class>/ and "
                        f"test/<class>/ subdirectories)")
    splits = {"train": root / "train", "test": root / "test"}
    for name in VAL_NAMES:
        if (root / name).is_dir():
            splits["val"] = root / name
            break
    for s in ("train", "test"):
        if not splits[s].is_dir():
            raise DataError(f"{shown(splits[s])}: missing: an image folder needs {s}/<class>/*.png|jpg")
    classes = [d.name for d in _class_dirs(splits["train"])]
    if not classes:
        raise DataError(f"{shown(splits['train'])}: no class subdirectories")
    index = {c: i for i, c in enumerate(classes)}
    listed, every = {}, []
    for s, d in splits.items():
        files = []
        for cd in _class_dirs(d):
            if cd.name not in index:
                raise DataError(f"{shown(cd)}: class '{cd.name}' does not occur in the training split "
                                f"({shown(splits['train'])})")
            files += [(p, index[cd.name]) for p in _image_files(cd)]
        every += [p for p, _ in files]  # before any limit: an unread image is the dataset's too
        check_not_empty(len(files), shown(d), s)
        if limits.get(s) is not None:
            # A limit takes a class-balanced prefix: the first file of every class, then the second ...
            rank, seen = [], {}
            for f in files:
                seen[f[1]] = seen.get(f[1], -1) + 1
                rank.append(seen[f[1]])
            files = [f for _, f in sorted(zip(rank, files), key=lambda rf: (rf[0], rf[1][1]))][:limits[s]]
        listed[s] = files
    c, h, w = expect if expect is not None else read_image(listed["train"][0][0], None).shape
    total = sum(len(f) for f in listed.values()) * c * h * w
    check_bytes(root, total, max_bytes)
    out = {}
    for s, files in listed.items():
        x = np.empty((len(files), c, h, w), np.uint8)
        for i, (p, _) in enumerate(files):
            x[i] = read_image(p, (c, h, w))
        out["x_" + s] = x
        out["y_" + s] = np.array([k for _, k in files], np.int64)
    return Dataset(source=root, origin={s: shown(d) for s, d in splits.items()}, classes=tuple(classes),
                   files=tuple(every), **out)


# ---------------------------------------------------------------------------- CSV

def _number(text: str):
    try:
        v = float(text)
    except ValueError:
        return None
    return v


def _label_index(header: list | None, label_column, path, ncols: int) -> int:
    if label_column is None:
        if header is not None and "label" in header:
            return header.index("label")
        return ncols - 1
    if header is not None and str(label_column) in header:
        return header.index(str(label_column))
    try:
        i = int(label_column)
    except (TypeError, ValueError):
        cols = ", ".join(header) if header else f"{ncols} unnamed columns"
        raise DataError(f"{shown(path)}: no column '{label_column}' (columns: {cols})") from None
    if not -ncols <= i < ncols:
        raise DataError(f"{shown(path)}: --label-column {i} is out of range for {ncols} columns")
    return i % ncols


def read_csv(path, label_column=None, limit: int | None = None, max_bytes: int | None = None,
             classes: list | None = None, labelled: bool = True):
    """(features float32 (N, F), labels int64 (N,) or None, header, class names or None).

    The first row is a header when any field of it is not a number. The label column is
    --label-column (a header name or a 0-based index), else 'label', else the last column.
    String labels are mapped to sorted class names (from `classes`, the training split's,
    when given).
    """
    path = Path(path)
    try:
        require_regular(path)
        size = os.stat(path).st_size
        f = open(path, newline="", encoding="utf-8-sig")  # spreadsheets write a byte-order mark
    except FileNotFoundError:
        raise DataError(f"{shown(path)}: file not found") from None
    except OSError as e:
        raise DataError(f"{shown(path)}: cannot read: {e.strerror or e}") from None
    if limit is None:
        # Every value takes at least two characters ("0,") and becomes 4 bytes.
        check_bytes(path, 2 * size, max_bytes)
    chunks, rows, labels, header, width, lab = [], [], [], None, None, None
    count = 0
    try:
        with f:
            for lineno, row in enumerate(csv.reader(f), 1):
                if not row or all(not c.strip() for c in row):
                    continue
                if width is None:
                    width = len(row)
                    if any(_number(c) is None for c in row):
                        header = [c.strip() for c in row]
                        if labelled:
                            lab = _label_index(header, label_column, path, width)
                        continue
                    if labelled:
                        lab = _label_index(None, label_column, path, width)
                if len(row) != width:
                    raise DataError(f"{shown(path)}:{lineno}: ragged row: {len(row)} fields, expected {width}"
                                    + (" (as in the header)" if header else " (as in the first row)"))
                if limit is not None and count >= limit:
                    break
                feats = []
                for j, c in enumerate(row):
                    if j == lab:
                        labels.append(c.strip())
                        continue
                    v = _number(c)
                    if v is None or not math.isfinite(v):
                        col = header[j] if header else str(j)
                        raise DataError(f"{shown(path)}:{lineno}: column {col!r}: {c.strip()!r} is not a "
                                        f"finite number")
                    feats.append(v)
                rows.append(feats)
                count += 1
                if len(rows) == 4096:
                    chunks.append(np.array(rows, np.float32))
                    rows = []
    except UnicodeDecodeError as e:
        raise DataError(f"{shown(path)}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise DataError(f"{shown(path)}: malformed CSV ({e})") from None
    if count == 0:
        raise DataError(f"{shown(path)}: no data rows")
    if rows:
        chunks.append(np.array(rows, np.float32))
    x = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
    if not labelled:
        return x, None, header, None
    y, classes = _map_labels(labels, path, header, classes)
    return x, y, header, classes


def _map_labels(labels: list, path, header, classes):
    """Integer labels stay as they are; text labels become indices into sorted class names."""
    first = 2 if header else 1
    if classes is None and all(_is_int(t) for t in labels):
        y = np.array([int(t) for t in labels], np.int64)
        bad = np.flatnonzero(y < 0)
        if bad.size:
            raise DataError(f"{shown(path)}: row {bad[0] + first}: label {y[bad[0]]} is negative")
        return y, None
    if classes is None:
        classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    y = np.empty(len(labels), np.int64)
    for i, t in enumerate(labels):
        if t not in index:
            raise DataError(f"{shown(path)}: data row {i + 1}: label {t!r} does not occur in the "
                            f"training split")
        y[i] = index[t]
    return y, list(classes)


def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False


def load_csv(files: dict, label_column=None, limits: dict | None = None,
             max_bytes: int | None = None) -> Dataset:
    """files: split -> CSV path (train and test, optionally val)."""
    limits = limits or {}
    out, classes = {}, None
    for s in ("train", "test", "val"):
        if s not in files:
            continue
        x, y, header, cls = read_csv(files[s], label_column, limits.get(s), max_bytes,
                                     classes if s != "train" else None)
        if s == "train":
            classes, width = cls, x.shape[1]
        elif x.shape[1] != width:
            raise DataError(f"{shown(files[s])}: {x.shape[1]} feature columns, but the training split "
                            f"({shown(files['train'])}) has {width}")
        out["x_" + s], out["y_" + s] = x, y
    return Dataset(source=Path(files["train"]), origin={s: shown(p) for s, p in files.items()},
                   files=tuple(files.values()), classes=tuple(classes) if classes else None, **out)
