"""`netdsl predict`: train with `netdsl run --save`, then predict on new data in each format;
the predictions are compared with the known labels (numbers, not only that it runs)."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from netdsl.cli import main
from test_data_formats import (MODELS, REPO, blobs, labelled_texts, make_images, tagged_sentences,
                               write_conll)


def cli(capsys, *argv):
    rc = main([*map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def train(capsys, model, spec, weights, *extra):
    rc, out, err = cli(capsys, "run", model, "--data", spec, "--save", weights, "--no-progress", *extra)
    assert rc == 0, err


def read_table(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """tiny_mlp trained on normalised npz blobs (features around 5000)."""
    d = tmp_path_factory.mktemp("mlp")
    xtr, ytr = blobs(150, 0, offset=5000, scale=1000)
    xte, yte = blobs(60, 1, offset=5000, scale=1000)
    np.savez(d / "blobs.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    rc = main(["run", str(MODELS / "tiny_mlp.net"), "--data", f"npz:{d / 'blobs.npz'}", "--normalize", "auto",
               "--save", str(d / "w.npz"), "--no-progress"])
    assert rc == 0
    return d


def test_predict_npz_uses_stored_statistics(mlp, tmp_path, capsys):
    x, y = blobs(30, 7, offset=5000, scale=1000)
    np.savez(tmp_path / "new.npz", x=x)
    rc, out, err = cli(capsys, "predict", MODELS / "tiny_mlp.net", "--load", mlp / "w.npz", tmp_path / "new.npz",
                       "-o", tmp_path / "p.csv")
    assert rc == 0, err
    rows = read_table(tmp_path / "p.csv")
    assert [r["input"] for r in rows[:2]] == [f"{tmp_path / 'new.npz'}[0]", f"{tmp_path / 'new.npz'}[1]"]
    pred = np.array([int(r["class"]) for r in rows])
    assert (pred == y).mean() >= 0.9  # without the stored mean/std this would be chance
    probs = np.array([float(r["probability"]) for r in rows])
    assert ((probs > 1 / 3) & (probs <= 1)).all()
    # .npy output: the probabilities, rows summing to 1, argmax = the CSV's classes.
    rc, _, err = cli(capsys, "predict", MODELS / "tiny_mlp.net", "--load", mlp / "w.npz", tmp_path / "new.npz",
                     "-o", tmp_path / "p.npy")
    assert rc == 0, err
    p = np.load(tmp_path / "p.npy")
    assert p.shape == (30, 3) and np.allclose(p.sum(axis=1), 1, atol=1e-5)
    assert np.array_equal(p.argmax(axis=1), pred) and np.allclose(p.max(axis=1), probs, atol=1e-6)


def test_predict_csv_drops_label_column_and_prints(mlp, tmp_path, capsys):
    x, y = blobs(12, 8, offset=5000, scale=1000)
    lines = ["a,b,c,d,label"] + [",".join(f"{v:.3f}" for v in row) + f",{k}" for row, k in zip(x, y)]
    (tmp_path / "new.csv").write_text("\n".join(lines) + "\n")
    rc, out, err = cli(capsys, "predict", MODELS / "tiny_mlp.net", "--load", mlp / "w.npz", tmp_path / "new.csv",
                       "--label-column", "label")
    assert rc == 0, err
    table = out.splitlines()
    assert table[0] == "input,class,probability" and len(table) == 13
    pred = np.array([int(line.split(",")[-2]) for line in table[1:]])
    assert (pred == y).mean() >= 0.9


def test_predict_images_file_and_folder(tmp_path, capsys):
    make_images(tmp_path / "pics")
    train(capsys, MODELS / "tiny_cnn.net", f"images:{tmp_path / 'pics'}", tmp_path / "w.npz", "--epochs", 4)
    test = tmp_path / "pics" / "test"
    rc, out, err = cli(capsys, "predict", MODELS / "tiny_cnn.net", "--load", tmp_path / "w.npz", test,
                       test / "red" / "000.png", "-o", tmp_path / "p.csv")
    assert rc == 0, err
    rows = read_table(tmp_path / "p.csv")
    assert len(rows) == 31
    truth = [Path(r["input"]).parent.name for r in rows]
    hits = sum(r["class"] == t for r, t in zip(rows, truth))  # class names come from the weights file
    assert hits / len(rows) >= 0.9
    assert rows[-1]["input"] == str(test / "red" / "000.png")


def test_predict_tagger_on_sentences(tmp_path, capsys):
    write_conll(tmp_path / "train.conll", tagged_sentences(160, 0))
    write_conll(tmp_path / "test.conll", tagged_sentences(20, 1))
    train(capsys, REPO / "models" / "slot_tagger.net", f"conll:{tmp_path}", tmp_path / "w.npz",
          "--epochs", 3, "--lr", 0.01)
    (tmp_path / "new.txt").write_text("ann saw n3 w2\n\nbob w5 unseenword\n")
    rc, out, err = cli(capsys, "predict", REPO / "models" / "slot_tagger.net", "--load", tmp_path / "w.npz",
                       tmp_path / "new.txt", "-o", tmp_path / "tags.csv")
    assert rc == 0, err
    rows = read_table(tmp_path / "tags.csv")
    assert [(r["input"], r["position"], r["token"]) for r in rows] == [
        (f"{tmp_path / 'new.txt'}:1", "0", "ann"), (f"{tmp_path / 'new.txt'}:1", "1", "saw"),
        (f"{tmp_path / 'new.txt'}:1", "2", "n3"), (f"{tmp_path / 'new.txt'}:1", "3", "w2"),
        (f"{tmp_path / 'new.txt'}:3", "0", "bob"), (f"{tmp_path / 'new.txt'}:3", "1", "w5"),
        (f"{tmp_path / 'new.txt'}:3", "2", "unseenword")]
    tags = {r["token"]: r["class"] for r in rows}
    assert tags["ann"] == "NAME" and tags["bob"] == "NAME" and tags["n3"] == "NUM" and tags["w2"] == "O"


def test_predict_text_classifier(tmp_path, capsys):
    for split, (n, seed) in {"train": (200, 0), "test": (40, 1)}.items():
        (tmp_path / f"{split}.tsv").write_text("".join(f"{lab}\t{t}\n" for lab, t in labelled_texts(n, seed)))
    train(capsys, MODELS / "text_classifier.net", f"tsv:{tmp_path}", tmp_path / "w.npz")
    rows = labelled_texts(30, 5)
    (tmp_path / "new.txt").write_text("".join(t + "\n" for _, t in rows))
    rc, out, err = cli(capsys, "predict", MODELS / "text_classifier.net", "--load", tmp_path / "w.npz",
                       tmp_path / "new.txt")
    assert rc == 0, err
    got = [line.split(",")[1] for line in out.splitlines()[1:]]
    assert np.mean([g == lab for g, (lab, _) in zip(got, rows)]) >= 0.9


def test_predict_refuses_to_overwrite_an_input_and_bad_outputs(mlp, tmp_path, capsys):
    x, _ = blobs(3, 1)
    np.savez(tmp_path / "new.npz", x=x)
    before = (tmp_path / "new.npz").read_bytes()
    rc, _, err = cli(capsys, "predict", MODELS / "tiny_mlp.net", "--load", mlp / "w.npz", tmp_path / "new.npz",
                     "-o", mlp / "w.npz")
    assert rc == 2 and ".csv or .npy" in err
    (tmp_path / "x.csv").write_text("1,2,3,4\n")
    rc, _, err = cli(capsys, "predict", MODELS / "tiny_mlp.net", "--load", mlp / "w.npz", tmp_path / "x.csv",
                     "-o", tmp_path / "x.csv")
    assert rc == 1 and "is also an input" in err and "[E608]" in err
    assert (tmp_path / "x.csv").read_text() == "1,2,3,4\n" and (tmp_path / "new.npz").read_bytes() == before
    rc, _, err = cli(capsys, "predict", MODELS / "tiny_mlp.net", "--load", mlp / "w.npz", tmp_path / "new.npz",
                     "-o", tmp_path / "missing" / "p.csv")
    assert rc == 1 and "does not exist" in err


def test_predict_bad_inputs_are_located(mlp, tmp_path, capsys):
    (tmp_path / "bad.csv").write_text("1,2,3,4\n1,2,3\n")
    rc, _, err = cli(capsys, "predict", MODELS / "tiny_mlp.net", "--load", mlp / "w.npz", tmp_path / "bad.csv")
    assert rc == 1 and f"{tmp_path / 'bad.csv'}:2: ragged row" in err
    (tmp_path / "wide.csv").write_text("1,2,3,4,5\n")
    rc, _, err = cli(capsys, "predict", MODELS / "tiny_mlp.net", "--load", mlp / "w.npz", tmp_path / "wide.csv")
    assert rc == 1 and "shape (5,)" in err
    rc, _, err = cli(capsys, "predict", MODELS / "tiny_mlp.net", "--load", mlp / "w.npz", tmp_path / "nothing.npz")
    assert rc == 1 and "nothing.npz: file not found" in err
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    rc, _, err = cli(capsys, "predict", MODELS / "tiny_mlp.net", "--load", mlp / "w.npz", fifo)
    assert rc == 1 and "not a regular file" in err


def test_predict_npy_input_and_conll_input(mlp, tmp_path, capsys):
    x, y = blobs(20, 9, offset=5000, scale=1000)
    np.save(tmp_path / "x.npy", x)
    rc, out, err = cli(capsys, "predict", MODELS / "tiny_mlp.net", "--load", mlp / "w.npz", tmp_path / "x.npy")
    assert rc == 0, err
    pred = np.array([int(line.split(",")[1]) for line in out.splitlines()[1:]])
    assert (pred == y).mean() >= 0.9
    rc, _, err = cli(capsys, "predict", MODELS / "tiny_mlp.net", "--load", mlp / "w.npz", tmp_path / "x.txt")
    assert rc == 1 and "cannot tell what this is" in err


def test_resume_on_token_data_matches_uninterrupted_run(tmp_path, capsys):
    """A tagging run checkpointed after epoch 1 and resumed ends with the same weights."""
    write_conll(tmp_path / "train.conll", tagged_sentences(48, 0))
    write_conll(tmp_path / "test.conll", tagged_sentences(8, 1))
    model = REPO / "models" / "slot_tagger.net"
    common = ["--data", f"conll:{tmp_path}", "--lr", "0.01", "--no-progress"]
    assert main(["run", str(model), *common, "--epochs", "2", "--save", str(tmp_path / "a.npz")]) == 0
    assert main(["run", str(model), *common, "--epochs", "1", "--checkpoint", str(tmp_path / "ck.npz")]) == 0
    assert main(["run", str(model), *common, "--epochs", "2", "--checkpoint", str(tmp_path / "ck.npz"),
                 "--resume", "--save", str(tmp_path / "b.npz")]) == 0
    capsys.readouterr()
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        assert np.array_equal(a[k], b[k]), k
