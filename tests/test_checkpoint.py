"""Weight files and crash-safe training: resume is bit-exact, SIGKILL loses at
most the current epoch and never leaves a half-written checkpoint, SIGINT
stops cleanly after saving; weight-file mistakes are named, pickles refused."""
from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from netdsl.errors import NetdslError
from netdsl.exec import train
from netdsl.exec.weights import init_params, load_weights, save_weights
from netdsl.frontend import load, load_text
from netdsl.fsutil import TMP_SUFFIX

from test_exec_train import TINY, synthetic

REPO = Path(__file__).resolve().parent.parent
MLP = REPO / "models" / "mlp_relu.net"


# -------------------------------------------------------------- weight files

@pytest.fixture(scope="module")
def mlp():
    g = load(MLP)
    return g, init_params(g, 0)


def _err(path, g):
    with pytest.raises(NetdslError) as e:
        load_weights(path, g)
    return e.value.format()


def test_init_is_seeded_and_follows_param_init(mlp):
    g, p = mlp
    q = init_params(g, 0)
    assert all(np.array_equal(p[k], q[k]) for k in p) and all(v.dtype == np.float32 for v in p.values())
    assert not np.array_equal(p["dense_1.W"], init_params(g, 1)["dense_1.W"])
    assert not p["dense_1.b"].any()  # constant(0.0)
    limit = np.sqrt(6 / (784 + 200))  # glorot_uniform on (out, in)
    assert np.abs(p["dense_1.W"]).max() <= limit and np.abs(p["dense_1.W"]).max() > 0.95 * limit


def test_init_strings():
    g = load_text("""model M
x = Input(4)
a = Dense(300, init=uniform(0.5), init_bias=2)(x)
b = Dense(300, init=normal(0.01))(a)
c = Dense(3, init=ones)(b)
d = Dense(3, init=zeros)(c)
e = Dense(400, init=he_uniform)(d)
output e
""", "m.net")
    p = init_params(g, 0)
    assert np.abs(p["dense_1.W"]).max() <= 0.5 and np.abs(p["dense_1.W"]).max() > 0.45
    assert (p["dense_1.b"] == 2).all()
    assert 0.009 < p["dense_2.W"].std() < 0.011
    assert (p["dense_3.W"] == 1).all() and not p["dense_4.W"].any()
    assert np.abs(p["dense_5.W"]).max() <= np.sqrt(6 / 3)


def test_save_load_roundtrip_and_float64(tmp_path, mlp):
    g, p = mlp
    save_weights(tmp_path / "w.npz", p)
    q = load_weights(tmp_path / "w.npz", g)
    assert all(np.array_equal(p[k], q[k]) and q[k].dtype == np.float32 for k in p)
    save_weights(tmp_path / "w64.npz", {k: v.astype(np.float64) for k, v in p.items()})
    q = load_weights(tmp_path / "w64.npz", g)
    assert all(np.array_equal(p[k], q[k]) for k in p)
    assert [f for f in os.listdir(tmp_path) if f.endswith((".tmp", TMP_SUFFIX))] == []


def test_weight_file_mistakes_are_all_named(tmp_path, mlp):
    g, p = mlp
    bad = dict(p)
    del bad["dense_1.b"]
    bad["dense_2.W"] = p["dense_2.W"][:, :5]
    bad["dense_2.b"] = p["dense_2.b"].astype(np.int64)
    bad["dense_9.W"] = np.zeros(3, np.float32)
    save_weights(tmp_path / "bad.npz", bad)
    msg = _err(tmp_path / "bad.npz", g)
    assert "lacks parameter 'dense_1.b' of layer 'dense_1' (Dense), shape (200,) [E602]" in msg
    assert "parameter 'dense_2.W' has shape (10, 5), expected (10, 200) [E604]" in msg
    assert "parameter 'dense_2.b' has dtype int64, expected float32 or float64 [E605]" in msg
    assert "holds 'dense_9.W', which is not a parameter of model MlpRelu [E603]" in msg
    # Each per-parameter error points at the layer in the .net file.
    assert f"{MLP}:5:5: error: weight file" in msg and f"{MLP}:6:5: error: weight file" in msg
    assert f"{tmp_path / 'bad.npz'}:1:1: error: holds 'dense_9.W'" in msg


