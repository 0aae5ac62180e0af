"""Native training on REAL MNIST (all 60,000 training and 10,000 test images),
each model with its own training block, seed 0, one BLAS thread (so the
numbers are the bit-reproducible ones recorded in bench/RESULTS.md).

Thresholds and why (full-data figures and commands: bench/RESULTS.md,
"## Executor"):
- mlp_relu, Adam, 3 epochs: 97.1%. The brief's 97.5% is not what this model
  reaches reliably: seeds 0-9 give 97.28-97.56% (mean 97.42%), seed 0 97.28%,
  and PyTorch trained from the same weights on the same batches gets the
  same (seed 0: 97.25%). models/mlp_relu.net is not mine to tune, and a lucky
  seed would make a flaky test: another CPU's BLAS rounds differently, which
  moves a run within that spread. Threshold = lowest seen - 0.15%.
- keras_cnn, Adam, 2 epochs: 98.1%. The brief's 98.7% is also above what the
  model as written reaches: seed 0 98.37% (PyTorch from the same weights and
  batches: 98.34%), seeds 1 and 2 98.29% and 98.66%.
- mlp_sigmoid, MSE, SGD: 90% (96.9% since its training block moved to
  lr 1.0, batch 10; it plateaued at 87% with lr 2.0, batch 20).
- row_lstm, 1 epoch: 94%.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from netdsl import data as datamod
from netdsl.exec import train
from netdsl.exec.weights import init_params
from netdsl.frontend import load

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    not os.environ.get("NETDSL_DATA") or not (Path(os.environ["NETDSL_DATA"]) / "mnist").is_dir(),
    reason="real MNIST not available (set NETDSL_DATA)")

CASES = [
    ("mlp_relu", 0.971),
    ("keras_cnn", 0.981),
    ("mlp_sigmoid", 0.90),
    ("row_lstm", 0.94),
]


@pytest.fixture(scope="module")
def mnist():
    before = train.blas_threads()
    train.set_threads(1)
    yield datamod.load_mnist("mnist")
    if before:
        train.set_threads(before)


@pytest.mark.parametrize("model, threshold", CASES, ids=[c[0] for c in CASES])
def test_mnist_accuracy(mnist, model, threshold):
    g = load(str(REPO / "models" / f"{model}.net"))
    trainer = train.Trainer(g, init_params(g, 0), mnist, train.Options(seed=0), log=print)
    result = trainer.fit()
    assert len(result.history) == g.training.epochs
    assert result.test_accuracy >= threshold, result.history
