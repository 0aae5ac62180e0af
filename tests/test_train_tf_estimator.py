"""The train block's optimisation settings (issue 18) on tf.estimator, over 20 steps.

The seeded combinations of tests/test_train_settings.py (optimizer x schedule x regulariser x loss) are
emitted for tf-estimator and trained for 20 steps (epochs of 4 steps) by ONE subprocess in the legacy venv
(TensorFlow 2.15): make_trainer(model, steps_per_epoch=4), then train_step on each batch. Every step's loss
and the final weights must match the native executor (test_train_settings.native) to the tolerance of each
optimizer. Cross-entropy runs half on integer labels and half on one-hot float targets (the contract: a
target takes both). No combination is refused. max_norm, on a convolution and the Dense after it, is checked
the same way against netdsl conformance's native steps (conformance_steps.native_steps).
"""
from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
from test_emit_legacy import _python
from test_max_norm import CONV
from test_train_settings import STEPS, batches, native
from train_combos import MODEL, block, combinations

from netdsl import conformance as conf
from netdsl import conformance_steps as cs
from netdsl.emit.base import emit
from netdsl.exec import losses
from netdsl.exec.weights import init_params
from netdsl.frontend import load_text

COMBOS = combinations(40, seed=18)
# loss and weights after 20 steps, relative to their size (TF's float32 kernels round differently from numpy's)
TOLERANCE = {"SGD": 1e-4, "Adam": 1e-4, "AdamW": 1e-4, "RMSProp": 1e-4, "Adadelta": 1e-4, "Adagrad": 1e-4}
REFUSED: dict = {}  # combination -> why tf-estimator refuses it (E802): none today
# max_norm on a feature map and the Dense reading it (NHWC-flattened: rows permuted), under two optimizers
MAX_NORM = {"conv_adam": CONV,
            "conv_rmsprop": CONV.replace("Adam(lr=0.05)", "RMSProp(lr=0.01, momentum=0.5)\n"
                                         "    lr_schedule = step(step_size=1, gamma=0.7)\n"
                                         "    weight_decay = decoupled(0.05)\n    loss = squared_error(reduction=sum)")}

DRIVER = r'''
import importlib.util, json, sys
import numpy as np

for i, job in enumerate(json.load(open(sys.argv[1]))):
    spec = importlib.util.spec_from_file_location("combo_%d" % i, job["module"])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    data = np.load(job["data"])
    model = mod.build_model(job["model_dir"])
    mod.load_netdsl_weights(model, job["weights"])
    trainer = mod.make_trainer(model, steps_per_epoch=4)
    step_losses = [float(mod.train_step(model, trainer, {"x": data["x%d" % (s % job["batches"])]},
                                        data["t%d" % (s % job["batches"])]))
                   for s in range(job["steps"])]
    mod.export_netdsl_weights(model, job["trained"])
    json.dump(step_losses, open(job["losses"], "w"))
    print("driver: combination %d done" % i, file=sys.stderr, flush=True)
'''


