"""The generated scripts of all five targets read .npz, CSV and image-folder datasets (--data KIND:PATH),
learn from them, and predict (--predict) exactly what `netdsl predict` does with the same weights.

The datasets are made here, small, deterministic and learnable. Each script starts from canonical
initial weights that carry the data statistics of a native `netdsl run --normalize auto` (data/mean,
data/std; the CSV features sit around 5000 with a spread of 1000, unlearnable unless the script
applies them), trains one epoch, and must reach an accuracy well above chance (1/3). Then
`--predict` with weights trained natively (holding data/mean, data/std, data/classes) is compared
with `netdsl predict`: probabilities to 1e-5 and the class column (names from the weights file).
"""
from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from netdsl import conformance as conf
from netdsl.cli import main
from netdsl.emit.base import emit
from netdsl.exec.weights import init_params, save_weights
from netdsl.frontend import load

MODELS = Path(__file__).resolve().parent / "data_models"
TARGETS = {"pytorch": "pytorch", "keras": "keras/torch", "tf-estimator": "tf-estimator", "gluon": "gluon",
           "cntk": "cntk"}
NAMES = ["setosa", "versicolor", "virginica"]


def blobs(n, seed, offset=0.0, scale=1.0):
    """Three well-separated Gaussian blobs in 4 dimensions, classes in turn."""
    rng = np.random.default_rng(seed)
    centres = np.array([[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0]], np.float32)
    y = np.arange(n) % 3
    x = centres[y] + rng.normal(0, 0.5, (n, 4)).astype(np.float32)
    return (x * scale + offset).astype(np.float32), y.astype(np.int64)


