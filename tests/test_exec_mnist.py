"""Native training on REAL MNIST (all 60,000 training and 10,000 test images),
each model with its own training block, seed 0, one BLAS thread (so the
numbers are the bit-reproducible ones recorded in bench/RESULTS.md).

Thresholds: the brief's, on the full data (figures and commands: bench/RESULTS.md):
- mlp_relu, Adam, 3 epochs: 97.5% (seed 0: 97.68%; the training block normalises by MNIST's
  mean/std and uses batch 32: with scale=1/255 and batch 64 seeds 0-9 gave 97.28-97.56%).
- keras_cnn, Adam, 2 epochs: 98.7% (seed 0: 98.76%; mean/std normalisation and lr 0.002:
  with scale=1/255 and lr 0.001 seed 0 gave 98.37%).
- mlp_sigmoid, MSE, SGD: 90% (about 96.9%; lr 1.0, batch 10: lr 2.0, batch 20 plateaued at 87%).
- row_lstm, 1 epoch: 94% (about 96.2%).
These are single fixed-seed runs, bit-reproducible on one machine; another CPU's BLAS rounds
differently and can move a result by a few tenths of a percent, so the margins are noted here.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from netdsl import data as datamod
from netdsl.exec import runtime, train
from netdsl.exec.weights import init_params
from netdsl.frontend import load

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    not os.environ.get("NETDSL_DATA") or not (Path(os.environ["NETDSL_DATA"]) / "mnist").is_dir(),
    reason="real MNIST not available (set NETDSL_DATA)")

CASES = [
    ("mlp_relu", 0.975),
    ("keras_cnn", 0.987),
    ("mlp_sigmoid", 0.90),
    ("row_lstm", 0.94),
]


@pytest.fixture(scope="module")
def mnist():
    before = runtime.blas_threads()
    runtime.set_threads(1)
    yield datamod.load_mnist("mnist")
    if before:
        runtime.set_threads(before)


@pytest.mark.parametrize("model, threshold", CASES, ids=[c[0] for c in CASES])
def test_mnist_accuracy(mnist, model, threshold):
    g = load(str(REPO / "models" / f"{model}.net"))
    trainer = train.Trainer(g, init_params(g, 0), mnist, train.Options(seed=0), log=print)
    result = trainer.fit()
    assert len(result.history) == g.training.epochs
    assert result.test_accuracy >= threshold, result.history
