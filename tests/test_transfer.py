"""Train in one framework, run in the others: weights travel as one canonical .npz.

The generated PyTorch script trains the Keras-style CNN for one epoch on real MNIST and exports
canonical weights; Keras (both back ends), Gluon, TF-Estimator, CNTK where they run, and the native
executor load that file and must agree on the test accuracy (within 0.01%, one image in 10,000)
and on the logits.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from netdsl import conformance as conf
from netdsl.data import load_mnist
from netdsl.emit.base import emit
from netdsl.exec.graph import Executor
from netdsl.exec.weights import load_weights
from netdsl.frontend import load

ROOT = Path(__file__).resolve().parent.parent
MODEL = "models/keras_cnn.net"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("transfer")
    graph = load(str(ROOT / MODEL))
    script = tmp / "keras_cnn_pytorch.py"
    script.write_text(emit(graph, "pytorch"))
    data_dir = os.environ.get("NETDSL_DATA", str(ROOT.parent / "shared" / "data"))
    proc = subprocess.run([sys.executable, str(script), "--data-dir", data_dir, "--epochs", "1", "--out-dir", str(tmp)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout)
    accuracy = float(proc.stdout.strip().splitlines()[-1].rsplit(" ", 1)[1])
    assert accuracy >= 0.98, proc.stdout
    ds = load_mnist("mnist")
    images = ds.x_test.reshape(-1, 1, 28, 28).astype(np.float32)
    np.savez(tmp / "test.inputs.npz", image=images)
    weights = tmp / f"{graph.name}.npz"
    native = Executor(graph, load_weights(weights, graph)).forward({"image": images})["z"]
    return graph, tmp, weights, native, ds.y_test.astype(np.int64)


def accuracy_of(logits, labels):
    return float((logits.argmax(1) == labels).mean())


@pytest.mark.parametrize("column", [c.name for c in conf.COLUMNS])
def test_weights_trained_in_pytorch_run_everywhere(trained, column):
    graph, tmp, weights, native, labels = trained
    col = next(c for c in conf.COLUMNS if c.name == column)
    python, why = col.python()
    if python is None:
        pytest.skip(f"{column.upper()} NOT EXECUTED: {why}")
    tag = column.replace("/", "_")
    module = tmp / f"keras_cnn_{tag}.py"
    module.write_text(emit(graph, col.target))
    job = {"id": "transfer", "module": str(module), "inputs": str(tmp / "test.inputs.npz"),
           "predict_weights": str(weights), "outputs": str(tmp / f"{tag}.outputs.npz")}
    res = conf.run_driver(python, col, [job], tmp, print).get("transfer")
    assert res and res.get("ok"), (res or {}).get("error")
    logits = np.load(tmp / f"{tag}.outputs.npz")["z"]
    assert abs(accuracy_of(logits, labels) - accuracy_of(native, labels)) <= 1e-4
    assert np.abs(logits - native).max() <= conf.INFER_TOL * max(1.0, float(np.abs(native).max()))