def _targets(graph, labels, one_hot: bool):
    if graph.training.loss == "cross_entropy_with_softmax" and not one_hot:
        return labels
    return losses.one_hot(labels, np.zeros((len(labels), 3), np.float32))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    py = _python("tf-estimator")
    tmp = tmp_path_factory.mktemp("train_tf_estimator")
    jobs, cases = [], []
    for i, combo in enumerate(COMBOS):
        graph = load_text(MODEL % block(*combo), "settings.net")
        params = init_params(graph, 0)
        data = batches()
        d = tmp / f"c{i}"
        d.mkdir()
        (d / "m.py").write_text(emit(graph, "tf-estimator"))
        np.savez(d / "w.npz", **params)
        np.savez(d / "data.npz", **{f"x{s}": x for s, (x, _) in enumerate(data)},
                 **{f"t{s}": _targets(graph, y, one_hot=i % 2 == 1) for s, (_, y) in enumerate(data)})
        jobs.append({"module": str(d / "m.py"), "weights": str(d / "w.npz"), "data": str(d / "data.npz"),
                     "model_dir": str(d / "model"), "trained": str(d / "trained.npz"),
                     "losses": str(d / "losses.json"), "steps": STEPS, "batches": STEPS})
        cases.append((graph, params, data, d))
    for name, text in MAX_NORM.items():
        graph = cs.steps_graph(load_text(text, name + ".net"))
        params = conf.conformance_params(graph, 0)
        x = conf.batch_for(graph, 0)["x"]
        t = cs.steps_targets(graph, conf.native_predict(graph, params, {"x": x}), 0)
        d = tmp / name
        d.mkdir()
        (d / "m.py").write_text(emit(graph, "tf-estimator"))
        np.savez(d / "w.npz", **params)
        np.savez(d / "data.npz", x0=x, t0=t)
        jobs.append({"module": str(d / "m.py"), "weights": str(d / "w.npz"), "data": str(d / "data.npz"),
                     "model_dir": str(d / "model"), "trained": str(d / "trained.npz"),
                     "losses": str(d / "losses.json"), "steps": STEPS, "batches": 1})
        cases.append((graph, params, (x, t), d))
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    (tmp / "driver.py").write_text(DRIVER)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([py, str(tmp / "driver.py"), str(tmp / "jobs.json")], capture_output=True, text=True,
                          check=False, timeout=1500, env=env, cwd=str(tmp))
    assert proc.returncode == 0, f"driver exited {proc.returncode}\n{proc.stderr[-6000:]}"
    return cases


@pytest.mark.parametrize("i", range(len(COMBOS)), ids=[f"c{i}" for i in range(len(COMBOS))])
def test_twenty_steps_match_native(trained, i):
    graph, params, data, d = trained[i]
    n_losses, n_params = native(graph, params, data)
    t_losses = json.loads((d / "losses.json").read_text())
    t_params = dict(np.load(d / "trained.npz"))
    tol = TOLERANCE[graph.training.optimizer]
    np.testing.assert_allclose(t_losses, n_losses, rtol=tol, atol=tol, err_msg=str(COMBOS[i]))
    for k in n_params:
        scale = max(1.0, float(np.abs(n_params[k]).max()))
        np.testing.assert_allclose(t_params[k], n_params[k], rtol=tol, atol=tol * scale, err_msg=f"{k} {COMBOS[i]}")
    assert not np.allclose(t_params["dense_2.W"], params["dense_2.W"]), "nothing was trained"


@pytest.mark.parametrize("name", list(MAX_NORM))
def test_max_norm_matches_native(trained, name):
    graph, params, (x, t), d = trained[len(COMBOS) + list(MAX_NORM).index(name)]
    n_losses, n_params, _ = cs.native_steps(graph, params, {"x": x}, t, STEPS)
    t_losses = json.loads((d / "losses.json").read_text())
    t_params = dict(np.load(d / "trained.npz"))
    tol = TOLERANCE[graph.training.optimizer]
    np.testing.assert_allclose(t_losses, n_losses, rtol=tol, atol=tol)
    for k in n_params:
        scale = max(1.0, float(np.abs(n_params[k]).max()))
        np.testing.assert_allclose(t_params[k], n_params[k], rtol=tol, atol=tol * scale, err_msg=k)
    norms = np.sqrt((t_params["convolution_1.W"] ** 2).sum(axis=(1, 2, 3)))
    assert norms.max() <= 0.5 * (1 + 1e-5), norms
    if name == "conv_adam":  # the constraint binds: every filter ends at its limit
        np.testing.assert_allclose(norms, 0.5, rtol=1e-5)


def test_no_combination_is_refused():
    for combo in COMBOS:
        graph = load_text(MODEL % block(*combo), "settings.net")
        if combo in REFUSED:
            with pytest.raises(Exception, match="E802"):
                emit(graph, "tf-estimator")
        else:
            emit(graph, "tf-estimator")


