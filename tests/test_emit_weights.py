"""The generated weight loaders apply netdsl's own rule (netdsl/exec/weights.py), on every target.

One generated module per target (models/mlp_relu.net) runs in its framework's venv and tries each
crafted weight file with load_netdsl_weights. A file netdsl refuses must be refused there too,
with netdsl's message: missing, unexpected and mis-shaped arrays; int, bool, complex, string and
datetime dtypes; NaN and Inf; arrays that need pickle. A good file loads.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from netdsl.emit import TARGETS
from netdsl.emit.base import emit
from netdsl.errors import NetdslError
from netdsl.exec.weights import init_params, load_weights
from netdsl.frontend import load

from test_emit_legacy import _python

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "mlp_relu.net"

DRIVER = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("generated", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
model = mod.build_model()
out = {}
for path in sys.argv[3:]:
    try:
        mod.load_netdsl_weights(model, path)
        out[path] = None
    except ValueError as e:
        out[path] = str(e)
with open(sys.argv[2], "w") as f:
    json.dump(out, f)
"""


def bad_files(graph, tmp: Path) -> dict:
    good = init_params(graph, 0)
    first = next(iter(good))
    w = good[first]
    variants = {
        "good": {},
        "nan": {first: np.where(np.arange(w.size).reshape(w.shape) == 3, np.nan, w).astype(np.float32)},
        "inf": {first: np.full(w.shape, np.inf, np.float32)},
        "int": {first: w.astype(np.int32)},
        "bool": {first: w > 0},
        "complex": {first: w.astype(np.complex64)},
        "string": {first: np.full(w.shape, "abc")},
        "datetime": {first: np.zeros(w.shape, "M8[D]")},
        "shape": {first: np.zeros((3, 1), np.float32)},
        "pickle": {first: np.empty(w.shape, dtype=object)},
    }
    paths = {}
    for name, change in variants.items():
        arrays = dict(good, **change)
        paths[name] = tmp / f"{name}.npz"
        np.savez(paths[name], **arrays)
    paths["missing"] = tmp / "missing.npz"
    np.savez(paths["missing"], **{k: v for k, v in good.items() if k != first})
    paths["extra"] = tmp / "extra.npz"
    np.savez(paths["extra"], **good, **{"dense_9.W": np.zeros((2, 2), np.float32)})
    return paths, first


def native_message(path, graph):
    try:
        load_weights(str(path), graph)
    except NetdslError as e:
        return [d.message for d in e.diagnostics]
    return None


def run_generated(target: str, graph, paths: dict, tmp: Path) -> dict:
    py = sys.executable if target in ("pytorch", "keras") else _python(target)
    module = tmp / f"gen_{target.replace('-', '_')}.py"
    module.write_text(emit(graph, target))
    (tmp / "driver.py").write_text(DRIVER)
    env = dict(os.environ, KERAS_BACKEND="torch", KERAS_HOME=str(tmp / "keras-home"), TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONDONTWRITEBYTECODE="1", MXNET_ENGINE_TYPE="NaiveEngine")
    results = tmp / f"results_{target}.json"
    proc = subprocess.run([py, str(tmp / "driver.py"), str(module), str(results), *map(str, paths.values())],
                          capture_output=True, text=True, timeout=900, env=env, cwd=str(tmp))
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(results.read_text())
    return {name: got[str(p)] for name, p in paths.items()}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_generated_loader_refuses_what_netdsl_refuses(tmp_path, target):
    graph = load(str(MODEL))
    paths, first = bad_files(graph, tmp_path)
    got = run_generated(target, graph, paths, tmp_path)
    assert got["good"] is None
    for case, path in paths.items():
        if case == "good":
            continue
        native = native_message(path, graph)
        assert native is not None, case  # netdsl itself refuses it
        message = got[case]
        assert message is not None, f"{target} loaded the {case} file"
        if case in ("nan", "inf", "int", "bool", "complex", "string", "datetime", "shape"):
            assert message == native[0], (case, message, native)  # the very same words
        elif case == "extra":
            assert message.endswith(native[0]), (message, native)
        else:  # missing (netdsl also names the layer) and pickle (numpy's own words)
            assert f"'{first}'" in message and str(path) in message, (case, message)


def write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed IDX file of uint8 (MNIST's format)."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_init_and_eval_only_give_netdsls_accuracy(tmp_path, target):
    """`--init W.npz --eval-only` on every target: the same test accuracy as netdsl's executor with W,
    on a small deterministic IDX dataset; nothing is trained or saved."""
    from netdsl.exec.graph import Executor
    from netdsl.exec.weights import save_weights

    graph = load(str(MODEL))
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, size=(200, 28, 28))
    labels = rng.integers(0, 10, size=200)
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "t10k"):
        write_idx(data / f"{split}-images-idx3-ubyte", images)
        write_idx(data / f"{split}-labels-idx1-ubyte", labels)
    params = init_params(graph, 3)
    save_weights(tmp_path / "init.npz", params)
    x = images.reshape(-1, 784).astype(np.float32)
    z = Executor(graph, params).forward({graph.inputs[0].name: x})[graph.outputs[0]]
    expected = float((z.argmax(axis=1) == labels).mean())

    py = sys.executable if target in ("pytorch", "keras") else _python(target)
    script = tmp_path / "script.py"
    script.write_text(emit(graph, target))
    out = tmp_path / "out"
    env = dict(os.environ, KERAS_BACKEND="torch", KERAS_HOME=str(tmp_path / "keras-home"), TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([py, str(script), "--data-dir", str(data), "--init", str(tmp_path / "init.npz"),
                           "--eval-only", "--out-dir", str(out)], capture_output=True, text=True, timeout=900,
                          env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = float(proc.stdout.strip().splitlines()[-1].split("test accuracy ")[1])
    assert abs(got - expected) <= 1 / 200 + 1e-9, (got, expected)  # one borderline sample at most
    assert not out.exists()
