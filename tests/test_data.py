"""Tests for netdsl.data. Nothing here touches the network: downloads go to
file:// URLs or an http.server bound to 127.0.0.1."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from netdsl import data
from netdsl.data import DataError

REPO = Path(__file__).resolve().parent.parent
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
          np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


# --------------------------------------------------------------------------- #
# Helpers building tiny IDX files

def idx_bytes(arr) -> bytes:
    arr = np.asarray(arr)
    header = bytes([0, 0, _CODES[arr.dtype], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write(path: Path, raw: bytes, gz: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def make_dataset(directory: Path, n_train=6, n_test=4, gz=True, seed=0, **override) -> dict:
    """Write a tiny MNIST-layout dataset; `override` maps a file base name to raw bytes.

    Returns {base name: uncompressed bytes}."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    raws = {}
    for base, arr in arrays.items():
        raw = override.get(base, idx_bytes(arr))
        write(directory / (base + (".gz" if gz else "")), raw, gz)
        raws[base] = raw
    return raws


def sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def no_env(tmp_path) -> dict:
    """An environment whose cache is an empty tmp dir, so the real user cache never leaks in."""
    return {"XDG_CACHE_HOME": str(tmp_path / "empty-cache"), "HOME": str(tmp_path / "home")}


def raises_data_error(path, *words, **kw) -> str:
    """load_idx(path) must raise DataError (nothing else) naming the file and every word."""
    with pytest.raises(DataError) as info:
        data.load_idx(path, **kw)
    msg = str(info.value)
    assert str(path) in msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return msg


# --------------------------------------------------------------------------- #
# Real MNIST

@pytest.fixture(scope="module")
def shared_data() -> Path:
    for root in (os.environ.get("NETDSL_DATA"), REPO.parent / "shared" / "data"):
        if root and (Path(root) / "mnist" / "train-images-idx3-ubyte.gz").is_file():
            return Path(root)
    pytest.skip("real MNIST not found: set NETDSL_DATA or provide <repo>/../shared/data/mnist")


@pytest.fixture(scope="module")
def mnist(shared_data):
    return data.load_mnist(data_dir=shared_data)  # verify=True: checksums are checked


def test_real_mnist_shapes_and_labels(mnist):
    assert mnist.x_train.shape == (60000, 28, 28) and mnist.x_train.dtype == np.uint8
    assert mnist.y_train.shape == (60000,)
    assert mnist.x_test.shape == (10000, 28, 28) and mnist.x_test.dtype == np.uint8
    assert mnist.y_test.shape == (10000,)
    assert np.bincount(mnist.y_train).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(mnist.y_test).tolist() == MNIST_TEST_COUNTS
    assert mnist.x_train.max() == 255 and mnist.x_train.min() == 0


def test_real_mnist_checksums_match_table(shared_data):
    for base, want in data.MNIST_SHA256.items():
        raw = gzip.decompress((shared_data / "mnist" / (base + ".gz")).read_bytes())
        assert sha(raw) == want


def test_real_mnist_direct_layout_and_env(shared_data, tmp_path):
    d = data.load_mnist(data_dir=shared_data / "mnist", verify=False)
    assert d.x_test.shape == (10000, 28, 28)
    env = {**no_env(tmp_path), "NETDSL_DATA": str(shared_data)}
    assert data.find_dataset("mnist", env=env) == shared_data / "mnist"


def test_views(mnist):
    x = mnist.x_test[:5]
    img, rows, vec = data.as_images(x), data.as_rows(x), data.as_vectors(x)
    assert img.shape == (5, 1, 28, 28) and img.dtype == np.float32
    assert rows.shape == (5, 28, 28) and rows.dtype == np.float32
    assert vec.shape == (5, 784) and vec.dtype == np.float32
    # Unscaled: the model does the 1/255.
    assert img.max() == 255.0
    assert np.array_equal(img[:, 0], rows) and np.array_equal(vec.reshape(5, 28, 28), rows)
    assert np.array_equal(rows[2, 7], x[2, 7])  # row 7 of image 2 is time step 7
    with pytest.raises(ValueError):
        data.as_images(vec)


