"""The legacy targets' native save formats reload in a fresh process and predict what the model did.

- tf-estimator: a SavedModel (Estimator.export_saved_model), read back by tf.saved_model.load;
- gluon: hybridize() + export() (symbol + params), read back by gluon.SymbolBlock.imports;
- cntk: Function.save (.model), read back by C.Function.load.

Per target, in that framework's venv (NETDSL_LEGACY_PYTHON / NETDSL_CNTK_PYTHON; the test SKIPs with
"... NOT EXECUTED" when it is missing):
1. the generated script trains TinyCnn one epoch on a small .npz data set and must leave its native
   format in --out-dir next to the canonical weights;
2. one process imports the generated modules and, from canonical weights (the trained ones, and
   init_params for models/bn_cnn, models/bilstm_tagger, models/dssm: batch norm, sequences, token
   ids, backward LSTMs, two inputs), predicts a batch and exports the native format with
   export_native();
3. a fresh process, with only the framework (no generated module, no netdsl), loads every native
   file and predicts the same batch: equal to the predictions of step 2 within 1e-6 (relative to
   the largest output, when that exceeds 1).
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from netdsl import conformance as conf
from netdsl.emit.base import emit
from netdsl.exec.weights import init_params, save_weights
from netdsl.frontend import load

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["models/bn_cnn.net", "models/bilstm_tagger.net", "models/dssm.net"]
TINY = "tests/data_models/tiny_cnn.net"

SAVE = r'''
import importlib.util, json, sys
import numpy as np

jobs = json.load(open(sys.argv[1]))
for job in jobs:
    spec = importlib.util.spec_from_file_location("m_" + job["name"], job["module"])
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    model = m.load_netdsl_weights(m.build_model(), job["weights"])
    with np.load(job["inputs"]) as z:
        inputs = {k: z[k] for k in z.files}
    np.savez(job["predicted"], **m.predict(model, inputs))
    if job["export"]:
        job["native"] = m.export_native(model, job["export"])
json.dump(jobs, open(sys.argv[1], "w"))
'''

LOAD = {
    "tf-estimator": r'''
import json, sys
import numpy as np
import tensorflow as tf

for job in json.load(open(sys.argv[1])):
    with np.load(job["inputs"]) as z:
        inputs = {k: tf.constant(z[k]) for k in z.files}
    serve = tf.saved_model.load(job["native"]).signatures["serving_default"]
    np.savez(job["reloaded"], **{k: v.numpy() for k, v in serve(**inputs).items()})
''',
    "gluon": r'''
import json, sys
import mxnet as mx
import numpy as np
from mxnet import gluon, nd

for job in json.load(open(sys.argv[1])):
    symbol, params = job["native"]
    n = len(job["input_names"])
    names = ["data"] if n == 1 else ["data%d" % i for i in range(n)]
    block = gluon.SymbolBlock.imports(symbol, names, params)
    with np.load(job["inputs"]) as z:
        outs = block(*[nd.array(z[k], dtype="float32") for k in job["input_names"]])
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    np.savez(job["reloaded"], **{k: o.asnumpy() for k, o in zip(job["output_names"], outs)})
''',
    "cntk": r'''
import json, sys
import cntk as C
import numpy as np

for job in json.load(open(sys.argv[1])):
    f = C.Function.load(job["native"])
    args = {a.name: a for a in f.arguments}
    feed = {}
    with np.load(job["inputs"]) as z:
        for k in job["input_names"]:
            x = z[k]
            if k in job["vocab"]:
                feed[args[k]] = C.Value.one_hot([[int(t) for t in row] for row in x], job["vocab"][k])
            else:
                feed[args[k]] = np.ascontiguousarray(x, dtype=np.float32)
    out = f.eval(feed)
    out = np.stack(out) if isinstance(out, list) else out
    np.savez(job["reloaded"], **{job["output_names"][0]: np.asarray(out, dtype=np.float32)})
''',
}


def framework(target):
    col = next(c for c in conf.COLUMNS if c.target == target)
    python, why = col.python()
    if python is None:
        pytest.skip(f"{target.upper()} NOT EXECUTED: {why}")
    return python, dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONDONTWRITEBYTECODE="1", **col.env)


def run(python, env, tmp_path, *argv):
    # a fresh process whose temp dir is watched: nothing may be left there
    proc = subprocess.run([python, *map(str, argv)], capture_output=True, text=True, timeout=900,
                          env=dict(env, TMPDIR=str(tmp_path / "tmp")), cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def batch(graph, rng, n=3):
    rescaled = {node.inputs[0] for node in graph.nodes if graph.layer(node.layer).kind == "Rescale"}
    out = {}
    for i in graph.inputs:
        t = i.type
        shape = (n,) + (((t.length or 4),) if t.seq else ()) + tuple(t.shape)
        if t.vocab is not None:
            out[i.name] = rng.integers(0, t.vocab, size=shape).astype(np.int64)
        elif i.name in rescaled:
            out[i.name] = rng.uniform(0, 255, size=shape).astype(np.float32)
        else:
            out[i.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def tiny_data(path, rng):
    """TinyCnn's 8x8 RGB images: class k has a bright channel k."""
    def split(n):
        y = np.arange(n) % 3
        x = rng.uniform(0, 90, (n, 3, 8, 8)).astype(np.float32)
        x[np.arange(n), y] = rng.uniform(160, 255, (n, 8, 8)).astype(np.float32)
        return x, y.astype(np.int64)

    (x, y), (xt, yt) = split(96), split(30)
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)


