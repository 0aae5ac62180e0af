"""max_norm on Dense and Convolution (issue 18): Keras's MaxNorm constraint after every update.

Checked against a hand computation, against keras.constraints.MaxNorm's own numbers, and over 20 training
steps against a PyTorch loop that applies the same formula after torch.optim's update. Targets refuse it
(E802, at the layer) until they implement it.
"""
from __future__ import annotations

import numpy as np
import pytest

from netdsl import ir
from netdsl.errors import NetdslError
from netdsl.exec import feed, optim
from netdsl.exec.graph import Executor
from netdsl.exec.steprule import StepRule, apply_max_norm, max_norms
from netdsl.exec.weights import init_params
from netdsl.frontend import load_text

DENSE = """model M
x = Input(6)
h = Dense(5, activation=tanh, max_norm=%s)(x)
y = Dense(3)(h)
output y
train {
    optimizer = SGD(lr=1.5, momentum=0.9)
    batch_size = 8
}
"""
CONV = """model C
x = Input((2, 6, 6))
c = Convolution((3, 3), 4, activation=relu, max_norm=0.5)(x)
y = Dense(3, max_norm=2)(c)
output y
train {
    optimizer = Adam(lr=0.05)
}
"""


def test_the_attribute_reaches_the_ir():
    g = load_text(DENSE % "3", "m.net")
    assert g.layers[0].attr("max_norm") == 3.0 and isinstance(g.layers[0].attr("max_norm"), float)
    assert g.layers[1].attr("max_norm") is None
    assert max_norms(g) == {"dense_1.W": 3.0}
    assert ir.from_json(ir.to_json(g)) == g
    c = load_text(CONV, "c.net")
    assert max_norms(c) == {"convolution_1.W": 0.5, "dense_1.W": 2.0}


@pytest.mark.parametrize("value", ["0", "-1", "True", '"3"', "(1, 2)"])
def test_a_wrong_value_is_located(value):
    text = DENSE % value
    with pytest.raises(NetdslError) as e:
        load_text(text, "bad.net")
    d = e.value.diagnostics[0]
    line = text.splitlines()[d.span.line - 1]
    assert d.code == "E103" and line[d.span.col - 1:].startswith("max_norm"), (d.message, d.span)
    assert "max_norm must be a positive number" in d.message


def test_by_hand():
    w = np.array([[3.0, 4.0, 0.0], [0.3, 0.4, 0.0], [0.0, 0.0, 0.0]], np.float32)  # norms 5, 0.5, 0
    got = w.copy()
    apply_max_norm(got, 2.0)
    want = np.array([[3 * 2 / (5 + 1e-7), 4 * 2 / (5 + 1e-7), 0], [0.3 * 0.5 / (0.5 + 1e-7), 0.4 * 0.5 / (0.5 + 1e-7), 0],
                     [0, 0, 0]])
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=0)
    assert got.dtype == np.float32
    conv = np.zeros((2, 1, 2, 2), np.float32)
    conv[0] = 1.0  # norm 2 over (I, kh, kw)
    conv[1, 0, 0, 0] = 0.25
    apply_max_norm(conv, 1.0)
    np.testing.assert_allclose(conv[0], np.full((1, 2, 2), 0.5), rtol=1e-6)
    assert conv[1, 0, 0, 0] == pytest.approx(0.25, rel=1e-6) and not conv[1].ravel()[1:].any()


def test_keras_maxnorm_numbers():
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(0)
    dense = rng.uniform(-2, 2, (5, 7)).astype(np.float32)  # canonical (out, in); Keras's kernel is (in, out)
    conv = rng.uniform(-1, 1, (4, 3, 3, 3)).astype(np.float32)  # OIHW; Keras's kernel is (kh, kw, in, out)
    for w, m, to_keras, axis in [(dense, 2.5, (1, 0), 0), (conv, 1.5, (2, 3, 1, 0), [0, 1, 2])]:
        want = keras.ops.convert_to_numpy(keras.constraints.MaxNorm(m, axis=axis)(w.transpose(to_keras)))
        got = w.copy()
        apply_max_norm(got, m)
        np.testing.assert_allclose(got.transpose(to_keras), want, rtol=2e-7, atol=1e-7)
        norms = np.sqrt((got.astype(np.float64) ** 2).sum(axis=tuple(range(1, w.ndim))))
        assert norms.max() <= m * (1 + 1e-6) and (norms > m * 0.999).any()  # the constraint bit (float32 rounding)


def _native(graph, params, data):
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
        rule.step(opt, trainable, ex.backward({"y": d}), 0, step, len(y))
    return losses, dict(ex.params)


