"""The train block's settings (issue 18) in the generated PyTorch module, against netdsl's executor.

Each seeded combination of tests/test_train_settings.py (optimizer x schedule x regulariser x loss) is
emitted for PyTorch, imported into this process and trained for 20 steps through make_trainer() and
train_step(), the API conformance_driver.py calls; every step's loss and the final weights must agree with
native() (exec/steprule.StepRule + exec/optim.py) to 1e-4, relative to their size. The script-level keys
(validation_split, log_every, early_stopping, metrics) are checked through the script's own main().
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from test_seed_setups import SEEDS
from test_seed_setups import digits as seed_digits  # noqa: F401  (a fixture)
from test_train_settings import TOLERANCE, batches, native
from train_combos import MODEL, block, combinations

from netdsl.emit.base import emit
from netdsl.exec.train import Options
from netdsl.exec.train import Trainer as NativeTrainer
from netdsl.exec.weights import init_params
from netdsl.frontend import load_text

torch = pytest.importorskip("torch")

COMBOS = combinations(48, seed=18)
# a combination the PyTorch target still refuses (E802), with the reason; none at present
EXPECTED_REFUSALS: dict = {}


def import_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def generated(text, tmp_path, name):
    graph = load_text(text, f"{name}.net")
    path = tmp_path / f"{name}.py"
    path.write_text(emit(graph, "pytorch"))
    return graph, import_module(path, name)


def torch_run(mod, params, data, targets_of, steps_per_epoch=4):
    """Losses of 20 train_step() calls and the final canonical weights, from netdsl's initial weights."""
    torch.manual_seed(0)
    model = mod.build_model()
    state = model.state_dict()
    with torch.no_grad():
        for name, (_, key) in mod.WEIGHTS.items():
            state[key].copy_(torch.from_numpy(params[name]))
    trainer = mod.make_trainer(model, steps_per_epoch=steps_per_epoch)
    losses = [mod.train_step(model, trainer, {"x": x}, targets_of(y)) for x, y in data]
    state = model.state_dict()
    return losses, {name: state[key].detach().numpy() for name, (_, key) in mod.WEIGHTS.items()}


def one_hot(y):
    return np.eye(3, dtype=np.float32)[y]


def test_every_combination_matches_native_over_twenty_steps(tmp_path):
    """All 48 combinations in one process (CI has two cores): emit, import, 20 steps, compare."""
    data = batches()
    failures, checked = [], 0
    for i, combo in enumerate(COMBOS):
        if combo in EXPECTED_REFUSALS:
            continue
        graph, mod = generated(MODEL % block(*combo), tmp_path, f"combo_{i}")
        params = init_params(graph, 0)
        n_losses, n_params = native(graph, params, data)
        floats = graph.training.loss != "cross_entropy_with_softmax"
        # cross-entropy takes int labels; the other losses float targets of the output's shape
        t_losses, t_params = torch_run(mod, params, data, one_hot if floats else (lambda y: y))
        tol = TOLERANCE[graph.training.optimizer]
        try:
            np.testing.assert_allclose(t_losses, n_losses, rtol=tol, atol=tol)
            for k in n_params:
                np.testing.assert_allclose(t_params[k], n_params[k], rtol=tol, atol=tol, err_msg=k)
        except AssertionError as e:
            failures.append(f"{combo}: {e}")
        assert not np.allclose(t_params["dense_2.W"], params["dense_2.W"]), f"nothing was trained: {combo}"
        checked += 1
    assert not failures, "\n".join(failures)
    assert checked >= 40


def test_one_hot_targets_train_as_labels_do(tmp_path):
    """cross_entropy_with_softmax on one-hot float targets: the same losses and weights as on labels."""
    data = batches()
    for loss in ("cross_entropy_with_softmax", "cross_entropy_with_softmax(reduction=sum)"):
        graph, mod = generated(MODEL % block("SGD(lr=0.05, momentum=0.9)", None, None, loss), tmp_path,
                               loss.split("(")[0] + ("_sum" if "sum" in loss else ""))
        params = init_params(graph, 0)
        a_losses, a_params = torch_run(mod, params, data, lambda y: y)
        b_losses, b_params = torch_run(mod, params, data, one_hot)
        n_losses, _ = native(graph, params, data)
        np.testing.assert_allclose(b_losses, a_losses, rtol=1e-6)
        np.testing.assert_allclose(b_losses, n_losses, rtol=1e-4)
        for k in a_params:
            np.testing.assert_allclose(b_params[k], a_params[k], rtol=1e-6, atol=1e-7)


