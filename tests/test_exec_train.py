"""The native training loop and `netdsl run`: data feeding, determinism,
divergence reports, evaluation and CLI errors. Fast: a synthetic in-memory
dataset, or the first few hundred real MNIST images."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from netdsl import data as datamod
from netdsl.cli import main
from netdsl.errors import NetdslError
from netdsl.exec import feed, runtime, train
from netdsl.exec.weights import init_params, save_weights
from netdsl.frontend import load, load_text

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"

TINY = """
model Tiny
x = Input(784, scale=1/255)
h = Dense(32, activation=relu)(x)
d = Dropout(0.3)(h)
b = BatchNormalization()(d)
z = Dense(10)(b)
output z
train {
    dataset = "mnist"
    loss = cross_entropy_with_softmax
    optimizer = Adam(lr=0.01)
    batch_size = 32
    epochs = 2
}
"""


def synthetic(n_train=320, n_test=100, seed=0) -> datamod.Dataset:
    """Ten classes of bright 7x7 squares at class-dependent places, plus noise."""
    rng = np.random.default_rng(seed)

    def split(n):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(y):
            r, q = 3 + (c // 5) * 12, 1 + (c % 5) * 5
            x[i, r:r + 7, q:q + 5] = 255
        return x, y

    xtr, ytr = split(n_train)
    xte, yte = split(n_test)
    return datamod.Dataset(xtr, ytr, xte, yte)


def trainer(text=TINY, seed=0, data=None, **opts):
    g = load_text(text, "tiny.net")
    return train.Trainer(g, init_params(g, seed), data or synthetic(), train.Options(seed=seed, **opts),
                         log=lambda s: None)


# ------------------------------------------------------------------ feeding

def mnist_shaped(n=10):
    y = (np.arange(n) % 10).astype(np.uint8)
    return datamod.Dataset(np.zeros((n, 28, 28), np.uint8), y, np.zeros((n, 28, 28), np.uint8), y)


@pytest.mark.parametrize("model, view", [("mlp_relu", "flatten"), ("keras_cnn", "channel"),
                                         ("row_lstm", "same"), ("bn_cnn", "channel")])
def test_feed_maps_mnist_onto_the_input(model, view):
    f = datamod.make_feed(load(MODELS / f"{model}.net"), mnist_shaped(), "mnist")
    assert f.view == view and f.classes == 10


@pytest.mark.parametrize("model, words", [
    ("dssm", ["feeds one input", "'doc'", "'query'"]),
    ("slot_tagger", ["input 'words'", "seq[?] of ids<943>", "cannot feed"]),
    ("bilstm_tagger", ["input 'words'", "ids<943>"]),
    ("cs231n_convnet", ["input 'image'", "(3, 32, 32)"]),
    ("speech_dnn", ["input 'feats'", "(40,)"]),
])
def test_feed_refuses_models_the_dataset_cannot_feed(model, words):
    with pytest.raises(NetdslError) as e:
        datamod.make_feed(load(MODELS / f"{model}.net"), mnist_shaped(), "mnist")
    msg = e.value.format()
    assert "[E701]" in msg
    if model != "dssm":
        assert "offers (1, 28, 28) images, (784,) vectors or seq[28] of (28,) rows" in msg
    for w in words:
        assert w in msg


def test_feed_refuses_a_wrong_output_shape():
    g = load_text("model M\nx = Input(784)\nz = Dense(7)(x)\noutput z\n", "m.net")
    # labels are checked against the output size, naming the split and the sample
    with pytest.raises(datamod.DataError, match=r"sample 7: label 7 is out of range for the model's 7 output"):
        datamod.make_feed(g, mnist_shaped(), "mnist")


# -------------------------------------------------------------- determinism

def test_learns_and_same_seed_is_bit_identical():
    a, b = trainer(seed=5), trainer(seed=5)
    ra, rb = a.fit(), b.fit()
    assert ra.test_accuracy > 0.9, ra.history
    for k in a.ex.params:
        assert np.array_equal(a.ex.params[k], b.ex.params[k]), k
    assert [h["loss"] for h in ra.history] == [h["loss"] for h in rb.history]
    c = trainer(seed=6)
    c.fit()
    assert not np.array_equal(a.ex.params["dense_1.W"], c.ex.params["dense_1.W"])


def test_epoch_generators_are_distinct_and_stable():
    p0 = train.epoch_generator(0, 0).permutation(100)
    assert np.array_equal(p0, train.epoch_generator(0, 0).permutation(100))
    assert not np.array_equal(p0, train.epoch_generator(0, 1).permutation(100))
    assert not np.array_equal(p0, train.epoch_generator(1, 0).permutation(100))
    # and independent of the initialisation stream of the same seed
    assert not np.array_equal(p0, np.random.default_rng(0).permutation(100))


def test_options_override_the_training_block():
    t = trainer(epochs=1, batch_size=50, lr=0.5, limit_train=100, limit_test=30)
    assert (t.epochs, t.batch_size, t.optimizer.lr) == (1, 50, 0.5)
    assert len(t.x_train) == 100 and len(t.x_test) == 30 and t.steps_per_epoch == 2
    r = t.fit()
    assert len(r.history) == 1


def test_squared_error_uses_one_hot_targets():
    g = load(MODELS / "mlp_sigmoid.net")
    loss_fn = feed.make_loss(g.training, 10)
    pred = np.full((2, 10), 0.5, np.float32)
    loss, d = loss_fn(pred, np.array([3, 7]))
    assert loss == pytest.approx(0.25)  # every element is 0.5 away from its target
    assert d[0, 3] < 0 < d[0, 2]


# -------------------------------------------------------------- divergence

def test_divergence_names_epoch_step_and_layer():
    # lr=1e38: step 1 makes huge but finite weights, step 2's first Dense overflows.
    t = trainer(text=TINY.replace("Adam(lr=0.01)", "SGD(lr=1e38)"))
    with pytest.raises(NetdslError) as e:
        t.fit()
    msg = e.value.format()
    assert "[E702]" in msg and "epoch 1, step 2" in msg and "Dense 'h (dense_1)'" in msg, msg
    assert msg.startswith("tiny.net:4:5: error: training diverged")


def test_nonfinite_weights_name_epoch_step_and_parameter():
    t = trainer()
    step = t.optimizer.step
    calls = []

    def poisoned(params, grads):
        step(params, grads)
        calls.append(1)
        if len(calls) == 3:
            params["dense_2.b"][4] = np.inf

    t.optimizer.step = poisoned
    with pytest.raises(NetdslError) as e:
        t.fit()
    msg = e.value.format()
    assert "[E702]" in msg and "epoch 1, step 3" in msg and "'dense_2.b'" in msg, msg
    assert msg.startswith("tiny.net:7:5: error:")  # the layer that holds it


def test_nonfinite_loss_names_the_first_layer_output():
    t = trainer()
    t.ex.params["dense_1.W"][...] = 3e38  # overflows to inf in the first Dense
    with pytest.raises(NetdslError) as e:
        t.fit()
    msg = e.value.format()
    assert "[E702]" in msg and "epoch 1, step 1" in msg and "Dense 'h (dense_1)'" in msg, msg


# ---------------------------------------------------------------------- CLI

needs_mnist = pytest.mark.skipif(
    not os.environ.get("NETDSL_DATA") or not (Path(os.environ["NETDSL_DATA"]) / "mnist").is_dir(),
    reason="real MNIST not available (set NETDSL_DATA)")


def test_missing_data_dir_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NETDSL_DATA", str(tmp_path / "nothing"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    rc = main(["run", str(MODELS / "mlp_relu.net"), "--data-dir", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "dataset 'mnist' not found" in err and str(tmp_path / "nowhere") in err
    assert "--download" in err and "NETDSL_DATA" in err and "Traceback" not in err


def test_model_without_dataset_needs_data_flag(capsys):
    assert main(["run", str(MODELS / "dssm.net")]) == 1
    err = capsys.readouterr().err
    assert "names no dataset" in err and "--data mnist" in err and "[E701]" in err


@needs_mnist
def test_unfeedable_model_says_which_input(capsys):
    assert main(["run", str(MODELS / "slot_tagger.net"), "--data", "mnist"]) == 1
    err = capsys.readouterr().err
    assert "input 'words' has type seq[?] of ids<943>" in err and "[E701]" in err


def test_flag_errors_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", str(MODELS / "mlp_relu.net"), "--epochs", "-1"])
    assert e.value.code == 2
    assert main(["run", str(MODELS / "mlp_relu.net"), "--resume"]) == 2
    assert "--resume needs --checkpoint" in capsys.readouterr().err


@needs_mnist
def test_download_fetches_into_data_dir(tmp_path, monkeypatch, capsys):
    # A local "mirror" (the shared copy, via file://): tests never touch the network.
    src = Path(os.environ["NETDSL_DATA"]) / "mnist"
    monkeypatch.setattr(datamod, "MNIST_MIRRORS", [src.resolve().as_uri() + "/"])
    monkeypatch.setenv("NETDSL_DATA", str(tmp_path / "unset"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    rc = main(["run", str(MODELS / "mlp_relu.net"), "--data-dir", str(tmp_path / "d"), "--download",
               "--eval-only", "--limit-test", "100"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "downloading file://" in captured.err and "test accuracy:" in captured.out
    assert sorted(p.name for p in (tmp_path / "d" / "mnist").glob("*.gz")) == sorted(
        f + ".gz" for f in datamod.MNIST_FILES.values())


@needs_mnist
def test_run_save_load_eval_only(tmp_path, capsys):
    w = tmp_path / "w.npz"
    args = ["run", str(MODELS / "mlp_relu.net"), "--epochs", "1", "--limit-train", "640",
            "--limit-test", "200", "--threads", "1", "--save", str(w)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "epoch 1/1: loss" in out and "final test accuracy:" in out
    final = out.strip().splitlines()[-1].split(": ", 1)[1]
    assert main(["run", str(MODELS / "mlp_relu.net"), "--load", str(w), "--eval-only",
                 "--limit-test", "200"]) == 0
    assert capsys.readouterr().out.strip() == f"test accuracy: {final}"


@needs_mnist
def test_bad_weight_file_via_cli(tmp_path, capsys):
    g = load(MODELS / "mlp_relu.net")
    p = init_params(g, 0)
    p["dense_2.W"] = p["dense_2.W"][:, :100]
    save_weights(tmp_path / "bad.npz", p)
    rc = main(["run", str(MODELS / "mlp_relu.net"), "--load", str(tmp_path / "bad.npz"), "--eval-only"])
    err = capsys.readouterr().err
    assert rc == 1 and "'dense_2.W' has shape (10, 100), expected (10, 200)" in err and "[E604]" in err


def test_set_threads_reports_what_it_set():
    before = runtime.blas_threads()
    done = runtime.set_threads(1)
    try:
        assert done, "neither threadpoolctl nor OpenBLAS's set_num_threads was found"
        if before is not None:
            assert runtime.blas_threads() == 1
    finally:
        if before:
            runtime.set_threads(before)


# --------------------------------------------------------- fused optimizers

@pytest.mark.parametrize("name, kwargs", [
    ("SGD", dict(lr=0.1)), ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True)),
    ("Adam", dict(lr=1e-3)), ("Adam", dict(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6)),
])
def test_fused_optimizers_are_bit_identical_to_optim(name, kwargs):
    from netdsl.exec import optim

    rng = np.random.default_rng(0)
    params = {"a.W": rng.standard_normal((33, 17)).astype(np.float32),
              "a.b": rng.standard_normal(17).astype(np.float32)}
    ref = {k: v.copy() for k, v in params.items()}
    fused = getattr(optim, "Fused" + name)(**kwargs)
    plain = getattr(optim, name)(**kwargs)
    for _ in range(5):
        grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
        fused.step(params, grads)
        plain.step(ref, grads)
        for k in params:
            assert np.array_equal(params[k], ref[k]), k
    sd, sr = fused.state_dict(), plain.state_dict()
    assert sd.keys() == sr.keys()
    for k in sd:
        assert np.array_equal(np.asarray(sd[k]), np.asarray(sr[k])), k


def test_unwritable_checkpoint_dir_fails_before_training(tmp_path, capsys):
    rc = main(["run", str(MODELS / "mlp_relu.net"), "--checkpoint", str(tmp_path / "no" / "ck.npz")])
    err = capsys.readouterr().err
    assert rc == 1 and "--checkpoint: cannot write checkpoint" in err and "does not exist [E608]" in err


def test_a_signal_without_a_checkpoint_stops_cleanly():
    # SIGTERM/SIGINT mid-epoch with no --checkpoint: stop and say nothing was saved (was a TypeError)
    import signal as _signal

    class Stopped:
        signum = _signal.SIGTERM

    logs = []
    t = trainer()
    t.log = logs.append
    assert t._run_epoch(Stopped()) is True
    r = t._interrupted(_signal.SIGTERM)
    assert r.interrupted and any("nothing saved" in line for line in logs)
