"""The train block's settings in the generated Keras module, over 20 steps, on both Keras back ends.

The seeded combinations of tests/test_train_settings.py (optimizer x schedule x regulariser x loss) train
the same small MLP for 20 steps with the generated module's make_trainer(steps_per_epoch=4) and
train_step(), and with netdsl's executor (that test's native(), which the same test checks against
PyTorch). Every step's loss and the final weights must agree to 1e-4, relative to their size. All
combinations of a back end run in one subprocess (Keras picks its back end at import).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from test_max_norm import CONV, DENSE
from test_seed_setups import SEEDS, digits  # noqa: F401 (digits: a fixture)
from test_train_settings import TOLERANCE, batches, native
from train_combos import MODEL, block, combinations

from netdsl.emit.base import emit
from netdsl.errors import NetdslError
from netdsl.exec import feed, optim
from netdsl.exec.graph import Executor
from netdsl.exec.steprule import StepRule, max_norms
from netdsl.exec.weights import init_params, save_weights
from netdsl.frontend import load_text

pytest.importorskip("keras")

BACKENDS = ("torch", "tensorflow")
COMBOS = combinations(48, seed=18)
# max_norm (Keras's own MaxNorm constraint) on a Dense and on a Convolution, as tests/test_max_norm.py
MAX_NORM = {"dense": DENSE % "0.3", "conv": CONV}
# combinations the Keras target refuses (E802), with the reason: none
EXPECTED_REFUSALS: dict = {}

DRIVER = """
import json, sys
import importlib.util
import numpy as np

jobs = json.load(open(sys.argv[1]))
results = []
for job in jobs:
    spec = importlib.util.spec_from_file_location(job["name"], job["module"])
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    model = m.build_model()
    m.load_netdsl_weights(model, job["init"])
    trainer = m.make_trainer(model, steps_per_epoch=4)
    data = np.load(job["data"])
    losses = [m.train_step(model, trainer, {"x": data["x%d" % s]}, data["t%d" % s]) for s in range(job["steps"])]
    m.export_netdsl_weights(model, job["out"])
    results.append(losses)