def test_the_combinations_cover_every_choice():
    from test_train_settings import LOSSES, OPTIMIZERS, REGULARISERS, SCHEDULES

    for i, choices in enumerate((OPTIMIZERS, SCHEDULES, REGULARISERS, LOSSES)):
        assert {c[i] for c in COMBOS} == set(choices)


SCRIPT_BLOCK = """    optimizer = SGD(lr=1.0, momentum=0.5)
    loss = squared_error
    lr_schedule = exponential(gamma=0.9)
    batch_size = 16
    epochs = 40
    seed = 7
    validation_split = 0.25
    early_stopping = 1
    log_every = 4
    metrics = [accuracy, top_k_accuracy(k=2), confusion_matrix]"""


def test_the_script_honours_validation_split_early_stopping_log_every_and_metrics(tmp_path):
    """main() of the generated tf.estimator script with the script-level keys: the validation split is the
    LAST quarter of the training set (its printed loss is the saved weights' loss there), the run stops once
    the validation loss has not improved for a patience of 1, a line is logged every 4 steps with the
    per-epoch schedule's rate, and the final report has the top-2 accuracy and the confusion matrix of the
    saved weights."""
    from netdsl.exec.graph import Executor

    py = _python("tf-estimator")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)  # a learnable rule, 3 classes
    np.savez(tmp_path / "d.npz", x_train=x[:160], y_train=y[:160], x_test=x[160:], y_test=y[160:])
    graph = load_text(MODEL % SCRIPT_BLOCK, "script.net")
    (tmp_path / "script.py").write_text(emit(graph, "tf-estimator"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONDONTWRITEBYTECODE="1")
    run = subprocess.run([py, str(tmp_path / "script.py"), "--data", f"npz:{tmp_path / 'd.npz'}", "--out-dir",
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=900, cwd=tmp_path,
                         env=env, check=False)
    assert run.returncode == 0, run.stderr[-4000:]
    lines = run.stdout.splitlines()
    epochs = [line for line in lines if "validation accuracy" in line]
    assert 1 < len(epochs) < 40 and any(line.startswith("early stopping after epoch") for line in lines), lines
    logged = [line for line in lines if ", step " in line]
    assert [line.split(":")[0] for line in logged] == [f"epoch {e}, step {s}/8" for e in range(1, len(epochs) + 1)
                                                      for s in (4, 8)]  # 120 samples / 16 = 8 steps
    for e, line in enumerate(logged[::2]):  # exponential(gamma=0.9) per epoch
        assert float(line.split("lr ")[1]) == pytest.approx(1.0 * 0.9 ** e, rel=1e-5)
    weights = dict(np.load(tmp_path / "out" / "Settings.npz"))
    ex = Executor(graph, weights)
    val = ex.forward({"x": x[120:160]})["y"] - np.eye(3, dtype=np.float32)[y[120:160]]
    val_loss = float((val * val).mean())
    assert float(epochs[-1].split("validation loss ")[1].split(",")[0]) == pytest.approx(val_loss, abs=1e-4)
    scores = ex.forward({"x": x[160:]})["y"]
    top2 = (np.argsort(-scores, axis=1)[:, :2] == y[160:, None]).any(axis=1).mean()
    assert f"test top 2 accuracy: {100 * top2:.2f}%" in lines
    at = lines.index("confusion matrix (rows: true class, columns: predicted):")
    table = np.array([[int(v) for v in line.split()[1:]] for line in lines[at + 2:at + 5]])
    expected = np.zeros((3, 3), np.int64)
    np.add.at(expected, (y[160:], scores.argmax(axis=1)), 1)
    np.testing.assert_array_equal(table, expected)
    assert not list(tmp_path.glob("*-estimator-*")), "a temporary model_dir was left behind"