# --------------------------------------------------------------------------- #
# Searching

def test_search_order(tmp_path):
    arg, env_root, cache = tmp_path / "arg", tmp_path / "env", tmp_path / "xdg"
    for root in (arg, env_root, cache / "netdsl"):
        make_dataset(root / "mnist")
    env = {"NETDSL_DATA": str(env_root), "XDG_CACHE_HOME": str(cache), "HOME": str(tmp_path)}
    assert data.find_dataset("mnist", arg, env) == arg / "mnist"
    assert data.find_dataset("mnist", None, env) == env_root / "mnist"
    assert data.find_dataset("mnist", "", env) == env_root / "mnist"  # empty means unset, not "."
    del env["NETDSL_DATA"]
    assert data.find_dataset("mnist", None, env) == cache / "netdsl" / "mnist"
    # An empty --data-dir or $NETDSL_DATA falls through to the next place.
    assert data.find_dataset("mnist", tmp_path / "nothing", {**env, "NETDSL_DATA": ""}) \
        == cache / "netdsl" / "mnist"


def test_cache_defaults_to_home_and_ignores_relative_xdg(tmp_path):
    make_dataset(tmp_path / ".cache" / "netdsl" / "mnist")
    for env in ({"HOME": str(tmp_path)}, {"HOME": str(tmp_path), "XDG_CACHE_HOME": "rel/dir"}):
        assert data.find_dataset("mnist", env=env) == tmp_path / ".cache" / "netdsl" / "mnist"


def test_both_layouts(tmp_path):
    make_dataset(tmp_path / "nested" / "fashion_mnist")
    make_dataset(tmp_path / "flat", gz=False)  # raw files work as well as .gz
    env = no_env(tmp_path)
    assert data.find_dataset("fashion_mnist", tmp_path / "nested", env) == tmp_path / "nested" / "fashion_mnist"
    assert data.find_dataset("fashion_mnist", tmp_path / "flat", env) == tmp_path / "flat"
    d = data.load_mnist("fashion_mnist", tmp_path / "flat", env=env)
    assert d.x_train.shape == (6, 28, 28) and d.y_test.shape == (4,)
    assert d.source == tmp_path / "flat"


def test_missing_lists_every_place(tmp_path):
    partial = tmp_path / "partial"
    write(partial / "mnist" / "train-images-idx3-ubyte.gz", idx_bytes(np.zeros((1, 28, 28), np.uint8)))
    env = {"NETDSL_DATA": str(tmp_path / "envdir"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    with pytest.raises(DataError) as info:
        data.load_mnist(data_dir=partial, env=env)
    msg = str(info.value)
    for place in (partial / "mnist", partial, tmp_path / "envdir" / "mnist", tmp_path / "envdir",
                  tmp_path / "xdg" / "netdsl" / "mnist", tmp_path / "xdg" / "netdsl"):
        assert str(place) in msg
    assert "--data-dir" in msg and "$NETDSL_DATA" in msg and "user cache" in msg
    assert "NETDSL_DATA=DIR" in msg and "--data-dir DIR" in msg and "--download" in msg
    assert "lacks" in msg and "t10k-labels-idx1-ubyte" in msg  # the half-populated dir is explained


def test_missing_unset_places_are_reported(tmp_path):
    with pytest.raises(DataError, match=r"(?s)--data-dir: \(not set\).*\$NETDSL_DATA: \(not set\)"):
        data.find_dataset("mnist", env=no_env(tmp_path))


@pytest.mark.parametrize("name", ["", "..", "a/b"])
def test_bad_dataset_name(name, tmp_path):
    with pytest.raises(DataError, match="invalid dataset name"):
        data.find_dataset(name, tmp_path, no_env(tmp_path))


# --------------------------------------------------------------------------- #
# Parsing IDX

@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, dtype, gz):
    arr = (np.arange(24).reshape(2, 3, 4) * 37 - 100).astype(dtype)
    path = write(tmp_path / "a.idx", idx_bytes(arr), gz)
    got = data.load_idx(path)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    assert np.array_equal(got, arr)


def test_gz_name_with_raw_content_is_sniffed(tmp_path):
    arr = np.arange(10, dtype=np.uint8)
    path = write(tmp_path / "x-idx1-ubyte.gz", idx_bytes(arr), gz=False)
    assert np.array_equal(data.load_idx(path), arr)


def test_corrupt_gzip(tmp_path):
    good = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32)))
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    path = tmp_path / "corrupt.gz"
    path.write_bytes(bytes(bad))
    raises_data_error(path, "corrupt gzip")
    path.write_bytes(b"\x1f\x8bthis is not gzip at all")
    raises_data_error(path, "corrupt gzip")