json.dump(results, open(sys.argv[2], "w"))
"""


def targets_for(loss: str, labels: np.ndarray, step: int) -> np.ndarray:
    """What a caller passes: one-hot float targets for every loss but cross-entropy, which takes int labels
    on even steps and one-hot targets on odd ones (the module must accept both)."""
    onehot = np.eye(3, dtype=np.float32)[labels]
    if loss.startswith("cross_entropy_with_softmax") and step % 2 == 0:
        return labels.astype(np.int64)
    return onehot


def native_max_norm(graph, params, data):
    """test_train_settings.native() with max_norm applied after each update (exec/steprule's step 7)."""
    tr = graph.training
    ex = Executor(graph, {k: v.copy() for k, v in params.items()})
    loss_fn = feed.make_loss(tr, 3)
    opt = optim.make_optimizer(tr)
    rule = StepRule(tr, opt.lr, max_norms(graph))
    trainable = {n: ex.params[n] for n in ex.trainable}
    losses = []
    for step, (x, y) in enumerate(data):
        out = ex.forward({"x": x}, training=True, rng=np.random.default_rng(0))["y"]
        loss, d = loss_fn(out, y)
        losses.append(loss)
        rule.step(opt, trainable, ex.backward({"y": d}), step // 4, step, len(y))
    return losses, {k: ex.params[k] for k in trainable}


def add_job(tmp, jobs, name, graph, data, targets_of):
    (tmp / f"{name}.py").write_text(emit(graph, "keras"))
    params = init_params(graph, 0)
    save_weights(tmp / f"{name}_init.npz", params)
    arrays = {}
    for s, (x, y) in enumerate(data):
        arrays[f"x{s}"], arrays[f"t{s}"] = x, targets_of(y, s)
    np.savez(tmp / f"{name}_data.npz", **arrays)
    jobs.append({"name": name, "module": str(tmp / f"{name}.py"), "init": str(tmp / f"{name}_init.npz"),
                 "data": str(tmp / f"{name}_data.npz"), "steps": len(data), "out": ""})
    return params


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("keras_train")
    data = batches()
    jobs, expected = [], []
    for i, (opt, schedule, reg, loss) in enumerate(COMBOS):
        if i in EXPECTED_REFUSALS:
            continue
        graph = load_text(MODEL % block(opt, schedule, reg, loss), "settings.net")
        params = add_job(tmp, jobs, f"c{i}", graph, data, lambda y, s, loss=loss: targets_for(loss, y, s))
        expected.append((f"c{i} {COMBOS[i]}", graph, *native(graph, params, data)))
    rng = np.random.default_rng(1)
    images = [(rng.standard_normal((8, 2, 6, 6)).astype(np.float32), y) for _, y in data]
    for name, text in MAX_NORM.items():
        graph = load_text(text, f"{name}.net")
        inputs = images if name == "conv" else data
        params = add_job(tmp, jobs, f"max_norm_{name}", graph, inputs, lambda y, s: y)
        expected.append((f"max_norm {name}", graph, *native_max_norm(graph, params, inputs)))
    return tmp, jobs, expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_twenty_steps_match_native(prepared, backend):
    tmp, jobs, expected = prepared
    for job in jobs:
        job["out"] = str(tmp / f"{job['name']}_{backend}.npz")
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    (tmp / "driver.py").write_text(DRIVER)
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", KERAS_HOME=str(tmp / "keras-home"))
    proc = subprocess.run([sys.executable, str(tmp / "driver.py"), str(tmp / "jobs.json"), str(tmp / "results.json")],
                          capture_output=True, text=True, timeout=1500, env=env, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp / "results.json").read_text())
    failures = []
    for job, losses, (what, graph, n_losses, n_params) in zip(jobs, results, expected):
        tol = TOLERANCE[graph.training.optimizer]
        with np.load(job["out"]) as npz:
            k_params = {k: npz[k] for k in npz.files}
        try:
            np.testing.assert_allclose(losses, n_losses, rtol=tol, atol=tol)
            for k, v in n_params.items():
                np.testing.assert_allclose(k_params[k], v, rtol=tol, atol=tol, err_msg=k)
        except AssertionError as e:
            failures.append(f"{what}: {str(e).strip().splitlines()[:6]}")
    assert not failures, "\n".join(failures)
    # the constraint was active: some unit's weights sit at the bound
    for what, graph, _, n_params in expected:
        for name, m in max_norms(graph).items():
            w = n_params[name]
            norms = np.sqrt((w.reshape(len(w), -1) ** 2).sum(axis=1))
            assert norms.max() == pytest.approx(m, rel=1e-5), (what, name, norms)


def test_the_refusals_are_the_expected_ones():
    refused = {}
    for i, combo in enumerate(COMBOS):
        try:
            emit(load_text(MODEL % block(*combo), "settings.net"), "keras")
        except NetdslError as e:
            refused[i] = [d.message for d in e.diagnostics]
    assert set(refused) == set(EXPECTED_REFUSALS), refused


def test_script_honours_validation_split_early_stopping_log_every_and_metrics(tmp_path):
    """The generated script's main(): the last quarter of the training set is held out, a line is logged
    every 4 steps, EarlyStopping ends the run once the validation loss has not improved for 1 epoch, and
    the test set's top-2 accuracy and confusion matrix close the report."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)  # a learnable rule, 3 classes
    np.savez(tmp_path / "d.npz", x_train=x[:160], y_train=y[:160], x_test=x[160:], y_test=y[160:])
    graph = load_text(MODEL % """    optimizer = SGD(lr=2.0)
    batch_size = 16
    epochs = 40
    seed = 7
    validation_split = 0.25
    early_stopping = 1
    log_every = 4
    weight_decay = l2(0.001)
    metrics = [accuracy, top_k_accuracy(k=2), confusion_matrix]""", "script.net")
    (tmp_path / "script.py").write_text(emit(graph, "keras"))
    env = dict(os.environ, KERAS_BACKEND="torch", KERAS_HOME=str(tmp_path / "keras-home"))
    proc = subprocess.run([sys.executable, "script.py", "--data", "npz:d.npz", "--out-dir", "out"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    epochs = out.count("validation loss")
    assert 1 <= epochs < 40 and "early stopping" in out, out[-3000:]
    # 120 training samples in batches of 16: 8 steps an epoch, a line after steps 4 and 8
    assert out.count(", step 4/8: loss") == epochs and out.count(", step 8/8: loss") == epochs, out[-3000:]
    losses = [float(line.split("validation loss ")[1].split(",")[0]) for line in out.splitlines()
              if "validation loss" in line]
    # it stops at the first epoch whose loss is not below the best so far (patience 1)
    assert all(b < a for a, b in zip(losses, losses[1:-1])) and losses[-1] >= min(losses[:-1]), losses
    # the metrics, worded as netdsl run's: top-2 accuracy and a 3 x 3 confusion matrix over the 40 test samples
    lines = out.splitlines()
    top2 = [line for line in lines if line.startswith("test top 2 accuracy: ")]
    assert len(top2) == 1 and 0 < float(top2[0].split(": ")[1].rstrip("%")) <= 100, out[-3000:]
    at = lines.index("confusion matrix (rows: true class, columns: predicted):")
    matrix = np.array([[int(v) for v in line.split()[1:]] for line in lines[at + 2 : at + 5]])
    assert matrix.shape == (3, 3) and matrix.sum() == 40, lines[at : at + 5]


SEED_DRIVER = """
import contextlib, importlib.util, sys

for name in sys.argv[2:]:
    spec = importlib.util.spec_from_file_location(name, name + ".py")
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    with open(name + ".out", "w") as out, contextlib.redirect_stdout(out):
        m.main(["--data", "npz:" + sys.argv[1], "--epochs", "1", "--limit-train", "160", "--out-dir", name])
"""


def test_seed_setups_train_one_short_epoch(digits, tmp_path):  # noqa: F811
    """Each seed post's training setup (models/seed_*.net) through its generated Keras script's main(), all in
    one keras/torch process: one short epoch of MNIST-shaped digits, a finite loss, max_norm held after the
    last update."""
    from netdsl.frontend import load

    graphs = {}
    for path in SEEDS:
        name = os.path.basename(path)[:-4]
        graphs[name] = load(path)
        (tmp_path / f"{name}.py").write_text(emit(graphs[name], "keras"))
    (tmp_path / "driver.py").write_text(SEED_DRIVER)
    env = dict(os.environ, KERAS_BACKEND="torch", KERAS_HOME=str(tmp_path / "keras-home"))
    proc = subprocess.run([sys.executable, "driver.py", str(digits), *graphs], cwd=tmp_path, capture_output=True,
                          text=True, timeout=1200, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for name, graph in graphs.items():
        out = (tmp_path / f"{name}.out").read_text()
        found = [line for line in out.splitlines() if line.startswith("epoch 1/1: loss ")]
        assert found and np.isfinite(float(found[0].split("loss ")[1].split(",")[0])), (name, out[-2000:])
        with np.load(tmp_path / name / f"{graph.name}.npz") as w:
            for param, m in max_norms(graph).items():
                W = w[param].astype(np.float64)
                assert np.sqrt((W.reshape(len(W), -1) ** 2).sum(axis=1)).max() <= m * (1 + 1e-6), (name, param)
