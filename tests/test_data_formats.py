"""`netdsl run` on every dataset format, with small datasets made here, deterministically,
with a learnable signal: each is asserted to be learned (accuracy well above chance), not
only to run. Then the bad-data cases: each is a DataError naming the file (and the line
or sample), never a traceback and never a half-loaded dataset."""
from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from netdsl import data
from netdsl.cli import main
from netdsl.data import DataError

REPO = Path(__file__).resolve().parent.parent
MODELS = Path(__file__).resolve().parent / "data_models"


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["run", *map(str, argv), "--no-progress"])
    out, err = capsys.readouterr()
    return rc, out, err


def final_accuracy(out: str) -> float:
    m = re.search(r"final test accuracy: ([0-9.]+)%", out)
    assert m, out
    return float(m.group(1)) / 100


# --------------------------------------------------------------------------- makers

def blobs(n: int, seed: int, offset=0.0, scale=1.0):
    """Three well-separated Gaussian blobs in 4 dimensions."""
    rng = np.random.default_rng(seed)
    centres = np.array([[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0]], np.float32)
    y = np.arange(n) % 3
    x = centres[y] + rng.normal(0, 0.5, (n, 4)).astype(np.float32)
    return (x * scale + offset).astype(np.float32), y.astype(np.int64)


def make_images(root: Path, per_class=(20, 10), size=8, seed=0) -> Path:
    """8x8 RGB PNGs: class k has a bright channel k, the others dark, with noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "test"), per_class):
        for k, name in enumerate(("red", "green", "blue")):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                px = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
                px[..., k] = rng.integers(160, 256, (size, size), dtype=np.uint8)
                Image.fromarray(px, "RGB").save(d / f"{i:03d}.png")
    return root


WORDS = {"NUM": [f"n{i}" for i in range(8)], "NAME": ["ann", "bob", "cy", "di"],
         "O": [f"w{i}" for i in range(14)]}


def tagged_sentences(n: int, seed: int):
    """Sentences whose tag is a function of the word: NUM, NAME or O (O is the majority)."""
    rng = np.random.default_rng(seed)
    vocab = [(w, t) for t, ws in WORDS.items() for w in ws]
    out = []
    for _ in range(n):
        k = int(rng.integers(3, 9))
        out.append([vocab[int(rng.integers(len(vocab)))] for _ in range(k)])
    return out


def write_conll(path: Path, sents) -> Path:
    path.write_text("-DOCSTART- O\n\n" + "\n\n".join("\n".join(f"{w} X {t}" for w, t in s) for s in sents) + "\n")
    return path


def labelled_texts(n: int, seed: int):
    """label TAB text: 'pos' when a sentence holds 'good' or 'great', else 'neg'."""
    rng = np.random.default_rng(seed)
    filler = [f"t{i}" for i in range(20)]
    rows = []
    for i in range(n):
        words = [filler[int(rng.integers(20))] for _ in range(int(rng.integers(3, 8)))]
        pos = i % 2 == 0
        if pos:
            words[int(rng.integers(len(words)))] = "good" if rng.random() < 0.5 else "great"
        rows.append(("pos" if pos else "neg", " ".join(words)))
    return rows


def idx_bytes(arr) -> bytes:
    arr = np.asarray(arr)
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.float32): 0x0D}[arr.dtype]
    return bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + \
        arr.astype(arr.dtype.newbyteorder(">")).tobytes()


# --------------------------------------------------------------------------- formats learn

def test_image_folder_pngs_learn(tmp_path, capsys):
    make_images(tmp_path / "pictures")
    rc, out, err = run(capsys, MODELS / "tiny_cnn.net", "--data", f"images:{tmp_path / 'pictures'}",
                       "--epochs", 4, "--save", tmp_path / "w.npz")
    assert rc == 0, err
    assert "training TinyCnn: 60 samples" in out
    assert final_accuracy(out) >= 0.9
    z = np.load(tmp_path / "w.npz", allow_pickle=False)
    assert list(z["data/classes"]) == ["blue", "green", "red"]


def test_npz_learns_and_normalize_auto_stores_stats(tmp_path, capsys):
    # Features around 5000 with a spread of 1000: unlearnable unscaled at this lr, easy normalised.
    xtr, ytr = blobs(150, 0, offset=5000, scale=1000)
    xte, yte = blobs(60, 1, offset=5000, scale=1000)
    np.savez(tmp_path / "blobs.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    rc, out, err = run(capsys, MODELS / "tiny_mlp.net", "--data", f"npz:{tmp_path / 'blobs.npz'}",
                       "--normalize", "auto", "--save", tmp_path / "w.npz")
    assert rc == 0, err
    assert final_accuracy(out) >= 0.9
    z = np.load(tmp_path / "w.npz", allow_pickle=False)
    assert np.allclose(z["data/mean"], xtr.astype(np.float64).mean(axis=0), rtol=1e-5)
    assert np.allclose(z["data/std"], xtr.astype(np.float64).std(axis=0), rtol=1e-4)
    # --eval-only --load reuses the stored statistics (without --normalize): same accuracy.
    rc, out2, err = run(capsys, MODELS / "tiny_mlp.net", "--data", f"npz:{tmp_path / 'blobs.npz'}",
                        "--load", tmp_path / "w.npz", "--eval-only")
    assert rc == 0, err
    assert f"{100 * final_accuracy(out):.2f}%" in out2


def test_csv_with_named_label_column_learns(tmp_path, capsys):
    names = ["setosa", "versicolor", "virginica"]
    for split, (n, seed) in {"train": (150, 0), "test": (60, 1)}.items():
        x, y = blobs(n, seed)
        lines = ["species,a,b,c,d"] + [f"{names[k]},{','.join(f'{v:.4f}' for v in row)}" for row, k in zip(x, y)]
        (tmp_path / f"iris_{split}.csv").write_text("\n".join(lines) + "\n")
    rc, out, err = run(capsys, MODELS / "tiny_mlp.net", "--data", f"csv:{tmp_path / 'iris_train.csv'}",
                       "--label-column", "species", "--save", tmp_path / "w.npz")
    assert rc == 0, err
    assert final_accuracy(out) >= 0.9
    assert list(np.load(tmp_path / "w.npz")["data/classes"]) == names


def test_idx_directory_of_another_dataset_trains(tmp_path, capsys):
    """MNIST file names, other content (4 features): trains, no checksum in a user's directory."""
    d = tmp_path / "mnist"
    d.mkdir()
    xtr, ytr = blobs(150, 0)
    xte, yte = blobs(60, 1)
    for base, arr in (("train-images-idx3-ubyte", xtr), ("train-labels-idx1-ubyte", ytr.astype(np.uint8)),
                      ("t10k-images-idx3-ubyte", xte), ("t10k-labels-idx1-ubyte", yte.astype(np.uint8))):
        (d / (base + ".gz")).write_bytes(gzip.compress(idx_bytes(arr)))
    rc, out, err = run(capsys, MODELS / "tiny_mlp.net", "--data", "mnist", "--data-dir", tmp_path)
    assert rc == 0, err
    assert final_accuracy(out) >= 0.9