def test_truncated_gzip_stream(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32)))[:-30])
    raises_data_error(path, "truncated")


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_idx(tmp_path, gz):
    raw = idx_bytes(np.zeros((5, 28, 28), np.uint8))
    path = write(tmp_path / "short", raw[:-100], gz)
    raises_data_error(path, "truncated", "3920", "3820")
    path = write(tmp_path / "header", raw[:9], gz)  # stops inside the dimension sizes
    raises_data_error(path, "truncated IDX header")
    path = write(tmp_path / "tiny", raw[:2], gz)
    raises_data_error(path, "too short")


@pytest.mark.parametrize("gz", [True, False])
def test_trailing_garbage(tmp_path, gz):
    path = write(tmp_path / "long", idx_bytes(np.zeros(10, np.uint8)) + b"junk", gz)
    raises_data_error(path, "trailing garbage")


def test_wrong_magic_and_type(tmp_path):
    path = write(tmp_path / "magic", b"\x01\x02\x08\x01" + struct.pack(">I", 1) + b"\0")
    raises_data_error(path, "bad magic", "0x01020801")
    path = write(tmp_path / "page.gz", b"<!DOCTYPE html><html>Not found</html>", gz=False)
    raises_data_error(path, "bad magic", "HTML")
    path = write(tmp_path / "type", b"\x00\x00\x0a\x01" + struct.pack(">I", 1) + b"\0")
    raises_data_error(path, "unsupported", "0x0a")
    path = write(tmp_path / "ndim0", b"\x00\x00\x08\x00")
    raises_data_error(path, "0 dimensions")


def test_absurd_dims_refused_before_allocating(tmp_path):
    # 2**32-1 cubed claims ~8e28 bytes; allocating would fail or swap long before the read.
    path = write(tmp_path / "huge", b"\x00\x00\x08\x03" + struct.pack(">3I", *[2**32 - 1] * 3))
    t = time.perf_counter()
    raises_data_error(path, "limit")
    assert time.perf_counter() - t < 1.0
    # The limit is configurable: a small file over a small limit is refused too.
    ok = write(tmp_path / "ok", idx_bytes(np.zeros((4, 28, 28), np.uint8)))
    raises_data_error(ok, "limit", max_bytes=1000)
    assert data.load_idx(ok, max_bytes=4 * 28 * 28).shape == (4, 28, 28)


def test_unreadable_paths(tmp_path):
    raises_data_error(tmp_path / "absent.gz", "not found")
    raises_data_error(tmp_path, "cannot read")