def test_nonfinite_weights_refused(tmp_path, mlp):
    g, p = mlp
    q = dict(p, **{"dense_1.W": p["dense_1.W"].copy()})
    q["dense_1.W"][3, 3] = np.nan
    save_weights(tmp_path / "nan.npz", q)
    assert "'dense_1.W' holds 1 NaN/Inf value [E607]" in _err(tmp_path / "nan.npz", g)


def test_pickles_are_refused(tmp_path, mlp):
    g, p = mlp
    obj = dict(p)
    obj["dense_1.b"] = np.array([{"payload": 1}], dtype=object)
    np.savez(tmp_path / "obj.npz", **obj)
    msg = _err(tmp_path / "obj.npz", g)
    assert "entry 'dense_1.b' is a pickled object array; refusing to load it" in msg and "[E606]" in msg
    with open(tmp_path / "pickle.npz", "wb") as f:
        pickle.dump(p, f)
    assert "the file is a pickle" in _err(tmp_path / "pickle.npz", g)


def test_unreadable_files(tmp_path, mlp):
    g, _ = mlp
    (tmp_path / "junk.npz").write_text("not a zip")
    assert "not an .npz weight file" in _err(tmp_path / "junk.npz", g)
    assert "no such weight file [E601]" in _err(tmp_path / "missing.npz", g)
    np.save(tmp_path / "one.npy", np.zeros(3))
    assert "a single .npy array" in _err(tmp_path / "one.npy", g)


# ------------------------------------------------- in-process resume checks

def _trainer(path=None, every=None, epochs=3):
    g = load_text(TINY, "tiny.net")  # Dropout + BatchNorm + Adam: every kind of state
    opts = train.Options(seed=11, epochs=epochs, checkpoint=path, checkpoint_every=every)
    return train.Trainer(g, init_params(g, 11), synthetic(), opts, log=lambda s: None)


@pytest.mark.parametrize("stop_after", [4, 10, 17])  # mid-epoch 1, the end of epoch 1, mid-epoch 2
def test_resume_is_bit_exact(tmp_path, stop_after):
    ref = _trainer()
    ref_result = ref.fit()

    ck = tmp_path / "ck.npz"
    a = _trainer(str(ck), every=1)
    saved = []
    orig = a.save_checkpoint

    def keep(rng):
        orig(rng)
        saved.append(ck.read_bytes())
        if a.global_step == stop_after:
            raise KeyboardInterrupt  # a crash right after this checkpoint

    a.save_checkpoint = keep
    with pytest.raises(KeyboardInterrupt):
        a.fit()
    (tmp_path / "at_stop.npz").write_bytes(saved[-1])

    b = _trainer(str(tmp_path / "at_stop.npz"))
    b.load_checkpoint(tmp_path / "at_stop.npz", {})
    assert b.epoch * b.steps_per_epoch + b.step == stop_after
    b_result = b.fit()
    for k in ref.ex.params:
        assert np.array_equal(ref.ex.params[k], b.ex.params[k]), k
    for k, v in ref.optimizer.state_dict().items():
        assert np.array_equal(np.asarray(v), np.asarray(b.optimizer.state_dict()[k])), k
    strip = lambda h: [{k: v for k, v in e.items() if k not in ("seconds", "samples_per_s")} for e in h]  # noqa: E731
    assert strip(ref_result.history) == strip(b_result.history)
    assert ref_result.test_accuracy == b_result.test_accuracy


def test_resume_refuses_a_different_run(tmp_path):
    ck = tmp_path / "ck.npz"
    _trainer(str(ck), epochs=1).fit()
    t = _trainer()
    with pytest.raises(NetdslError, match=r"written with --batch-size 32, this run has 16.*\[E703\]"):
        t.batch_size = 16
        t.load_checkpoint(ck, {"batch_size": 16})
    other = train.Trainer(load(MLP), init_params(load(MLP), 0), synthetic(), train.Options(),
                          log=lambda s: None)
    with pytest.raises(NetdslError, match="checkpoint is of model Tiny, not MlpRelu"):
        other.load_checkpoint(ck, {})