@pytest.mark.parametrize("model", ["slot_tagger", "bilstm_tagger"])
def test_conll_taggers_learn(tmp_path, capsys, model):
    write_conll(tmp_path / "train.conll", tagged_sentences(160, 0))
    test = tagged_sentences(60, 1)
    write_conll(tmp_path / "test.conll", test)
    tags = [t for s in test for _, t in s]
    majority = max(tags.count(t) for t in set(tags)) / len(tags)
    rc, out, err = run(capsys, REPO / "models" / f"{model}.net", "--data", f"conll:{tmp_path}",
                       "--epochs", 3, "--lr", 0.01, "--save", tmp_path / "w.npz")
    assert rc == 0, err
    acc = final_accuracy(out)
    # Accuracy counts real tokens only: the denominator is the corpus's token count.
    assert f"/{len(tags)})" in out
    assert acc >= 0.9 and acc > majority + 0.3, (acc, majority)
    z = np.load(tmp_path / "w.npz", allow_pickle=False)
    assert list(z["data/vocab"][:2]) == ["<pad>", "<unk>"] and list(z["data/classes"]) == ["NAME", "NUM", "O"]


def test_label_tab_text_classifier_learns_with_val_split(tmp_path, capsys):
    for split, (n, seed) in {"train": (200, 0), "test": (60, 1)}.items():
        (tmp_path / f"reviews.{split}.tsv").write_text(
            "".join(f"{lab}\t{text}\n" for lab, text in labelled_texts(n, seed)))
    rc, out, err = run(capsys, MODELS / "text_classifier.net", "--data", f"tsv:{tmp_path / 'reviews.train.tsv'}",
                       "--val-split", 0.2)
    assert rc == 0, err
    assert "training TextClassifier: 160 samples" in out
    assert re.search(r"epoch 4/4: validation accuracy [0-9.]+% \(\d+/40\)", out)
    assert final_accuracy(out) >= 0.9