def test_only_data_errors_on_every_truncation_and_bit_flip(tmp_path):
    """Whatever the damage, the caller sees a DataError, never struct/zlib/EOF errors."""
    raw = idx_bytes(np.arange(60, dtype=np.int16).reshape(3, 4, 5))
    for gz in (True, False):
        blob = gzip.compress(raw) if gz else raw
        path = tmp_path / f"damaged{int(gz)}"
        damaged = [blob[:i] for i in range(len(blob))]
        for i in range(len(blob)):
            flipped = bytearray(blob)
            flipped[i] ^= 0x5A
            damaged.append(bytes(flipped))
        for bad in damaged:
            path.write_bytes(bad)
            try:
                data.load_idx(path)
            except DataError as e:
                assert str(path) in str(e)


# --------------------------------------------------------------------------- #
# Loading datasets: consistency and checksums

def test_count_mismatch(tmp_path):
    labels = idx_bytes(np.zeros(5, np.uint8))
    make_dataset(tmp_path / "ds", n_train=6, **{"train-labels-idx1-ubyte": labels})
    with pytest.raises(DataError) as info:
        data.load_mnist("ds", tmp_path, env=no_env(tmp_path))
    msg = str(info.value)
    assert "train-images-idx3-ubyte.gz" in msg and "train-labels-idx1-ubyte.gz" in msg
    assert "6 images" in msg and "5 labels" in msg