def test_the_schedule_continues_from_a_checkpointed_trainer(tmp_path):
    """The schedule's step count is in the trainer's state: 10 steps, a fresh trainer loaded with that
    state, 10 more steps give the 20-step run's weights."""
    text = MODEL % block("SGD(lr=0.1, decay=0.05)", "step(step_size=1, gamma=0.7)", "clip_norm = 0.5", "l2")
    graph, mod = generated(text, tmp_path, "resumed")
    params = init_params(graph, 0)
    data = batches()
    _, straight = torch_run(mod, params, data, one_hot)
    model = mod.build_model()
    state = model.state_dict()
    with torch.no_grad():
        for name, (_, key) in mod.WEIGHTS.items():
            state[key].copy_(torch.from_numpy(params[name]))
    trainer = mod.make_trainer(model, steps_per_epoch=4)
    for x, y in data[:10]:
        mod.train_step(model, trainer, {"x": x}, one_hot(y))
    saved = trainer.state_dict()
    trainer = mod.make_trainer(model, steps_per_epoch=4)
    trainer.load_state_dict(saved)
    for x, y in data[10:]:
        mod.train_step(model, trainer, {"x": x}, one_hot(y))
    state = model.state_dict()
    for name, (_, key) in mod.WEIGHTS.items():
        np.testing.assert_allclose(state[key].numpy(), straight[name], rtol=1e-6, atol=1e-7)


def test_scheduled_lr_is_the_executors(tmp_path):
    """The shared helper (common/training.py.j2) against exec/steprule.schedule_factor, exactly: one module,
    its TRAINING replaced by each block's."""
    from train_combos import OPTIMIZERS, SCHEDULES

    from netdsl.emit.common import training_dict
    from netdsl.exec.steprule import schedule_factor

    _, mod = generated(MODEL % block("SGD(lr=0.1)", None, None, "l2"), tmp_path, "lr")
    for schedule in SCHEDULES:
        for opt in OPTIMIZERS:
            graph = load_text(MODEL % block(opt, schedule, None, "l2"), "lr.net")
            training = graph.training
            mod.TRAINING.clear()
            mod.TRAINING.update(training_dict(graph))
            base = training.opt("lr")
            for per_epoch in (None, 3, 4):
                for step in range(30):
                    epoch = step // per_epoch if per_epoch else 0
                    assert mod.scheduled_lr(base, step, per_epoch) == schedule_factor(training, epoch, step, base)


KEYS_MODEL = MODEL % """    optimizer = SGD(lr=2.0)
    batch_size = 16
    epochs = 40
    seed = 7
    validation_split = 0.25
    early_stopping = 1
    log_every = 4
    metrics = [accuracy, top_k_accuracy(k=2), confusion_matrix]"""


def rule_data(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)  # a learnable rule, 3 classes
    np.savez(tmp_path / "d.npz", x_train=x[:160], y_train=y[:160], x_test=x[160:], y_test=y[160:])
    return x, y


def test_the_script_honours_validation_split_early_stopping_log_every_and_metrics(tmp_path, capsys):
    """The generated script's main() with the script-level keys, as test_train_settings.py runs `netdsl run`."""
    rule_data(tmp_path)
    _, mod = generated(KEYS_MODEL, tmp_path, "keys")
    mod.main(["--data", f"npz:{tmp_path / 'd.npz'}", "--out-dir", str(tmp_path / "out")])
    text = capsys.readouterr().out
    assert "early stopping after epoch" in text
    epochs_run = text.count("validation accuracy")
    assert 1 < epochs_run < 40
    assert text.count("step 4/8") == epochs_run  # 120 training samples / 16 = 8 steps; a line every 4
    assert text.count("step 8/8") == epochs_run
    assert "test top 2 accuracy" in text and "confusion matrix (rows: true class" in text
    rows = [line.split() for line in text.splitlines() if line[:5].strip() in ("0", "1", "2") and len(line.split()) == 4]
    assert sum(int(v) for row in rows[-3:] for v in row[1:]) == 40  # every test sample counted once
    # it stops at the first epoch whose validation loss is no new best
    losses = [float(line.split(": validation loss ")[1].split(",")[0]) for line in text.splitlines()
              if ": validation loss " in line]
    stops = [i for i in range(1, len(losses)) if losses[i] >= min(losses[:i])]
    assert stops and stops[0] == len(losses) - 1  # patience 1: the first epoch without a new best stops