def test_train_block_dataset_string_and_flag_override(tmp_path, capsys, monkeypatch):
    # The model says dataset = "images:pictures": relative to the .net file, not the cwd.
    (tmp_path / "m").mkdir()
    model = tmp_path / "m" / "tiny_cnn.net"
    model.write_text((MODELS / "tiny_cnn.net").read_text())
    make_images(tmp_path / "m" / "pictures", per_class=(4, 2))
    make_images(tmp_path / "pictures", per_class=(1, 1))
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(capsys, model, "--epochs", 1)
    assert rc == 0, err
    assert "12 samples" in out
    # --data overrides it, relative to the current directory.
    make_images(tmp_path / "other", per_class=(3, 2))
    rc, out, err = run(capsys, model, "--epochs", 1, "--data", "images:other")
    assert rc == 0, err
    assert "9 samples" in out


# --------------------------------------------------------------------------- bad data

def refused(capsys, *argv) -> str:
    rc, out, err = run(capsys, *argv)
    assert rc == 1, (out, err)
    assert "Traceback" not in err
    return err


def test_wrong_image_size_names_the_file(tmp_path, capsys):
    from PIL import Image

    make_images(tmp_path / "p", per_class=(2, 1))
    bad = tmp_path / "p" / "train" / "green" / "001.png"
    Image.new("RGB", (9, 8)).save(bad)
    err = refused(capsys, MODELS / "tiny_cnn.net", "--data", f"images:{tmp_path / 'p'}")
    assert str(bad) in err and "9x8" in err and "8x8" in err
    Image.new("L", (8, 8)).save(bad)
    err = refused(capsys, MODELS / "tiny_cnn.net", "--data", f"images:{tmp_path / 'p'}")
    assert str(bad) in err and "1 channel" in err and "expects 3" in err


def test_label_out_of_range_names_the_sample(tmp_path, capsys):
    xtr, ytr = blobs(30, 0)
    ytr[17] = 3  # the model has 3 outputs
    xte, yte = blobs(9, 1)
    np.savez(tmp_path / "d.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    err = refused(capsys, MODELS / "tiny_mlp.net", "--data", f"npz:{tmp_path / 'd.npz'}")
    assert "d.npz: x_train" in err and "sample 17" in err and "label 3" in err and "0..2" in err


def test_ragged_csv_row_names_the_line(tmp_path, capsys):
    (tmp_path / "train.csv").write_text("a,b,c,d,label\n1,2,3,4,0\n1,2,3,0\n")
    (tmp_path / "test.csv").write_text("a,b,c,d,label\n1,2,3,4,0\n")
    err = refused(capsys, MODELS / "tiny_mlp.net", "--data", f"csv:{tmp_path}")
    assert f"{tmp_path / 'train.csv'}:3: ragged row: 4 fields, expected 5" in err


def test_bad_number_in_csv_names_line_and_column(tmp_path, capsys):
    (tmp_path / "train.csv").write_text("a,b,c,d,label\n1,2,3,4,0\n1,x,3,4,1\n")
    (tmp_path / "test.csv").write_text("a,b,c,d,label\n1,2,3,4,0\n")
    err = refused(capsys, MODELS / "tiny_mlp.net", "--data", f"csv:{tmp_path}")
    assert f"train.csv:3: column 'b': 'x' is not a finite number" in err


@pytest.mark.parametrize("fmt", ["npz", "csv", "images", "conll", "tsv"])
def test_empty_split_is_refused(tmp_path, capsys, fmt):
    model = MODELS / "tiny_mlp.net"
    if fmt == "npz":
        x, y = blobs(6, 0)
        np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:0], y_test=y[:0])
        spec, where = f"npz:{tmp_path / 'd.npz'}", "d.npz"
    elif fmt == "csv":
        (tmp_path / "train.csv").write_text("a,b,c,d,label\n1,2,3,4,0\n")
        (tmp_path / "test.csv").write_text("a,b,c,d,label\n")
        spec, where = f"csv:{tmp_path}", "test.csv"
    elif fmt == "images":
        make_images(tmp_path / "p", per_class=(2, 0))
        spec, where, model = f"images:{tmp_path / 'p'}", str(tmp_path / "p" / "test"), MODELS / "tiny_cnn.net"
    elif fmt == "conll":
        write_conll(tmp_path / "train.conll", tagged_sentences(5, 0))
        (tmp_path / "test.conll").write_text("\n\n")
        spec, where, model = f"conll:{tmp_path}", "test.conll", REPO / "models" / "slot_tagger.net"
    else:
        (tmp_path / "train.tsv").write_text("pos\ta b\n")
        (tmp_path / "test.tsv").write_text("")
        spec, where, model = f"tsv:{tmp_path}", "test.tsv", MODELS / "text_classifier.net"
    err = refused(capsys, model, "--data", spec)
    assert where in err and ("empty" in err or "no data rows" in err), err


