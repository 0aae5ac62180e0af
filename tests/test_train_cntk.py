"""The train block's settings (issue 18) on the CNTK target, over 20 steps, against the native executor.

The seeded combinations of tests/test_train_settings.py (optimizer x schedule x regulariser x loss) each
become a generated CNTK module; ONE subprocess in the CNTK venv trains every module for 20 steps on the same
batches (make_trainer(steps_per_epoch=4), train_step per batch) and exports the weights. Every step's loss
and the final weights must match netdsl's executor (test_train_settings.native) to 1e-4 relative.
Cross-entropy combinations alternate between class-id and one-hot float targets; the other losses get
float targets shaped like the output, as conformance passes them.

CNTK's venv comes from NETDSL_CNTK_PYTHON; without it the test SKIPs ("CNTK NOT EXECUTED").
"""
from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
from test_emit_legacy import _python
from test_train_settings import STEPS, batches, native
from train_combos import MODEL, block, combinations

from netdsl.emit.base import emit
from netdsl.emit.cntk import step_rule
from netdsl.errors import NetdslError
from netdsl.exec.weights import init_params
from netdsl.frontend import load_text

# the very combinations test_train_settings checks against torch, and a few that CNTK's own sgd, momentum_sgd and
# nesterov learners compute (none of the drawn ones does: each has a regulariser, a sum or a schedule with momentum);
# the first twice, as cross-entropy alternates between class ids and one-hot targets
COMBOS = combinations(48, seed=18) + [
    ("SGD(lr=0.05, momentum=0.9)", None, None, "cross_entropy_with_softmax"),
    ("SGD(lr=0.05, momentum=0.9)", None, None, "cross_entropy_with_softmax"),
    ("SGD(lr=0.02, momentum=0.9, nesterov=True)", None, "lr_unit = sample", "squared_error"),
    ("SGD(lr=0.1, decay=0.05)", "step(step_size=5, gamma=0.5, unit=step)", "lr_unit = sample", "l2"),
    ("SGD(lr=0.5)", "cosine(t_max=15, eta_min=0.001, unit=step)", None, "binary_cross_entropy_with_logits"),
]
# the same 1e-4 for every optimizer: the numpy learner repeats exec/optim.py's float32 operations
TOLERANCE = {"SGD": 1e-4, "Adam": 1e-4, "AdamW": 1e-4, "RMSProp": 1e-4, "Adadelta": 1e-4, "Adagrad": 1e-4}
# combination -> why CNTK refuses it (E802); none today: a refusal appearing would fail the test
EXPECTED_REFUSALS: dict = {}

DRIVER = r'''
import importlib.util
import json
import sys

import numpy as np


def main():
    jobs = json.load(open(sys.argv[1]))
    results = []
    for i, job in enumerate(jobs):
        spec = importlib.util.spec_from_file_location("m%d" % i, job["module"])
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        model = mod.build_model()
        mod.load_netdsl_weights(model, job["weights"])
        trainer = mod.make_trainer(model, steps_per_epoch=4)
        data = np.load(job["data"])
        targets = data["targets"]
        losses = [mod.train_step(model, trainer, {job["input"]: data["x"][s]}, targets[s]) for s in range(len(targets))]
        mod.export_netdsl_weights(model, job["out"])
        results.append({"losses": losses, "native": bool(mod.__dict__.get("_StepRuleLearner") is None)})
    json.dump(results, open(sys.argv[2], "w"))


main()
'''