# --------------------------------------------------- real processes, signals

needs_mnist = pytest.mark.skipif(
    not os.environ.get("NETDSL_DATA") or not (Path(os.environ["NETDSL_DATA"]) / "mnist").is_dir(),
    reason="real MNIST not available (set NETDSL_DATA)")

RUN = [sys.executable, "-m", "netdsl", "run", str(MLP), "--threads", "1", "--seed", "4",
       "--limit-train", "6400", "--limit-test", "500", "--batch-size", "32", "--epochs", "4"]
STEPS = 200  # per epoch


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ref.npz"
    subprocess.run(RUN + ["--save", str(out)], check=True, capture_output=True, env=_env(), cwd=REPO)
    return np.load(out)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _reference(tmp_path_factory)


def _read_checkpoint(path):
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        arrays = {k: z[k] for k in z.files}
    return meta, arrays


class Poller(threading.Thread):
    """Reads the checkpoint over and over while the run writes it: every read
    must find a complete, loadable file (or none yet)."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.reads, self.failures, self.stop = path, 0, [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            if self.path.exists():
                try:
                    meta, arrays = _read_checkpoint(self.path)
                    assert len([k for k in arrays if k.startswith("param/")]) == 4
                    self.reads += 1
                except Exception as e:  # noqa: BLE001 - any failure is a half-written file
                    self.failures.append(repr(e))
            time.sleep(0.002)


def _resume_and_compare(ck, tmp_path, reference):
    out = tmp_path / "resumed.npz"
    r = subprocess.run(RUN + ["--checkpoint", str(ck), "--resume", "--save", str(out)],
                       capture_output=True, text=True, env=_env(), cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "resuming from" in r.stderr
    got = np.load(out)
    for k in reference.files:
        assert np.array_equal(reference[k], got[k]), f"{k} differs after resume"
    return r


@needs_mnist
def test_sigkill_mid_epoch_loses_at_most_the_current_epoch(tmp_path, reference):
    ck = tmp_path / "ck.npz"
    proc = subprocess.Popen(RUN + ["--checkpoint", str(ck), "--checkpoint-every", "7"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO)
    poller = Poller(ck)
    poller.start()
    done = 0
    try:
        for line in proc.stdout:
            m = re.match(r"epoch (\d+)/4:", line)
            if m:
                done = int(m.group(1))
                if done == 2:
                    time.sleep(0.05)  # into epoch 3 (an epoch takes 0.1-0.5 s)
                    proc.send_signal(signal.SIGKILL)
                    break
        proc.wait(timeout=60)
    finally:
        poller.stop.set()
        poller.join()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert poller.failures == [] and poller.reads > 0
    meta, _ = _read_checkpoint(ck)
    # Every epoch that was reported finished is in the checkpoint: only the
    # current one (epoch 3) can have been lost, and part of it was kept too.
    assert meta["epoch"] >= done, meta
    assert (meta["epoch"], meta["step"]) <= (4, 0)
    _resume_and_compare(ck, tmp_path, reference)


@needs_mnist
def test_sigint_stops_cleanly_after_saving(tmp_path, reference):
    ck = tmp_path / "ck.npz"
    proc = subprocess.Popen(RUN + ["--checkpoint", str(ck)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO)
    for line in proc.stdout:
        if line.startswith("epoch 1/4:"):
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    m = re.search(rf"SIGINT: stopped at epoch (\d+), step (\d+)/{STEPS}; checkpoint saved to", out)
    assert m, out
    meta, _ = _read_checkpoint(ck)
    assert (meta["epoch"] + 1, meta["step"]) == (int(m.group(1)), int(m.group(2)))
    assert (meta["epoch"], meta["step"]) >= (1, 0)  # nothing before the signal was lost
    r = _resume_and_compare(ck, tmp_path, reference)
    assert "final test accuracy" in r.stdout