def test_conll_errors_name_the_line(tmp_path, capsys):
    model = REPO / "models" / "slot_tagger.net"
    (tmp_path / "train.conll").write_text("a O\nb O\n\nc\n")
    (tmp_path / "test.conll").write_text("a O\n")
    err = refused(capsys, model, "--data", f"conll:{tmp_path}")
    assert f"{tmp_path / 'train.conll'}:4: expected a token and a tag" in err
    (tmp_path / "train.conll").write_text("a O\nb O\n")
    (tmp_path / "test.conll").write_text("a O\n\nb O\nc B-X\n")
    err = refused(capsys, model, "--data", f"conll:{tmp_path}")
    assert f"{tmp_path / 'test.conll'}:4: tag 'B-X' does not occur in the training split" in err


def test_tsv_without_tab_names_the_line(tmp_path, capsys):
    (tmp_path / "train.tsv").write_text("pos\ta b\nneg c d\n")
    (tmp_path / "test.tsv").write_text("pos\ta\n")
    err = refused(capsys, MODELS / "text_classifier.net", "--data", f"tsv:{tmp_path}")
    assert f"{tmp_path / 'train.tsv'}:2: expected 'label<TAB>text'" in err


def test_dataset_that_cannot_feed_the_model_is_located(tmp_path, capsys):
    x, y = blobs(6, 0)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    err = refused(capsys, MODELS / "tiny_cnn.net", "--data", f"npz:{tmp_path / 'd.npz'}")
    assert "tiny_cnn.net:" in err and "[E701]" in err and "shape (4,)" in err


def test_pickled_npz_is_refused(tmp_path, capsys):
    x, y = blobs(6, 0)
    np.savez(tmp_path / "d.npz", x_train=np.array([object()] * 6), y_train=y, x_test=x, y_test=y)
    err = refused(capsys, MODELS / "tiny_mlp.net", "--data", f"npz:{tmp_path / 'd.npz'}")
    assert "x_train" in err and "pickled" in err


# --------------------------------------------------------------------------- issue 17