def _run(py, tmp_path, jobs) -> list:
    """Every job in ONE process of CNTK's venv: [{"losses": [...], "native": CNTK's own learner?}]."""
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    (tmp_path / "driver.py").write_text(DRIVER)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([py, str(tmp_path / "driver.py"), str(tmp_path / "jobs.json"), str(tmp_path / "results.json")],
                          check=False, capture_output=True, text=True, timeout=900, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, f"CNTK driver exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return json.loads((tmp_path / "results.json").read_text())


def _targets(graph, data, one_hot: bool) -> np.ndarray:
    ys = np.stack([y for _, y in data])
    if graph.training.loss == "cross_entropy_with_softmax" and not one_hot:
        return ys.astype(np.int64)
    return np.eye(3, dtype=np.float32)[ys]


def test_twenty_steps_of_every_combination_match_native(tmp_path):
    py = _python("cntk")
    data = batches()
    jobs, expected, refused = [], [], {}
    for i, combo in enumerate(COMBOS):
        graph = load_text(MODEL % block(*combo), "settings.net")
        try:
            code = emit(graph, "cntk")
        except NetdslError as e:
            refused[combo] = e.diagnostics[0].message
            continue
        params = init_params(graph, 0)
        (tmp_path / f"m{i}.py").write_text(code)
        np.savez(tmp_path / f"w{i}.npz", **params)
        np.savez(tmp_path / f"d{i}.npz", x=np.stack([x for x, _ in data]),
                 targets=_targets(graph, data, one_hot=i % 2 == 1))
        jobs.append({"module": str(tmp_path / f"m{i}.py"), "weights": str(tmp_path / f"w{i}.npz"),
                     "data": str(tmp_path / f"d{i}.npz"), "input": "x", "out": str(tmp_path / f"o{i}.npz")})
        expected.append((combo, graph, native(graph, params, data), params))
    assert set(refused) == set(EXPECTED_REFUSALS), refused
    results = _run(py, tmp_path, jobs)
    assert len(results) == len(expected) >= 40
    learners = set()
    for job, result, (combo, graph, (n_losses, n_params), params) in zip(jobs, results, expected):
        tol = TOLERANCE[graph.training.optimizer]
        assert len(result["losses"]) == STEPS
        np.testing.assert_allclose(result["losses"], n_losses, rtol=tol, atol=tol, err_msg=str(combo))
        out = np.load(job["out"])
        for k, v in n_params.items():
            np.testing.assert_allclose(out[k], v, rtol=tol, atol=tol * max(1.0, float(np.abs(v).max())),
                                       err_msg=f"{k} {combo}")
        assert not np.allclose(out["dense_2.W"], params["dense_2.W"]), f"nothing was trained: {combo}"
        native_learner = step_rule(graph.training, False)["native_learner"]
        assert result["native"] == native_learner, combo
        learners.add(native_learner)
    assert learners == {True, False}  # both CNTK's own learners and the numpy one were exercised


SCRIPT_MODEL = """model Keys
x = Input(6)
h = Dense(8, activation=tanh)(x)
y = Dense(3)(h)
output y
train {
    optimizer = SGD(lr=0.5)
    loss = squared_error
    batch_size = 16
    epochs = 40
    seed = 7
    validation_split = 0.25
    early_stopping = 1
    log_every = 4
    metrics = [accuracy, top_k_accuracy(k=2), confusion_matrix]
}
"""


def test_the_script_honours_validation_split_early_stopping_log_every_and_metrics(tmp_path):
    """The generated script's main(): the last quarter of the training set held out, its loss reported each
    epoch and checked against the executor on the saved weights, early stopping, a line every 4 steps, and
    top-2 accuracy and the confusion matrix of the final weights as netdsl run words them."""
    from netdsl.exec import losses

    py = _python("cntk")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)  # a learnable rule, 3 classes
    np.savez(tmp_path / "d.npz", x_train=x[:160], y_train=y[:160], x_test=x[160:], y_test=y[160:])
    graph = load_text(SCRIPT_MODEL, "keys.net")
    (tmp_path / "keys.py").write_text(emit(graph, "cntk"))
    proc = subprocess.run([py, str(tmp_path / "keys.py"), "--data", f"npz:{tmp_path / 'd.npz'}", "--out-dir",
                           str(tmp_path / "out")], check=False, capture_output=True, text=True, timeout=600,
                          cwd=str(tmp_path),
                          env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    val = [line for line in lines if ": validation loss " in line]
    assert any(line.startswith("early stopping after epoch") for line in lines)
    assert 1 < len(val) < 40
    assert sum(line.endswith("lr 0.5") and ", step 4/8:" in line for line in lines) == len(val)  # 120 / 16: 8 steps
    # the last epoch's validation loss and the test metrics, recomputed by the executor from the saved weights
    from netdsl.exec.graph import Executor

    weights = dict(np.load(tmp_path / "out" / "Keys.npz"))
    ex = Executor(graph, weights)
    x_val, y_val = x[120:160], y[120:160]
    out = ex.forward({"x": x_val}, training=False, rng=np.random.default_rng(0))["y"]
    loss, _ = losses.mse(out, losses.one_hot(y_val, out))
    assert float(val[-1].split("validation loss ")[1].split(",")[0]) == pytest.approx(loss, abs=1e-4)
    scores = ex.forward({"x": x[160:]}, training=False, rng=np.random.default_rng(0))["y"]
    top2 = (np.argsort(-scores, axis=1)[:, :2] == y[160:, None]).any(axis=1).mean()
    assert f"test top 2 accuracy: {100 * top2:.2f}%" in lines
    at = lines.index("confusion matrix (rows: true class, columns: predicted):")
    matrix = np.array([[int(v) for v in line.split()[1:]] for line in lines[at + 2:at + 5]])
    expected = np.zeros((3, 3), int)
    np.add.at(expected, (y[160:], scores.argmax(axis=1)), 1)
    np.testing.assert_array_equal(matrix, expected)


# models whose gradient or loss CNTK shapes otherwise: token ids through an embedding (a sparse gradient) and an
# LSTM into a class per time step; a feature map classified per position over its channel axis; a batch norm
STRUCTURES = {
    "tagger": ("""model Tagger
words = SequenceInput(vocab=7)
tags = Sequential([Embedding(4), Recurrence(LSTM(5)), Dense(3)])(words)
output tags
train {
    optimizer = Adam(lr=0.01)
    loss = cross_entropy_with_softmax(reduction=sum)
    lr_unit = sample
    clip_norm = 0.5
    lr_schedule = step(step_size=1, gamma=0.7)
}
""", "words", "tags"),
    "feature_map": ("""model Positions
image = Input((2, 5, 5))
z = Convolution((3, 3), 3, pad=True)(image)
output z
train {
    optimizer = RMSProp(lr=0.01, rho=0.9, momentum=0.5, centered=True)
    loss = cross_entropy_with_softmax(reduction=sum)
    weight_decay = l2(0.01)
}
""", "image", "z"),
    "batch_norm": ("""model Normed
x = Input(6)
y = Sequential([Dense(5), BatchNormalization(), relu, Dense(3)])(x)
output y
train {
    optimizer = Adagrad(lr=0.1, initial_accumulator=0.1)
    loss = squared_error(reduction=sum)
    weight_decay = decoupled(0.05)
    clip_value = 0.05
    lr_schedule = exponential(gamma=0.8)
    batch_size = 8
}
""", "x", "y"),
    # max_norm after the update, on CNTK's own momentum_sgd and on the numpy learner (small limits, so they bind)
    "max_norm_sgd": ("""model Limited
image = Input((2, 5, 5))
c = Convolution((3, 3), 3, activation=relu, max_norm=0.3)(image)
y = Dense(3, max_norm=0.5)(c)
output y
train {
    optimizer = SGD(lr=0.5, momentum=0.9)
}
""", "image", "y"),
    "max_norm_adam": ("""model LimitedAdam
x = Input(6)
h = Dense(5, activation=tanh, max_norm=0.4)(x)
y = Dense(3, max_norm=0.3)(h)
output y
train {
    optimizer = Adam(lr=0.05)
    loss = l2
}
""", "x", "y"),
}


def _native_steps(graph, params, xs, ys, inp, out):
    """netdsl's executor, StepRule and optimizer over the batches, as test_train_settings.native for any model."""
    from netdsl.exec import feed, optim
    from netdsl.exec.graph import Executor
    from netdsl.exec.steprule import StepRule, max_norms

    tr = graph.training
    ex = Executor(graph, {k: v.copy() for k, v in params.items()})
    loss_fn = feed.make_loss(tr, 3)
    opt = optim.make_optimizer(tr)
    rule = StepRule(tr, opt.lr, max_norms(graph))
    trainable = {n: ex.params[n] for n in ex.trainable}
    losses = []
    for step, (x, y) in enumerate(zip(xs, ys)):
        z = ex.forward({inp: x}, training=True, rng=np.random.default_rng(0))[out]
        loss, d = loss_fn(z, y)
        losses.append(loss + rule.penalty(trainable))
        rule.step(opt, trainable, ex.backward({out: d}), step // 4, step, len(y))
    return losses, {k: ex.params[k].copy() for k in trainable}


def test_twenty_steps_on_sequences_feature_maps_batch_norm_and_max_norm_match_native(tmp_path):
    from netdsl.exec.steprule import max_norms

    py = _python("cntk")
    rng = np.random.default_rng(3)
    jobs, expected = [], []
    for name, (text, inp, out) in STRUCTURES.items():
        graph = load_text(text, f"{name}.net")
        params = init_params(graph, 0)
        if name == "tagger":
            xs = rng.integers(0, 7, (STEPS, 3, 4))
            ys = rng.integers(0, 3, (STEPS, 3, 4))
        elif name == "feature_map":
            xs = rng.standard_normal((STEPS, 4, 2, 5, 5)).astype(np.float32)
            ys = rng.integers(0, 3, (STEPS, 4, 5, 5))
        elif name == "max_norm_sgd":
            xs = rng.standard_normal((STEPS, 4, 2, 5, 5)).astype(np.float32)
            ys = rng.integers(0, 3, (STEPS, 4))
        else:
            xs = rng.standard_normal((STEPS, 8, 6)).astype(np.float32)
            ys = rng.integers(0, 3, (STEPS, 8))
        targets = ys if graph.training.loss == "cross_entropy_with_softmax" else np.eye(3, dtype=np.float32)[ys]
        (tmp_path / f"{name}.py").write_text(emit(graph, "cntk"))
        np.savez(tmp_path / f"{name}_w.npz", **params)
        np.savez(tmp_path / f"{name}_d.npz", x=xs, targets=targets)
        jobs.append({"module": str(tmp_path / f"{name}.py"), "weights": str(tmp_path / f"{name}_w.npz"),
                     "data": str(tmp_path / f"{name}_d.npz"), "input": inp, "out": str(tmp_path / f"{name}_o.npz")})
        expected.append((name, graph, _native_steps(graph, params, xs, ys, inp, out), params))
    for job, result, (name, graph, (n_losses, n_params), params) in zip(jobs, _run(py, tmp_path, jobs), expected):
        assert result["native"] == (name == "max_norm_sgd"), name  # CNTK's momentum_sgd there, else numpy
        np.testing.assert_allclose(result["losses"], n_losses, rtol=1e-4, atol=1e-4, err_msg=name)
        trained = np.load(job["out"])
        for k, v in n_params.items():
            np.testing.assert_allclose(trained[k], v, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(v).max())),
                                       err_msg=f"{name} {k}")
            assert not np.array_equal(v, params[k]) or "bias" in k, f"{name}: {k} did not train"
        for k, m in max_norms(graph).items():  # the limits bind: some unit sits at its max_norm
            w = trained[k].reshape(len(trained[k]), -1)
            assert np.isclose(np.linalg.norm(w, axis=1), m, rtol=1e-5).any(), (name, k)