def test_the_helpers_agree_with_netdsl_run(tmp_path):
    """split_validation, the metrics and EarlyStopping of common/training.py.j2 against the executor's own."""
    from netdsl.data.base import Dataset
    from netdsl.data.spec import carve_validation

    x, y = rule_data(tmp_path)
    graph, mod = generated(KEYS_MODEL, tmp_path, "helpers")
    ds = Dataset(x_train=x[:160], y_train=y[:160], x_test=x[160:], y_test=y[160:])
    carved = carve_validation(ds, 0.25)
    x_tr, y_tr, x_val, y_val = mod.split_validation(x[:160], y[:160])
    assert np.array_equal(x_tr, carved.x_train) and np.array_equal(y_val, carved.y_val)
    assert np.array_equal(x_val, carved.x_val) and np.array_equal(y_tr, carved.y_train)
    # the same weights, the same test scores: the same report lines as netdsl run's
    lines = []
    native_trainer = NativeTrainer(graph, init_params(graph, 3), carved, Options(progress=False),
                                   dataset_name="npz", log=lines.append)
    native_trainer.report_metrics()
    model = mod.build_model()
    state = model.state_dict()
    with torch.no_grad():
        for name, (_, key) in mod.WEIGHTS.items():
            state[key].copy_(torch.from_numpy(native_trainer.ex.params[name]))
    scores = mod.predict(model, {"x": x[160:]})["y"]
    assert mod.metric_lines(scores, y[160:]) == lines
    stopping = mod.EarlyStopping()
    assert [stopping.update(v) for v in (1.0, 0.9, 0.95)] == [False, False, True]
    assert mod.log_due(8) and not mod.log_due(6)


def test_max_norm_matches_native(tmp_path):
    """max_norm on a Dense and on a Convolution (per filter): 20 steps, losses and weights as native, and the
    constraint holds."""
    from test_max_norm import CONV, DENSE, _native

    for i, (text, shape) in enumerate(((DENSE % "0.8", (8, 6)), (CONV, (4, 2, 6, 6)))):
        graph, mod = generated(text, tmp_path, f"max_norm_{i}")
        params = init_params(graph, 0)
        rng = np.random.default_rng(2)
        data = [(rng.standard_normal(shape).astype(np.float32), rng.integers(0, 3, shape[0])) for _ in range(20)]
        n_losses, n_params = _native(graph, params, data)
        t_losses, t_params = torch_run(mod, params, data, lambda y: y)
        np.testing.assert_allclose(t_losses, n_losses, rtol=1e-4, atol=1e-5)
        for k in t_params:
            np.testing.assert_allclose(t_params[k], n_params[k], rtol=1e-4, atol=1e-5, err_msg=k)
        for layer in graph.layers:
            bound = layer.attr("max_norm") if layer.kind in ("Dense", "Convolution") else None
            if bound is not None:
                w = t_params[layer.param("W").name].astype(np.float64)
                norms = np.linalg.norm(w.reshape(len(w), -1), axis=1)
                assert norms.max() <= bound * (1 + 1e-6) and norms.max() > bound * 0.99, layer.name


@pytest.mark.parametrize("path", SEEDS, ids=[Path(p).stem for p in SEEDS])
def test_seed_setup_one_short_epoch(path, seed_digits, tmp_path, capsys):  # noqa: F811 (the fixture)
    """Each seed post's training setup (models/seed_*.net) through its generated PyTorch script's main(): one
    epoch on tests/test_seed_setups.py's small MNIST-shaped dataset, from netdsl's initial weights."""
    from netdsl.exec.weights import save_weights
    from netdsl.frontend import load

    graph = load(path)
    _, mod = generated(Path(path).read_text(), tmp_path, Path(path).stem)
    start = init_params(graph, 0)
    save_weights(tmp_path / "init.npz", start)
    mod.main(["--data", f"npz:{seed_digits}", "--epochs", "1", "--init", str(tmp_path / "init.npz"),
              "--out-dir", str(tmp_path / "out")])
    text = capsys.readouterr().out
    found = re.search(r"epoch 1/1: loss ([\d.e+-]+|nan|inf), test accuracy ([\d.]+)", text)
    assert found and np.isfinite(float(found.group(1))) and 0 <= float(found.group(2)) <= 1, text
    with np.load(tmp_path / "out" / f"{graph.name}.npz") as w:
        trained = {k: w[k] for k in w.files}
    assert any(not np.array_equal(trained[k], start[k]) for k in start), "nothing was trained"
    for layer in graph.layers:  # max_norm held after the last update
        m = layer.attr("max_norm") if layer.kind in ("Dense", "Convolution") else None
        if m is not None:
            W = trained[layer.param("W").name].astype(np.float64)
            assert np.sqrt((W.reshape(len(W), -1) ** 2).sum(axis=1)).max() <= m * (1 + 1e-6)