@pytest.mark.parametrize("target", ["tf-estimator", "gluon", "cntk"])
def test_native_format_reloads_and_predicts_the_same(target, tmp_path, monkeypatch):
    python, env = framework(target)
    (tmp_path / "tmp").mkdir()
    rng = np.random.default_rng(7)
    monkeypatch.chdir(ROOT)  # paths as from the repository root

    # 1. the script's main() writes the native format after training
    tiny = load(TINY)
    script = tmp_path / "tiny.py"
    script.write_text(emit(tiny, target), encoding="utf-8")
    tiny_data(tmp_path / "tiny.npz", rng)
    out_dir = tmp_path / "out"
    run(python, env, tmp_path, script, "--data", f"npz:{tmp_path / 'tiny.npz'}", "--epochs", 1, "--out-dir", out_dir)
    native = {"tf-estimator": sorted((out_dir / "TinyCnn-savedmodel").glob("*/saved_model.pb")),
              "gluon": [out_dir / "TinyCnn-symbol.json", out_dir / "TinyCnn-0000.params"],
              "cntk": [out_dir / "TinyCnn.model"]}[target]
    assert len(native) == (1 if target != "gluon" else 2) and all(p.is_file() for p in native), \
        sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*"))
    trained_native = {"tf-estimator": str(native[0].parent), "gluon": [str(p) for p in native],
                      "cntk": str(native[0])}[target]

    # 2. predictions before saving, and export_native() from the module API
    jobs = []
    for k, path in enumerate([TINY] + MODELS):
        graph = tiny if path == TINY else load(path)
        name = f"m{k}"
        module = tmp_path / f"{name}.py"
        if path == TINY:
            module, weights = script, out_dir / "TinyCnn.npz"
        else:
            module.write_text(emit(graph, target), encoding="utf-8")
            weights = tmp_path / f"{name}.npz"
            save_weights(weights, init_params(graph, k))
        inputs = batch(graph, rng)
        np.savez(tmp_path / f"{name}_in.npz", **inputs)
        jobs.append({"name": name, "module": str(module), "weights": str(weights),
                     "inputs": str(tmp_path / f"{name}_in.npz"), "predicted": str(tmp_path / f"{name}_before.npz"),
                     "reloaded": str(tmp_path / f"{name}_after.npz"),
                     "export": None if path == TINY else str(tmp_path / f"{name}-native"),
                     "input_names": [i.name for i in graph.inputs], "output_names": list(graph.outputs),
                     "vocab": {i.name: i.type.vocab for i in graph.inputs if i.type.vocab is not None}})
    jobs[0]["native"] = trained_native
    (tmp_path / "save.py").write_text(SAVE)
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    run(python, env, tmp_path, tmp_path / "save.py", tmp_path / "jobs.json")

    # 3. a fresh process with only the framework reloads every native file
    (tmp_path / "load.py").write_text(LOAD[target])
    run(python, env, tmp_path, tmp_path / "load.py", tmp_path / "jobs.json")
    for job in json.loads((tmp_path / "jobs.json").read_text()):
        before, after = np.load(job["predicted"]), np.load(job["reloaded"])
        assert sorted(after.files) == sorted(job["output_names"]), job["name"]
        for name in job["output_names"]:
            want, got = before[name], after[name]
            assert got.shape == want.shape, (job["name"], name)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * max(1.0, float(np.abs(want).max())),
                                       err_msg=f"{job['name']} ({job['module']}) {name}")
    assert os.listdir(tmp_path / "tmp") == []