SEED_SCRIPT_DRIVER = r'''
import importlib.util
import json
import sys


def main():
    jobs = json.load(open(sys.argv[1]))
    for i, job in enumerate(jobs):
        spec = importlib.util.spec_from_file_location("s%d" % i, job["module"])
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        print("== " + job["name"], flush=True)
        mod.main(job["argv"])


main()
'''


def test_the_seed_setups_train_one_short_epoch_through_the_script(tmp_path):
    """Each seed post's training setup (models/seeds/: per-sample Adadelta, max_norm with dropout, SGD with decay
    and nesterov, sum-MSE, L2Loss) through the generated script's main() on 300 real MNIST images: it trains,
    tests and saves, all in one CNTK process."""
    import re
    from pathlib import Path

    from netdsl.frontend import load

    py = _python("cntk")
    root = Path(__file__).resolve().parent.parent
    data = Path(os.environ.get("NETDSL_DATA", str(root.parent / "shared" / "data"))) / "mnist"
    if not data.is_dir():
        pytest.skip(f"no MNIST at {data}")
    jobs = []
    for path in sorted((root / "models" / "seeds").glob("seed_*.net")):
        (tmp_path / f"{path.stem}.py").write_text(emit(load(str(path)), "cntk"))
        jobs.append({"name": path.stem, "module": str(tmp_path / f"{path.stem}.py"),
                     "argv": ["--data-dir", str(data), "--epochs", "1", "--limit-train", "300", "--out-dir",
                              str(tmp_path / "out")]})
    assert len(jobs) == 6
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    (tmp_path / "driver.py").write_text(SEED_SCRIPT_DRIVER)
    proc = subprocess.run([py, str(tmp_path / "driver.py"), str(tmp_path / "jobs.json")], check=False,
                          capture_output=True, text=True, timeout=900, cwd=str(tmp_path),
                          env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    runs = proc.stdout.split("== ")[1:]
    assert [r.splitlines()[0] for r in runs] == [j["name"] for j in jobs]
    for run in runs:
        loss, accuracy = re.search(r"epoch 1/1: loss ([0-9.]+), test accuracy ([0-9.]+)", run).groups()
        # a short epoch only: seed 002's sigmoid MLPs are still near chance after it (natively too)
        assert np.isfinite(float(loss)) and 0 <= float(accuracy) <= 1, run
        assert "saved " in run


@pytest.mark.parametrize("target", ["pytorch", "keras", "tf-estimator", "gluon", "cntk"])
def test_script_keys_on_token_ids_are_refused_where_written(target):
    """A token model trains in main() through the shared train_tokens, which implements log_every but not
    validation_split, early_stopping or metrics beyond accuracy: every target refuses those (E802 at the
    key), and compiles the same model without them."""
    text = """model Tagger
words = SequenceInput(vocab=7)
tags = Sequential([Embedding(4), Recurrence(LSTM(5)), Dense(3)])(words)
output tags
train {
    optimizer = Adam(lr=0.01)
    log_every = 5
    validation_split = 0.1
    metrics = [accuracy, confusion_matrix]
}
"""
    with pytest.raises(NetdslError) as e:
        emit(load_text(text, "t.net"), target)
    found = {(d.code, text.splitlines()[d.span.line - 1].strip()) for d in e.value.diagnostics}
    assert found == {("E802", "validation_split = 0.1"), ("E802", "metrics = [accuracy, confusion_matrix]")}
    emit(load_text(text.replace("    validation_split = 0.1\n", "").replace(", confusion_matrix", ""), "t.net"), target)