@pytest.mark.parametrize("base, arr, words", [
    # Labels are checked against the model's output size when it is fed (test_data_formats.py);
    # here only what no model could use: negative or non-integer labels, wrong shapes.
    ("train-labels-idx1-ubyte", np.array([0, 1, 2, 3, 4, -1], np.int8), ["sample 5", "negative"]),
    ("t10k-images-idx3-ubyte", np.zeros((4, 784), np.uint8), ["image size mismatch"]),
    ("t10k-labels-idx1-ubyte", np.zeros((4, 1), np.uint8), ["shape (N,)"]),
    ("t10k-labels-idx1-ubyte", np.full(4, 0.5, np.float32), ["not an integer"]),
    ("t10k-images-idx3-ubyte", np.zeros((4, 32, 32), np.uint8), ["image size mismatch"]),
    ("t10k-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8), ["0 images", "4 labels"]),
])
def test_inconsistent_dataset(tmp_path, base, arr, words):
    make_dataset(tmp_path / "ds", **{base: idx_bytes(arr)})
    with pytest.raises(DataError) as info:
        data.load_mnist("ds", tmp_path, env=no_env(tmp_path))
    msg = str(info.value)
    assert base in msg
    for w in words:
        assert w in msg


def test_checksum_mismatch_only_in_netdsls_cache(tmp_path):
    # Checksums verify what netdsl downloads into its own cache ...
    env = no_env(tmp_path)
    cache = Path(env["XDG_CACHE_HOME"]) / "netdsl"
    make_dataset(cache / "mnist")  # right names, wrong content
    with pytest.raises(DataError) as info:
        data.load_mnist("mnist", env=env)
    msg = str(info.value)
    # The first file checked is named, with both hashes.
    path = cache / "mnist" / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    assert str(path) in msg and "checksum mismatch" in msg
    assert sha(raw) in msg and data.MNIST_SHA256["train-images-idx3-ubyte"] in msg
    # ... never a directory the user points at: a different dataset under MNIST's names trains.
    make_dataset(tmp_path / "mine" / "mnist", n_train=7)
    assert data.load_mnist("mnist", tmp_path / "mine", env=env).x_train.shape == (7, 28, 28)
    assert data.load_mnist("mnist", env={**env, "NETDSL_DATA": str(tmp_path / "mine")}).y_train.shape == (7,)


def test_checksum_only_for_mnist(tmp_path):
    make_dataset(tmp_path / "fashion_mnist")
    make_dataset(tmp_path / "mnist")
    env = no_env(tmp_path)
    assert data.load_mnist("fashion_mnist", tmp_path, env=env).x_train.shape == (6, 28, 28)
    assert data.load_mnist("mnist", tmp_path, verify=False, env=env).y_train.shape == (6,)


def test_checksum_accepts_matching_content(tmp_path, monkeypatch):
    raws = make_dataset(tmp_path / "mnist")
    monkeypatch.setattr(data, "MNIST_SHA256", {b: sha(r) for b, r in raws.items()})
    assert data.load_mnist("mnist", tmp_path, env=no_env(tmp_path)).x_test.shape == (4, 28, 28)


def test_dataset_is_frozen(tmp_path):
    make_dataset(tmp_path / "ds")
    d = data.load_mnist("ds", tmp_path, env=no_env(tmp_path))
    with pytest.raises(AttributeError):
        d.x_train = None


# --------------------------------------------------------------------------- #
# Downloading from local mirrors

@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A tiny fake MNIST in a local mirror directory, with the checksum table patched to match."""
    root = tmp_path / "mirror"
    raws = make_dataset(root)
    monkeypatch.setattr(data, "MNIST_SHA256", {b: sha(r) for b, r in raws.items()})
    return root


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_download_file_url(mirror, tmp_path):
    logs = []
    dest = data.download_mnist(tmp_path / "out", mirrors=[mirror.as_uri()], log=logs.append)
    assert dest == tmp_path / "out" / "mnist"
    assert sorted(p.name for p in dest.iterdir()) == sorted(b + ".gz" for b in data.MNIST_FILES.values())
    assert len(logs) == 4 and all(line.startswith("downloading file://") for line in logs)
    # The result loads with checksum verification on (against the patched table).
    assert data.load_mnist("mnist", tmp_path / "out", env=no_env(tmp_path)).x_train.shape == (6, 28, 28)
    # Present and valid files are not fetched again.
    logs.clear()
    data.download_mnist(tmp_path / "out", mirrors=[mirror.as_uri()], log=logs.append)
    assert logs == []


def test_download_falls_back_to_next_mirror(mirror, tmp_path):
    dest = data.download_mnist(tmp_path / "out", mirrors=[(tmp_path / "nope").as_uri(), mirror.as_uri()])
    assert len(list(dest.glob("*.gz"))) == 4 and leftovers(dest) == []


def test_download_checksum_enforced(mirror, tmp_path, monkeypatch):
    table = dict(data.MNIST_SHA256)
    table["t10k-images-idx3-ubyte"] = "0" * 64
    monkeypatch.setattr(data, "MNIST_SHA256", table)
    with pytest.raises(DataError) as info:
        data.download_mnist(tmp_path / "out", mirrors=[mirror.as_uri()])
    msg = str(info.value)
    assert "t10k-images-idx3-ubyte.gz" in msg and "checksum mismatch" in msg and "0" * 64 in msg
    dest = tmp_path / "out" / "mnist"
    assert not (dest / "t10k-images-idx3-ubyte.gz").exists()  # never moved into place
    assert leftovers(dest) == []  # no temp files left behind


def test_download_rejects_corrupt_file_and_keeps_old_one(mirror, tmp_path):
    dest = tmp_path / "out" / "mnist"
    old = write(dest / "train-labels-idx1-ubyte.gz", b"previous content", gz=False)
    (mirror / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8bgarbage")
    with pytest.raises(DataError, match="corrupt gzip"):
        data.download_mnist(tmp_path / "out", mirrors=[mirror.as_uri()])
    assert old.read_bytes() == b"previous content" and leftovers(dest) == []


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_over_loopback_http(mirror, tmp_path):
    handler = functools.partial(_QuietHandler, directory=str(mirror))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        # A 404ing mirror first: its failure is skipped over, not fatal.
        dest = data.download_mnist(tmp_path / "out", mirrors=[base + "/missing/", base + "/"], timeout=5)
        assert len(list(dest.glob("*.gz"))) == 4 and leftovers(dest) == []
        with pytest.raises(DataError) as info:
            data.download_mnist(tmp_path / "out2", mirrors=[base + "/missing/"], timeout=5)
        assert "404" in str(info.value) and base in str(info.value)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