def test_idx_limit_bounds_memory_before_allocating(tmp_path):
    """A gzipped IDX set claiming 2.7 million images reads only --limit-train's 64."""
    d = tmp_path / "big"
    d.mkdir()
    n = 2_700_000
    # Headers claim n samples; the bodies hold only 100 (reading stops at the limit).
    for base, dims in (("train-images-idx3-ubyte", (n, 28, 28)), ("train-labels-idx1-ubyte", (n,)),
                       ("t10k-images-idx3-ubyte", (10, 28, 28)), ("t10k-labels-idx1-ubyte", (10,))):
        body = np.zeros((min(dims[0], 100), *dims[1:]), np.uint8)
        head = bytes([0, 0, 8, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
        (d / (base + ".gz")).write_bytes(gzip.compress(head + body.tobytes()))
    ds = data.load_idx_dir(d, limit_train=64, max_bytes=10**6)
    assert ds.x_train.shape == (64, 28, 28) and ds.y_train.shape == (64,)
    with pytest.raises(DataError) as info:
        data.load_idx_dir(d, max_bytes=10**9)
    msg = str(info.value)
    assert str(d) in msg and "2.0 GiB" in msg and "953.7 MiB" in msg and "--limit-train" in msg


def test_idx_with_255_dimensions_is_a_data_error(tmp_path):
    path = tmp_path / "dims"
    path.write_bytes(b"\x00\x00\x08\xff" + b"\x00" * 4 * 255)
    with pytest.raises(DataError) as info:
        data.load_idx(path)
    assert str(path) in str(info.value) and "255 dimensions" in str(info.value)


def test_npz_header_claiming_huge_array_is_refused(tmp_path):
    import zipfile

    x, y = blobs(6, 0)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    # Rewrite x_train's header to claim 10**12 rows.
    with zipfile.ZipFile(tmp_path / "d.npz") as z:
        members = {n: z.read(n) for n in z.namelist()}
    hdr = np.lib.format.header_data_from_array_1_0(x)
    hdr["shape"] = (10**12, 4)
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, hdr)
    members["x_train.npy"] = buf.getvalue() + x.tobytes()
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    with pytest.raises(DataError) as info:
        data.load_spec(f"npz:{tmp_path / 'd.npz'}")
    assert "d.npz" in str(info.value) and "limit" in str(info.value)


def test_escape_sequences_in_names_are_not_printed_raw(tmp_path, capsys):
    d = tmp_path / "evil\x1b[2J\x1b]0;title\x07"
    d.mkdir()
    (d / "train.csv").write_text("a,b,c,d,label\n1,2,3,4,0\n1,2,3\n")
    (d / "test.csv").write_text("a,b,c,d,label\n1,2,3,4,0\n")
    err = refused(capsys, MODELS / "tiny_mlp.net", "--data", f"csv:{d}")
    assert "\x1b" not in err and "\x07" not in err
    assert "evil?[2J?]0;title?" in err and "ragged row" in err


@pytest.mark.parametrize("fmt", ["csv", "conll", "npz", "idx"])
def test_fifo_as_data_file_is_refused_not_read(tmp_path, capsys, fmt):
    """Opening a FIFO for reading blocks forever: every loader refuses it first."""
    import os

    model = {"conll": REPO / "models" / "slot_tagger.net"}.get(fmt, MODELS / "tiny_mlp.net")
    if fmt == "idx":
        d = tmp_path / "mnist"
        d.mkdir()
        for base in data.MNIST_FILES.values():
            os.mkfifo(d / base)
        spec, fifo = f"idx:{d}", d / "train-images-idx3-ubyte"
    elif fmt == "npz":
        fifo = tmp_path / "d.npz"
        os.mkfifo(fifo)
        spec = f"npz:{fifo}"
    else:
        fifo = tmp_path / f"train.{fmt}"
        os.mkfifo(fifo)
        (tmp_path / f"test.{fmt}").write_text("")
        spec = f"{fmt}:{fifo}"
    err = refused(capsys, model, "--data", spec)
    assert str(fifo) in err and "not a regular file" in err


def test_csv_over_many_chunks_reads_every_row_in_order(tmp_path):
    from netdsl.data.arrays import read_csv

    x = np.arange(5000 * 3, dtype=np.float32).reshape(5000, 3)
    (tmp_path / "t.csv").write_text("".join(f"{a:g},{b:g},{c:g},{i % 4}\n" for i, (a, b, c) in enumerate(x)))
    got, y, header, classes = read_csv(tmp_path / "t.csv")
    assert header is None and classes is None
    assert np.array_equal(got, x) and np.array_equal(y, np.arange(5000) % 4)
    assert read_csv(tmp_path / "t.csv", limit=10)[0].shape == (10, 3)


@pytest.mark.parametrize("shape, stat_shape", [((40, 5, 6), ()), ((40, 3, 5, 6), (3, 1, 1)), ((40, 7), (7,))])
def test_normalize_auto_is_per_channel(tmp_path, shape, stat_shape):
    rng = np.random.default_rng(0)
    x = (rng.normal(0, 1, shape) * 3 + np.arange(shape[1]).reshape(-1, *[1] * (len(shape) - 2)) * 10)
    x = x.astype(np.float32)
    y = np.zeros(shape[0], np.int64)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:4], y_test=y[:4])
    ds = data.load_spec(f"npz:{tmp_path / 'd.npz'}", normalize="auto")
    assert ds.stats["mean"].shape == stat_shape and ds.stats["std"].shape == stat_shape
    axes = {(): None, (3, 1, 1): (0, 2, 3), (7,): 0}[stat_shape]
    assert np.allclose(ds.stats["mean"], x.astype(np.float64).mean(axis=axes, keepdims=axes is not None)
                       .reshape(stat_shape), rtol=1e-5, atol=1e-4)
    feed = data.Feed("x", "z", 1, "dense", "same", ds.stats["mean"], ds.stats["std"])
    z = feed.batch(x)
    assert np.allclose(z.mean(axis=axes), 0, atol=1e-4) and np.allclose(z.std(axis=axes), 1, atol=1e-3)


