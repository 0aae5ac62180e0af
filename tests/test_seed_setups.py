"""The seed posts' training setups (issue 18), transcribed into models/seed_*.net, each for one short epoch natively.

Their full MNIST runs and accuracies are in bench/RESULTS.md ("Seed training setups (issue 18)"). Here each
model's own training block runs `netdsl run` for one epoch on a small deterministic MNIST-shaped dataset, so
every setting it uses (sum and half squared error, per-sample learning rates, Keras's SGD decay with nesterov,
max_norm with dropout, the categorical_crossentropy alias) goes through the real training loop.

Still to come (after the target engineers land issue 18 on their targets): the same short epoch on every
target's generated script, as tests/test_mnist_scripts.py runs the other models.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from netdsl.cli import main
from netdsl.frontend import load

ROOT = Path(__file__).resolve().parent.parent
SEEDS = sorted(str(p) for p in (ROOT / "models").glob("seed_*.net"))


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """MNIST-shaped uint8 images whose class is where a bright 7x7 block sits (learnable in a few steps)."""
    rng = np.random.default_rng(0)

    def split(n):
        y = rng.integers(0, 10, n)
        x = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(y):
            r, c = divmod(int(label), 5)
            x[i, 3 + 12 * r:10 + 12 * r, 1 + 5 * c:6 + 5 * c] = 250
        return x, y

    (xtr, ytr), (xte, yte) = split(320), split(100)
    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return path


def test_every_setup_is_here():
    names = {Path(p).stem for p in SEEDS}
    assert names == {"seed_000_keras_maxnorm_cnn", "seed_000_cntk_simple_mnist", "seed_001_keras_sgd_nesterov",
                     "seed_002_mlp_mse_sum_adam", "seed_002_mlp_mse_sum_sgd", "seed_002_mlp_l2_gluon"}
    for p in SEEDS:
        assert re.search(r"^# Seed 00\d \(00\d_[0-9a-f]{16}\.txt\)", Path(p).read_text()), p  # names its seed


@pytest.mark.parametrize("path", SEEDS, ids=[Path(p).stem for p in SEEDS])
def test_one_short_epoch_natively(path, digits, tmp_path, capsys):
    graph = load(path)
    saved = tmp_path / "w.npz"
    code = main(["run", path, "--data", f"npz:{digits}", "--epochs", "1", "--no-progress", "--save", str(saved)])
    out = capsys.readouterr()
    assert code == 0, out.err
    found = re.search(r"final test accuracy: ([\d.]+)% \((\d+)/(\d+)\)", out.out + out.err)
    assert found and int(found.group(3)) == 100 and 0 <= float(found.group(1)) <= 100
    losses = [float(v) for v in re.findall(r"epoch 1/1: loss ([\d.e+-]+|nan|inf)", out.out + out.err)]
    assert losses and np.isfinite(losses).all()
    w = np.load(saved)
    from netdsl.exec.weights import init_params

    start = init_params(graph, graph.training.seed or 0)
    assert any(not np.array_equal(w[k], start[k]) for k in start), "nothing was trained"
    for layer in graph.layers:  # max_norm held after the last update
        m = layer.attr("max_norm") if layer.kind in ("Dense", "Convolution") else None
        if m is not None:
            W = w[layer.param("W").name].astype(np.float64)
            assert np.sqrt((W.reshape(len(W), -1) ** 2).sum(axis=1)).max() <= m * (1 + 1e-6)