def test_twenty_steps_match_torch_with_the_keras_formula():
    torch = pytest.importorskip("torch")
    g = load_text(DENSE % "0.8", "m.net")
    params = init_params(g, 0)
    rng = np.random.default_rng(1)
    data = [(rng.standard_normal((8, 6)).astype(np.float32), rng.integers(0, 3, 8)) for _ in range(20)]
    n_losses, n_params = _native(g, params, data)

    ps = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt = torch.optim.SGD(list(ps.values()), lr=1.5, momentum=0.9)
    t_losses = []
    for x, y in data:
        out = torch.tanh(torch.tensor(x) @ ps["dense_1.W"].T + ps["dense_1.b"]) @ ps["dense_2.W"].T + ps["dense_2.b"]
        loss = torch.nn.functional.cross_entropy(out, torch.tensor(y))
        t_losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():  # keras.constraints.MaxNorm(0.8, axis=0) on the (in, out) kernel
            w = ps["dense_1.W"]
            norms = torch.sqrt(torch.sum(w * w, dim=1, keepdim=True))
            w.mul_(torch.clamp(norms, 0, 0.8) / (1e-7 + norms))
    np.testing.assert_allclose(n_losses, t_losses, rtol=1e-4, atol=1e-5)
    for k in n_params:
        np.testing.assert_allclose(n_params[k], ps[k].detach().numpy(), rtol=1e-4, atol=1e-5, err_msg=k)
    norms = np.linalg.norm(n_params["dense_1.W"].astype(np.float64), axis=1)
    assert norms.max() <= 0.8 * (1 + 1e-6) and norms.min() > 0.79  # lr 1.5 pushes every row to the bound
    assert np.abs(n_params["dense_1.b"]).max() > 0.05  # biases move freely
    assert np.linalg.norm(n_params["dense_2.W"], axis=1).max() > 0.8  # only the layer that asks


def test_a_convolution_is_constrained_per_filter():
    g = load_text(CONV, "c.net")
    params = init_params(g, 0)
    rng = np.random.default_rng(2)
    data = [(rng.standard_normal((4, 2, 6, 6)).astype(np.float32), rng.integers(0, 3, 4)) for _ in range(10)]
    before = np.linalg.norm(params["convolution_1.W"].reshape(4, -1), axis=1)
    assert before.max() > 0.5  # so the constraint has work to do
    _, trained = _native(g, params, data)
    after = np.linalg.norm(trained["convolution_1.W"].reshape(4, -1).astype(np.float64), axis=1)
    assert after.max() <= 0.5 * (1 + 1e-6)
    assert np.linalg.norm(trained["dense_1.W"].astype(np.float64), axis=1).max() <= 2.0 * (1 + 1e-6)


def test_netdsl_run_applies_it(tmp_path):
    from netdsl.cli import main

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    np.savez(tmp_path / "d.npz", x_train=x[:48], y_train=y[:48], x_test=x[48:], y_test=y[48:])
    net = tmp_path / "m.net"
    net.write_text(DENSE % "0.3")
    assert main(["run", str(net), "--data", f"npz:{tmp_path / 'd.npz'}", "--save", str(tmp_path / "w.npz")]) == 0
    w = np.load(tmp_path / "w.npz")["dense_1.W"].astype(np.float64)
    assert np.linalg.norm(w, axis=1).max() <= 0.3 * (1 + 1e-6)


@pytest.mark.parametrize("target", ["pytorch", "keras", "tf-estimator", "gluon", "cntk"])
def test_targets_refuse_it_at_the_layer(target):
    from netdsl.emit.base import emit, load_target

    if "max_norm" in (load_target(target).extras.get("training") or {}).get("settings", ()):
        pytest.skip(f"{target} implements max_norm (its own tests check it)")
    text = DENSE % "3"
    with pytest.raises(NetdslError) as e:
        emit(load_text(text, "m.net"), target)
    found = [(d.code, text.splitlines()[d.span.line - 1].strip()) for d in e.value.diagnostics]
    assert found == [("E802", "h = Dense(5, activation=tanh, max_norm=3)(x)")]
    emit(load_text(DENSE.replace(", max_norm=%s", ""), "ok.net"), target)  # without it: fine


def test_the_conformance_step_applies_it():
    # the targets constrain after their SGD step, so conformance's native step must too
    from netdsl import conformance as conf

    g = conf.step_graph(load_text(CONV, "c.net"))
    params = conf.conformance_params(g, 0)
    params["convolution_1.W"] *= 10  # rows far over 0.5, so the constraint binds
    inputs = conf.batch_for(g, 0)
    out = conf.native_predict(g, params, inputs)
    new = conf.native_step(g, params, inputs, conf.targets_for(g, out, 0))
    norms = np.sqrt((new["convolution_1.W"].astype(np.float64) ** 2).sum(axis=(1, 2, 3)))
    assert norms.max() <= 0.5 * (1 + 1e-6) and norms.min() > 0.4
