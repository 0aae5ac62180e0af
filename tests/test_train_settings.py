"""The train block's optimisation settings (issue 18) in the native executor, over 20 steps.

Each combination of optimizer x schedule x regulariser x loss, drawn by a seeded generator, trains a small
MLP for 20 steps with netdsl's executor (exec/steprule.py + exec/optim.py) and with a PyTorch loop built from
torch.optim, torch's schedulers and clip_grad_* where they exist, written from docs/language.md's formulas
where they do not. Losses and final weights must agree to 1e-4 (relative), per optimizer as stated below.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from netdsl import ir
from netdsl.errors import NetdslError
from netdsl.exec import feed, optim
from netdsl.exec.graph import Executor
from netdsl.exec.steprule import StepRule
from netdsl.exec.weights import init_params
from netdsl.frontend import load_text
from train_combos import LOSSES, MODEL, OPTIMIZERS, REGULARISERS, SCHEDULES, block, combinations

torch = pytest.importorskip("torch")

STEPS = 20
# loss and weights after 20 steps, relative to their size: float32 rounding compounds differently per optimizer
TOLERANCE = {"SGD": 1e-4, "Adam": 1e-4, "AdamW": 1e-4, "RMSProp": 1e-4, "Adadelta": 1e-4, "Adagrad": 1e-4}

def batches(seed=0):
    rng = np.random.default_rng(seed)
    # epochs of 4 steps, so per-epoch schedules change inside 20 steps
    return [(rng.standard_normal((8, 6)).astype(np.float32), rng.integers(0, 3, 8)) for _ in range(STEPS)]


def native(graph, params, data):
    tr = graph.training
    ex = Executor(graph, {k: v.copy() for k, v in params.items()})
    loss_fn = feed.make_loss(tr, 3)
    opt = optim.make_optimizer(tr)
    rule = StepRule(tr, opt.lr)
    trainable = {n: ex.params[n] for n in ex.trainable}
    losses = []
    for step, (x, y) in enumerate(data):
        out = ex.forward({"x": x}, training=True, rng=np.random.default_rng(0))["y"]
        loss, d = loss_fn(out, y)
        losses.append(loss + rule.penalty(trainable))
        grads = ex.backward({"y": d})
        rule.step(opt, trainable, grads, step // 4, step, len(y))
    return losses, {k: ex.params[k] for k in trainable}


def reference_lr(base, schedule, epoch, step, decay):
    """docs/language.md's schedule formulas, written out again independently of exec/steprule.py."""
    if schedule is None:
        lr = base
    else:
        name, _, args = schedule.partition("(")
        a = dict(kv.split("=", 1) for kv in _split_args(args.rstrip(")")))
        t = step if a.get("unit") == "step" else epoch
        if name == "step":
            lr = base * float(a["gamma"]) ** (t // int(a["step_size"]))
        elif name == "exponential":
            lr = base * float(a["gamma"]) ** t
        elif name == "piecewise":
            bounds = [int(b) for b in a["boundaries"].strip("[]").split(",")]
            factors = [float(f) for f in a["factors"].strip("[]").split(",")]
            lr = base * factors[len([b for b in bounds if t >= b])]
        else:
            t_max, eta = int(a["t_max"]), float(a["eta_min"])
            lr = eta + (base - eta) * (1 + math.cos(math.pi * min(t, t_max) / t_max)) / 2
    return lr / (1 + decay * step)


def _split_args(text):
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
            continue
        depth += ch == "["
        depth -= ch == "]"
        cur += ch
    return parts + ([cur.strip()] if cur.strip() else [])


def torch_reference(graph, params, data, opt_text, schedule, reg, loss_text):
    tr = graph.training
    o = dict(tr.optimizer_attrs)
    ps = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    plist = list(ps.values())
    name = tr.optimizer
    if name == "SGD":
        opt = torch.optim.SGD(plist, lr=o["lr"], momentum=o["momentum"], nesterov=o["nesterov"])
    elif name == "Adam":
        opt = torch.optim.Adam(plist, lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"])
    elif name == "AdamW":
        opt = torch.optim.AdamW(plist, lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"],
                                weight_decay=o["weight_decay"])
    elif name == "RMSProp" and not o["eps_inside_sqrt"]:
        opt = torch.optim.RMSprop(plist, lr=o["lr"], alpha=o["rho"], eps=o["eps"], momentum=o["momentum"],
                                  centered=o["centered"])
    elif name == "RMSProp":
        opt = None  # TensorFlow's form: written out below
        square = [torch.zeros_like(p) for p in plist]
    elif name == "Adadelta":
        opt = torch.optim.Adadelta(plist, lr=o["lr"], rho=o["rho"], eps=o["eps"])
    else:
        opt = torch.optim.Adagrad(plist, lr=o["lr"], eps=o["eps"], initial_accumulator_value=o["initial_accumulator"])
    wd = tr.weight_decay
    losses = []
    for step, (x, y) in enumerate(data):
        xt = torch.tensor(x)
        h = torch.tanh(xt @ ps["dense_1.W"].T + ps["dense_1.b"])
        out = h @ ps["dense_2.W"].T + ps["dense_2.b"]
        onehot = torch.nn.functional.one_hot(torch.tensor(y), 3).float()
        reduction = "sum" if "sum" in loss_text else "mean"
        if tr.loss == "cross_entropy_with_softmax":
            data_loss = torch.nn.functional.cross_entropy(out, torch.tensor(y), reduction=reduction)
        elif tr.loss == "squared_error":
            data_loss = torch.nn.functional.mse_loss(out, onehot, reduction=reduction)
        elif tr.loss == "l2":
            data_loss = 0.5 * torch.nn.functional.mse_loss(out, onehot)
        else:
            data_loss = torch.nn.functional.binary_cross_entropy_with_logits(out, onehot)
        penalty = 0.5 * wd * sum((p * p).sum() for p in plist) if wd and tr.weight_decay_mode == "l2" else 0.0
        losses.append(float((data_loss + penalty).detach()))
        scale = len(y) if tr.lr_unit == "sample" else 1
        for p in plist:
            p.grad = None
        (data_loss * scale + penalty).backward()
        if tr.clip_value is not None:
            torch.nn.utils.clip_grad_value_(plist, tr.clip_value)
        if tr.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(plist, tr.clip_norm)
        lr = reference_lr(o["lr"], schedule, step // 4, step, o.get("decay", 0.0) if name == "SGD" else 0.0)
        with torch.no_grad():
            if wd and tr.weight_decay_mode == "decoupled":
                for p in plist:
                    p.mul_(1 - lr * wd)
            if opt is None:
                for p, s in zip(plist, square):
                    s.mul_(o["rho"]).add_((1 - o["rho"]) * p.grad * p.grad)
                    p.sub_(lr * p.grad / torch.sqrt(s + o["eps"]))
                continue
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
    return losses, {k: v.detach().numpy() for k, v in ps.items()}


COMBOS = combinations(48, seed=18)


@pytest.mark.parametrize("combo", COMBOS, ids=[f"c{i}" for i in range(len(COMBOS))])
def test_twenty_steps_match_torch(combo):
    opt, schedule, reg, loss = combo
    graph = load_text(MODEL % block(opt, schedule, reg, loss), "settings.net")
    params = init_params(graph, 0)
    data = batches()
    n_losses, n_params = native(graph, params, data)
    t_losses, t_params = torch_reference(graph, params, data, opt, schedule, reg, loss)
    tol = TOLERANCE[graph.training.optimizer]
    np.testing.assert_allclose(n_losses, t_losses, rtol=tol, atol=tol, err_msg=str(combo))
    for k in n_params:
        np.testing.assert_allclose(n_params[k], t_params[k], rtol=tol, atol=tol, err_msg=f"{k} {combo}")
    assert not np.allclose(n_params["dense_2.W"], params["dense_2.W"]), "nothing was trained"


def test_the_drawn_combinations_cover_every_choice():
    for i, choices in enumerate((OPTIMIZERS, SCHEDULES, REGULARISERS, LOSSES)):
        assert {c[i] for c in COMBOS} == set(choices)


def test_settings_reach_the_ir():
    g = load_text(MODEL % """    loss = squared_error(reduction=sum)
    optimizer = SGD(lr=0.05, decay=1e-6, momentum=0.9, nesterov=True)
    lr_schedule = step(step_size=2, gamma=0.5, unit=step)
    weight_decay = l2(0.0005)
    clip_norm = 1.0
    clip_value = 2
    seed = 3
    validation_split = 0.1
    early_stopping = 2
    log_every = 10
    lr_unit = sample
    metrics = [accuracy, top_k_accuracy(k=2), confusion_matrix]""", "s.net")
    t = g.training
    assert (t.loss, dict(t.loss_attrs)) == ("squared_error", {"reduction": "sum"})
    assert t.optimizer == "SGD" and t.opt("decay") == 1e-6 and t.opt("nesterov") is True
    assert (t.schedule, dict(t.schedule_attrs)) == ("step", {"gamma": 0.5, "step_size": 2, "unit": "step"})
    assert (t.weight_decay, t.weight_decay_mode, t.clip_norm, t.clip_value) == (0.0005, "l2", 1.0, 2.0)
    assert (t.seed, t.validation_split, t.early_stopping, t.log_every, t.lr_unit) == (3, 0.1, 2, 10, "sample")
    assert t.metrics == ("accuracy", "top_2_accuracy", "confusion_matrix")
    assert ir.from_json(ir.to_json(g)) == g


@pytest.mark.parametrize("setting, code, where", [
    ("optimizer = RMSprop(lr=-1)", "E103", "-1"),
    ("optimizer = Adagrad(rho=0.9)", "E102", "rho"),
    ("optimizer = Nadam(lr=0.1)", "E403", "Nadam"),
    ("lr_schedule = step(gamma=0.5)", "E104", "step(gamma"),
    ("lr_schedule = piecewise(boundaries=[2, 1], factors=[1, 0.5, 0.1])", "E103", "piecewise("),
    ("lr_schedule = linear(gamma=0.5)", "E103", "linear"),
    ("weight_decay = 0.1", "E103", "0.1"),
    ("clip_norm = 0", "E103", "0"),
    ("loss = squared_error(reduce=sum)", "E102", "reduce"),
    ("loss = squared_error(reduction=max)", "E103", "max"),
    ("metrics = [accuracy, top5]", "E403", "top5"),
    ("early_stopping = 2", "E103", "2"),
    ("lr_unit = batch", "E103", "batch"),
    ("validation_split = 1.5", "E103", "1.5"),
    ("seed = -1", "E103", "-1"),
])
def test_a_wrong_setting_is_located(setting, code, where):
    text = MODEL % ("    " + setting)
    with pytest.raises(NetdslError) as e:
        load_text(text, "bad.net")
    d = e.value.diagnostics[0]
    line = text.splitlines()[d.span.line - 1]
    assert d.code == code and line[d.span.col - 1:].startswith(where), (d.code, d.message, line, d.span.col)


def test_a_target_refuses_a_setting_it_does_not_implement():
    from netdsl.emit.base import emit

    text = MODEL % "    optimizer = RMSProp(lr=0.01)\n    clip_norm = 1.0"
    g = load_text(text, "m.net")
    with pytest.raises(NetdslError) as e:
        emit(g, "gluon")
    found = {(d.code, text.splitlines()[d.span.line - 1].strip()) for d in e.value.diagnostics}
    assert found == {("E802", "optimizer = RMSProp(lr=0.01)"), ("E802", "clip_norm = 1.0")}
    emit(load_text(MODEL % "    optimizer = SGD(lr=0.1)\n    seed = 4", "ok.net"), "gluon")


def test_losses_and_their_gradients_match_torch():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((7, 4)).astype(np.float32)
    y = rng.integers(0, 4, 7)
    for loss, ref in [("l2", lambda t, oh: 0.5 * torch.nn.functional.mse_loss(t, oh)),
                      ("binary_cross_entropy_with_logits",
                       lambda t, oh: torch.nn.functional.binary_cross_entropy_with_logits(t, oh)),
                      ("squared_error(reduction=sum)",
                       lambda t, oh: torch.nn.functional.mse_loss(t, oh, reduction="sum"))]:
        g = load_text(MODEL % f"    loss = {loss}", "l.net")
        value, grad = feed.make_loss(g.training, 4)(z, y)
        t = torch.tensor(z, requires_grad=True)
        r = ref(t, torch.nn.functional.one_hot(torch.tensor(y), 4).float())
        r.backward()
        np.testing.assert_allclose(value, float(r.detach()), rtol=1e-6)
        np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-5, atol=1e-7)
    big = np.array([[80.0, -80.0]], np.float32)  # no overflow at large logits
    value, grad = feed.make_loss(load_text(MODEL % "    loss = binary_cross_entropy_with_logits", "l.net").training,
                                 2)(big, np.array([1]))
    assert np.isfinite(value) and np.isfinite(grad).all() and value == pytest.approx(80.0, rel=1e-6)


def test_run_honours_seed_validation_split_early_stopping_and_log_every(tmp_path, capsys):
    """`netdsl run` with the keys in the train block: the validation split is carved, the run stops once
    the validation loss has not improved for `early_stopping` epochs, and a line is logged every N steps."""
    from netdsl.cli import main

    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)  # a learnable rule, 3 classes
    np.savez(tmp_path / "d.npz", x_train=x[:160], y_train=y[:160], x_test=x[160:], y_test=y[160:])
    net = tmp_path / "m.net"
    net.write_text(MODEL % """    optimizer = SGD(lr=2.0)
    batch_size = 16
    epochs = 40
    seed = 7
    validation_split = 0.25
    early_stopping = 1
    log_every = 4
    metrics = [accuracy, top_k_accuracy(k=2), confusion_matrix]""")
    code = main(["run", str(net), "--data", f"npz:{tmp_path / 'd.npz'}", "--save", str(tmp_path / "w.npz")])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 0, text
    assert "early stopping after epoch" in text
    epochs_run = text.count("validation accuracy")
    assert 1 < epochs_run < 40
    assert text.count("step 4/8") == epochs_run  # 120 training samples / 16 = 8 steps; a line every 4
    assert "test top 2 accuracy" in text and "confusion matrix (rows: true class" in text
    rows = [line.split() for line in text.splitlines() if line[:5].strip() in ("0", "1", "2") and len(line.split()) == 4]
    assert sum(int(v) for row in rows[-3:] for v in row[1:]) == 40  # every test sample counted once
    seeded = main(["run", str(net), "--data", f"npz:{tmp_path / 'd.npz'}", "--save", str(tmp_path / "w2.npz")])
    assert seeded == 0
    a, b = np.load(tmp_path / "w.npz"), np.load(tmp_path / "w2.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a.files)  # the block's seed: the same run twice
    assert main(["run", str(net), "--data", f"npz:{tmp_path / 'd.npz'}", "--seed", "0",
                 "--save", str(tmp_path / "w3.npz")]) == 0
    c = np.load(tmp_path / "w3.npz")
    assert not np.array_equal(a["dense_1.W"], c["dense_1.W"])  # --seed overrides the block's


def test_run_trains_on_one_hot_rows_as_on_their_labels(tmp_path, capsys):
    """A dataset whose labels are one-hot rows (N, K), as Keras's to_categorical makes for
    categorical_crossentropy: the same run, bit for bit, as on the int labels; rows that are not one-hot
    are refused, naming the sample."""
    from netdsl.cli import main

    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    rows = np.eye(3, dtype=np.float32)[y]
    np.savez(tmp_path / "int.npz", x_train=x[:48], y_train=y[:48], x_test=x[48:], y_test=y[48:])
    np.savez(tmp_path / "hot.npz", x_train=x[:48], y_train=rows[:48], x_test=x[48:], y_test=rows[48:])
    net = tmp_path / "m.net"
    net.write_text(MODEL % "    loss = categorical_crossentropy\n    optimizer = SGD(lr=0.5)\n    batch_size = 8")
    for name in ("int", "hot"):
        assert main(["run", str(net), "--data", f"npz:{tmp_path / name}.npz", "--save", str(tmp_path / f"{name}.w.npz")]) == 0
    a, b = np.load(tmp_path / "int.w.npz"), np.load(tmp_path / "hot.w.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a.files)
    capsys.readouterr()
    rows[5] = [0.0, 0.5, 0.5]
    np.savez(tmp_path / "soft.npz", x_train=x[:48], y_train=rows[:48], x_test=x[48:], y_test=rows[48:])
    assert main(["run", str(net), "--data", f"npz:{tmp_path / 'soft.npz'}", "--save", str(tmp_path / "s.npz")]) == 1
    err = capsys.readouterr().err
    assert "sample 5: labels of shape (N, K) must be one-hot rows" in err and "[0, 0.5, 0.5]" in err, err
