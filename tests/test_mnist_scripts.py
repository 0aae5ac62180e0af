"""The generated train/evaluate scripts reach the accuracy a user expects, on the real frameworks.

The Keras-style CNN, 1 epoch of real MNIST, >= 98% test accuracy on tf-estimator, Gluon and CNTK
(PyTorch: tests/test_transfer.py; Keras: tests/test_emit_torch_keras.py). Every script starts from
the same canonical initial weights (`--init`, written by netdsl's own initialiser) so that the
targets train the same network rather than each framework's own random draw.
"""
import re
from pathlib import Path

import pytest

from netdsl import conformance as conf
from netdsl.emit.base import emit
from netdsl.exec.weights import init_params, save_weights
from netdsl.frontend import load

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "mnist"


@pytest.mark.parametrize("column", ["tf-estimator", "gluon", "cntk"])
def test_keras_cnn_script_reaches_98_percent(column, tmp_path):
    import os
    import subprocess

    col = next(c for c in conf.COLUMNS if c.name == column)
    python, why = col.python()
    if python is None:
        pytest.skip(f"{column.upper()} NOT EXECUTED: {why}")
    data = Path(os.environ.get("NETDSL_DATA", str(DATA.parent))) / "mnist"
    graph = load(str(ROOT / "models" / "keras_cnn.net"))
    script = tmp_path / "keras_cnn.py"
    script.write_text(emit(graph, col.target))
    save_weights(tmp_path / "init.npz", init_params(graph, 0))
    proc = subprocess.run([python, str(script), "--data-dir", str(data), "--epochs", "1", "--init",
                           str(tmp_path / "init.npz"), "--out-dir", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=1800, cwd=tmp_path,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = re.findall(r"test accuracy ([0-9.]+)", proc.stdout)
    assert found, proc.stdout
    print(f"{column}: {proc.stdout.strip().splitlines()[-2:]}")
    assert float(found[-1]) >= 0.98, proc.stdout
    assert (tmp_path / "out" / f"{graph.name}.npz").exists()