def make_images(root, per_class=(80, 10), seed=0):
    """8x8 RGB PNGs: class k has a bright channel k, the others dark, with noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "test"), per_class):
        for k, name in enumerate(("blue", "green", "red")):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                px = rng.integers(0, 90, (8, 8, 3), dtype=np.uint8)
                px[..., k] = rng.integers(160, 256, (8, 8), dtype=np.uint8)
                Image.fromarray(px, "RGB").save(d / f"{i:03d}.png")


def native(capsys, *argv):
    rc = main([*map(str, argv)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    """format -> (model, --data spec, predict inputs, script flags, native run's flags)."""
    root = tmp_path_factory.mktemp("data")
    x, y = blobs(600, 0)
    xt, yt = blobs(150, 1)
    np.savez(root / "blobs.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    for split, (n, seed) in {"train": (600, 2), "test": (150, 3)}.items():
        x, y = blobs(n, seed, offset=5000, scale=1000)
        rows = ["a,b,species,c,d"] + [f"{r[0]:.2f},{r[1]:.2f},{NAMES[k]},{r[2]:.2f},{r[3]:.2f}" for r, k in zip(x, y)]
        (root / f"iris_{split}.csv").write_text("\n".join(rows) + "\n")
    make_images(root / "pictures")
    return {
        "npz": ("tiny_mlp", f"npz:{root / 'blobs.npz'}", [root / "blobs.npz"], [], ["--normalize", "auto"]),
        "csv": ("tiny_mlp", f"csv:{root / 'iris_train.csv'}", [root / "iris_test.csv"],
                ["--label-column", "species"], ["--normalize", "auto"]),
        # the model scales pixels itself (scale=1/255); the weights carry the class names
        "images": ("tiny_cnn", f"images:{root / 'pictures'}", [root / "pictures" / "test"], [], []),
    }


def script_python(target):
    col = next(c for c in conf.COLUMNS if c.name == TARGETS[target])
    python, why = col.python()
    if python is None:
        pytest.skip(f"{target.upper()} NOT EXECUTED: {why}")
    return python, col.env


def run_script(target, script, tmp_path, *argv):
    python, env = script_python(target)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_HOME=str(tmp_path / "keras-home"),
               PYTHONDONTWRITEBYTECODE="1", **env)
    proc = subprocess.run([python, str(script), *map(str, argv)], capture_output=True, text=True, timeout=600,
                          env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def table(text):
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["input", "class", "probability"], rows[:2]
    return rows[1:]


@pytest.mark.parametrize("fmt", ["npz", "csv", "images"])
@pytest.mark.parametrize("target", list(TARGETS))
def test_script_learns_and_predicts_as_netdsl(target, fmt, formats, tmp_path, capsys):
    model, spec, inputs, extra, normalize = formats[fmt]
    python, _ = script_python(target)  # skips before any work when the target's venv is missing
    if fmt == "images" and subprocess.run([python, "-c", "import PIL"], capture_output=True).returncode:
        pytest.skip(f"{target.upper()} images NOT EXECUTED: no Pillow in {python}")
    net = MODELS / f"{model}.net"
    graph = load(str(net))
    trained = tmp_path / "native.npz"
    native(capsys, "run", net, "--data", spec, *extra, *normalize, "--epochs", 1, "--save", trained, "--no-progress")
    with np.load(trained, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files if k.startswith("data/")}
    assert ("data/mean" in data) == bool(normalize) and ("data/classes" in data) == (fmt != "npz")
    init = tmp_path / "init.npz"
    save_weights(init, init_params(graph, 0))
    with np.load(init, allow_pickle=False) as z:
        params = {k: z[k] for k in z.files}
    np.savez(init, **params, **data)  # untrained, with the data statistics

    script = tmp_path / f"{model}_{target}.py"
    script.write_text(emit(graph, target))
    out = run_script(target, script, tmp_path, "--data", spec, *extra, "--epochs", 1, "--init", init,
                     "--out-dir", tmp_path / "out")
    accuracy = [float(a) for a in re.findall(r"test accuracy ([0-9.]+)", out)]
    assert accuracy and accuracy[-1] >= 0.8, out
    assert (tmp_path / "out" / f"{graph.name}.npz").exists()

    # One --predict run each: the printed table for images (class names from the weights file,
    # probabilities printed to 6 decimals), the probabilities as .npy for the others.
    flags = ["--label-column", "species"] if fmt == "csv" else []
    if fmt == "images":
        printed = table(run_script(target, script, tmp_path, "--init", trained, "--predict", *inputs, *flags))
        expected = table(native(capsys, "predict", net, "--load", trained, *inputs, *flags))
        assert [r[:2] for r in printed] == [r[:2] for r in expected]
        assert {r[1] for r in printed} <= {"blue", "green", "red"}
        np.testing.assert_allclose([float(r[2]) for r in printed], [float(r[2]) for r in expected], atol=1e-5)
        return
    run_script(target, script, tmp_path, "--init", trained, "--predict", *inputs, *flags, "-o", tmp_path / "s.npy")
    native(capsys, "predict", net, "--load", trained, *inputs, *flags, "-o", tmp_path / "n.npy")
    got, want = np.load(tmp_path / "s.npy"), np.load(tmp_path / "n.npy")
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_script_refuses_bad_data_naming_the_file(formats, tmp_path):
    """A ragged CSV row and a label out of range stop the script with the file (and line), exit 1."""
    script = tmp_path / "mlp.py"
    script.write_text(emit(load(str(MODELS / "tiny_mlp.net")), "pytorch"))
    (tmp_path / "train.csv").write_text("a,b,c,d,label\n1,2,3,4,0\n1,2,3,1\n")
    (tmp_path / "test.csv").write_text("a,b,c,d,label\n1,2,3,4,0\n")
    proc = subprocess.run([sys.executable, str(script), "--data", f"csv:{tmp_path}"], capture_output=True,
                          text=True, timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{tmp_path / 'train.csv'}:3: ragged row: 4 fields, expected 5 (as in the header)" in proc.stderr
    x, y = blobs(10, 0)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y + 1, x_test=x, y_test=y)
    proc = subprocess.run([sys.executable, str(script), "--data", f"npz:{tmp_path / 'd.npz'}"], capture_output=True,
                          text=True, timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "sample 2: label 3 is out of range for the model's 3 output classes (labels must be 0..2)" in proc.stderr


def test_script_without_pillow_says_so(formats, tmp_path):
    """Pillow is imported only for images; a venv without it gets a message, not a traceback."""
    python = os.environ.get("NETDSL_LEGACY_PYTHON")
    if not python or not os.path.exists(python):
        pytest.skip("no legacy venv")
    if subprocess.run([python, "-c", "import PIL"], capture_output=True).returncode == 0:
        pytest.skip(f"{python} has Pillow")
    model, spec, *_ = formats["images"]
    script = tmp_path / "cnn.py"
    script.write_text(emit(load(str(MODELS / f"{model}.net")), "gluon"))
    proc = subprocess.run([python, str(script), "--data", spec], capture_output=True, text=True, timeout=300,
                          cwd=str(tmp_path))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "reading images needs Pillow: pip install pillow" in proc.stderr


# ------------------------------------------------------------------ token sequences (CoNLL)

def make_conll(root, seed=0):
    """A tagging corpus with a learnable rule: a word's tag is fixed by the word (w0..w29 -> one of
    five tags, unevenly: the majority tag covers about a third of the tokens), sentences of 3 to 9 words.
    Returns the majority baseline of the test split."""
    rng = np.random.default_rng(seed)
    tag_of = ["TAG" + "AAABBCCDEF"[k % 10] for k in range(30)]
    counts = {}
    for split, n in (("train", 320), ("test", 80)):
        lines = []
        for _ in range(n):
            for w in rng.integers(0, 30, rng.integers(3, 10)):
                lines.append(f"w{w} {tag_of[w]}")
                if split == "test":
                    counts[tag_of[w]] = counts.get(tag_of[w], 0) + 1
            lines.append("")
        (root / f"{split}.conll").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return max(counts.values()) / sum(counts.values())


@pytest.mark.parametrize("target", list(TARGETS))
def test_script_trains_the_slot_tagger_on_conll(target, tmp_path, capsys):
    """models/slot_tagger.net on a CoNLL corpus: PyTorch and Keras learn it well above the majority
    baseline; the legacy targets run one short epoch. The saved weights carry the vocabulary and the
    tags (data/vocab, data/classes) built by netdsl's own rule, and --init with them gives the ids back."""
    from netdsl.data import text

    script_python(target)  # skips before any work when the target's venv is missing
    majority = make_conll(tmp_path)
    graph = load(str(Path(__file__).resolve().parents[1] / "models" / "slot_tagger.net"))
    script = tmp_path / f"tagger_{target}.py"
    script.write_text(emit(graph, target))
    spec = f"conll:{tmp_path}"
    full = target in ("pytorch", "keras")
    flags = ["--epochs", 3, "--lr", 0.01] if full else ["--epochs", 1, "--limit-train", 48, "--lr", 0.01]
    out = run_script(target, script, tmp_path, "--data", spec, *flags, "--out-dir", tmp_path / "out")
    accuracy = [float(a) for a in re.findall(r"test accuracy ([0-9.]+)", out)]
    assert len(accuracy) == (3 if full else 1), out
    if full:
        assert accuracy[-1] >= max(0.9, majority + 0.4), (majority, out)
    limits = {} if full else {"train": 48}
    expected = text.load_conll({"train": tmp_path / "train.conll", "test": tmp_path / "test.conll"}, limits,
                               vocab_size=943)
    with np.load(tmp_path / "out" / "SlotTagger.npz", allow_pickle=False) as z:
        assert list(z["data/vocab"]) == list(expected.vocab)
        assert list(z["data/classes"]) == list(expected.classes)
    # the saved vocabulary is used again: evaluating the saved weights gives the last epoch's accuracy
    again = run_script(target, script, tmp_path, "--data", spec, "--init", tmp_path / "out" / "SlotTagger.npz",
                       "--eval-only")
    assert float(re.findall(r"test accuracy ([0-9.]+)", again)[0]) == pytest.approx(accuracy[-1], abs=2e-4)

    # --predict on sentences (an unknown word among them) is `netdsl predict`'s: probabilities per token
    # to 1e-5, and the printed table's tags
    net, saved = Path(__file__).resolve().parents[1] / "models" / "slot_tagger.net", tmp_path / "out" / "SlotTagger.npz"
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("w1 w2 w3\nw29 w0 w7 w7 w12 w3\nnever_seen w5\n", encoding="utf-8")
    run_script(target, script, tmp_path, "--init", saved, "--predict", sentences, "-o", tmp_path / "s.npy")
    native(capsys, "predict", net, "--load", saved, sentences, "-o", tmp_path / "n.npy")
    got, want = np.load(tmp_path / "s.npy"), np.load(tmp_path / "n.npy")
    assert got.shape == want.shape == (3, 6, 129)
    np.testing.assert_allclose(got, want, atol=1e-5)
    printed = list(csv.reader(io.StringIO(run_script(target, script, tmp_path, "--init", saved, "--predict",
                                                      sentences))))
    expected = list(csv.reader(io.StringIO(native(capsys, "predict", net, "--load", saved, sentences))))
    assert printed[0] == expected[0] == ["input", "position", "token", "class", "probability"]
    assert [r[:4] for r in printed] == [r[:4] for r in expected] and len(printed) == 12