def test_plain_runs_write_no_data_entries(tmp_path, capsys):
    """Weights of a run without statistics, vocabulary or class names hold parameters only."""
    x, y = blobs(30, 0)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:6], y_test=y[:6])
    rc, out, err = run(capsys, MODELS / "tiny_mlp.net", "--data", f"npz:{tmp_path / 'd.npz'}", "--epochs", 1,
                       "--save", tmp_path / "w.npz")
    assert rc == 0, err
    assert sorted(np.load(tmp_path / "w.npz").files) == ["dense_1.W", "dense_1.b", "dense_2.W", "dense_2.b"]


def test_kind_is_guessed_from_an_existing_path(tmp_path):
    x, y = blobs(12, 0)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    assert data.load_spec(str(tmp_path / "d.npz")).x_train.shape == (12, 4)
    make_images(tmp_path / "pics", per_class=(1, 1))
    assert data.load_spec(str(tmp_path / "pics")).x_train.shape == (3, 3, 8, 8)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "train.tsv").write_text("a\tx y\n")
    (tmp_path / "t" / "test.tsv").write_text("b\tz\n")
    with pytest.raises(DataError, match="does not occur in the training split"):
        data.load_spec(str(tmp_path / "t"))
    with pytest.raises(DataError, match="unknown kind 'parquet'"):
        data.load_spec("parquet:x.pq")
    with pytest.raises(DataError, match="--label-column applies to csv"):
        data.load_spec(str(tmp_path / "d.npz"), label_column="y")


def test_byte_order_mark_and_line_numbers(tmp_path):
    from netdsl.data.arrays import read_csv
    from netdsl.data.text import read_labelled_text

    (tmp_path / "b.csv").write_bytes("\ufefflabel,a\n1,2\n".encode())
    assert read_csv(tmp_path / "b.csv")[1].tolist() == [1]
    # \f and \u2028 do not end lines: the error is on line 3 as an editor shows it.
    (tmp_path / "t.tsv").write_bytes("\ufeffpos\ta\x0cb\nneg\tc\u2028d\r\nno tab here\n".encode())
    with pytest.raises(DataError, match=r"t\.tsv:3: expected 'label<TAB>text'"):
        read_labelled_text(tmp_path / "t.tsv")
    assert read_labelled_text(tmp_path / "t.tsv", limit=2)[0] == ("pos", ["a", "b"], 1)


def test_damaged_npz_and_png_give_only_data_errors(tmp_path):
    """Every truncation and many bit flips: a DataError naming the file, never another exception."""
    import io

    from PIL import Image

    x, y = blobs(6, 0)
    buf = io.BytesIO()
    np.savez(buf, x_train=x, y_train=y, x_test=x, y_test=y)
    blob = buf.getvalue()
    path = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    damaged = [blob[:i] for i in range(0, len(blob), 7)]
    for i in rng.integers(0, len(blob), 300):
        b = bytearray(blob)
        b[i] ^= 0xFF
        damaged.append(bytes(b))
    for bad in damaged:
        path.write_bytes(bad)
        try:
            data.load_spec(f"npz:{path}")
        except DataError as e:
            assert str(path) in str(e)

    make_images(tmp_path / "p", per_class=(1, 1))
    png = tmp_path / "p" / "train" / "red" / "000.png"
    good = png.read_bytes()
    for cut in range(0, len(good) - 20, 5):  # missing only the last CRC and IEND, the pixels are all there
        png.write_bytes(good[:cut])
        with pytest.raises(DataError) as info:
            data.load_spec(f"images:{tmp_path / 'p'}")
        assert str(png) in str(info.value)
    Image.new("RGB", (8, 8)).save(png)


def test_npz_validation_split_is_used_and_val_split_refused(tmp_path, capsys):
    xtr, ytr = blobs(90, 0)
    xv, yv = blobs(30, 2)
    np.savez(tmp_path / "d.npz", x_train=xtr, y_train=ytr, x_test=xtr[:9], y_test=ytr[:9], x_val=xv, y_val=yv)
    rc, out, err = run(capsys, MODELS / "tiny_mlp.net", "--data", f"npz:{tmp_path / 'd.npz'}", "--epochs", 2)
    assert rc == 0, err
    assert re.search(r"epoch 2/2: validation accuracy [0-9.]+% \(\d+/30\)", out)
    err = refused(capsys, MODELS / "tiny_mlp.net", "--data", f"npz:{tmp_path / 'd.npz'}", "--val-split", 0.1)
    assert "validation split already" in err
    with pytest.raises(SystemExit) as e:
        run(capsys, MODELS / "tiny_mlp.net", "--data", f"npz:{tmp_path / 'd.npz'}", "--val-split", 1.5)
    assert e.value.code == 2
