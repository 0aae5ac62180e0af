"""The generated Keras module at run time: a saved .keras model reloads without netdsl and trains on with
its optimizer state, MirroredStrategy trains the same as one replica, and the script's --checkpoint and
--resume write and continue a native checkpoint.

Keras picks its back end when it is imported, so every Keras run is a subprocess with KERAS_BACKEND set.
The reloading process runs `python -I` from a temporary folder holding only the generated module, with
netdsl refused by an import hook (the shared venv has netdsl installed, so -I alone would still find it).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from netdsl.emit.base import emit
from netdsl.exec.weights import init_params, save_weights
from netdsl.frontend import load_text

BACKENDS = ("torch", "tensorflow")

# every custom class of the target at once: TorchBatchNormalization, NegInfPadding2D (the asymmetric pool
# pads), AveragePooling2DExcludePad, TorchAdam
ROUND_TRIP = """
model RoundTrip
image = Input((1, 8, 8))
c = Convolution((3, 3), 4, pad=True, activation=relu)(image)
n = BatchNormalization()(c)
p = MaxPooling((2, 2), pad=((1, 0), (0, 1)))(n)
a = AveragePooling((3, 3), strides=2, pad=1)(p)
z = Dense(3)(a)
output z
train {
    loss = cross_entropy_with_softmax
    optimizer = Adam(lr=0.01)
}
"""

# no BatchNorm or Dropout: their per-replica statistics and random masks are meant to differ between replicas
MIRRORED = """
model Mirrored
image = Input((1, 8, 8))
c = Convolution((3, 3), 4, pad=True, activation=relu)(image)
p = MaxPooling((2, 2))(c)
h = Dense(16, activation=tanh)(p)
z = Dense(3)(h)
output z
train {
    loss = cross_entropy_with_softmax
    optimizer = Adam(lr=0.01)
    batch_size = 8
}
"""

# imported first by every child: netdsl must not be importable there
NO_NETDSL = '''
import sys


class RefuseNetdsl:
    def find_spec(self, name, path=None, target=None):
        if name == "netdsl" or name.startswith("netdsl."):
            raise ImportError("netdsl is refused in this process")


sys.meta_path.insert(0, RefuseNetdsl())
sys.path.insert(0, sys.argv[1])  # the folder holding the generated module (-I leaves it off sys.path)
try:
    import netdsl  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("netdsl is importable")
'''

TRAIN_AND_SAVE = NO_NETDSL + '''
import keras
import numpy as np

import roundtrip as m

d = np.load("data.npz")
x, y = m.keras_inputs({"image": d["x"]}), m.keras_targets(d["y"])
model = m.build_model()
m.load_netdsl_weights(model, "init.npz")
m.make_trainer(model, metrics=["accuracy"])
model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
model.save("m.keras")
out = m.predict(model, {"image": d["x"]})["z"]
more = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history["loss"]
m.export_netdsl_weights(model, "uninterrupted.npz")
np.savez("uninterrupted_run.npz", out=out, loss=np.array(more))
'''

LOAD_AND_CONTINUE = NO_NETDSL + '''
import keras
import numpy as np

import roundtrip as m  # registers the module's serializable classes (package "netdsl")

d = np.load("data.npz")
x, y = m.keras_inputs({"image": d["x"]}), m.keras_targets(d["y"])
model = keras.models.load_model("m.keras")
assert type(model.optimizer) is m.TorchAdam, type(model.optimizer)
assert int(model.optimizer.iterations) == 6, int(model.optimizer.iterations)  # 3 epochs of 2 steps
assert any(type(layer) is m.TorchBatchNormalization for layer in model.layers)
out = m.predict(model, {"image": d["x"]})["z"]
if sys.argv[2] == "fresh-optimizer":  # the control: the same weights with new moments
    model.compile(optimizer=m.TorchAdam(learning_rate=0.01), loss=model.loss)
more = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history["loss"]
m.export_netdsl_weights(model, sys.argv[2] + ".npz")
np.savez(sys.argv[2] + "_run.npz", out=out, loss=np.array(more))
'''

MIRRORED_RUN = NO_NETDSL + '''
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)
import keras  # noqa: E402
import numpy as np  # noqa: E402

import mirrored as m  # noqa: E402

d = np.load("data.npz")
x, y = m.keras_inputs({"image": d["x"]}), m.keras_targets(d["y"])
strategy = m.data_parallel_strategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
for name, scope in (("two_replicas", strategy.scope()), ("one_replica", None)):
    if scope is not None:
        scope.__enter__()
    model = m.build_model()
    m.load_netdsl_weights(model, "init.npz")
    m.make_trainer(model)
    if scope is not None:
        scope.__exit__(None, None, None)
    # 40 samples in global batches of 8: 5 steps, the same batches in both runs
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 5
    m.export_netdsl_weights(model, name + ".npz")
'''


def keras_env(tmp: Path, backend: str) -> dict:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    env.setdefault("KERAS_HOME", str(tmp / "keras-home"))
    return env


def child(tmp: Path, backend: str, code: str, *argv: str) -> None:
    """Run code with `python -I` in tmp (which holds the generated module), netdsl refused."""
    script = tmp / "child.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, "-I", str(script), str(tmp), *argv], cwd=tmp, capture_output=True,
                          text=True, timeout=900, env=keras_env(tmp, backend))
    assert proc.returncode == 0, proc.stderr[-4000:]


def setup_model(tmp: Path, text: str, module: str, n: int) -> dict:
    graph = load_text(text, f"{module}.net")
    (tmp / f"{module}.py").write_text(emit(graph, "keras"))
    init = init_params(graph, 0)
    save_weights(tmp / "init.npz", init)
    rng = np.random.default_rng(0)
    np.savez(tmp / "data.npz", x=rng.uniform(-1, 1, (n, 1, 8, 8)).astype(np.float32),
             y=(np.arange(n) % 3).astype(np.int64))
    return {k: np.asarray(v, np.float32) for k, v in init.items()}


def weights(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def max_difference(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b)
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def script_and_data(tmp: Path) -> Path:
    """The generated script of MIRRORED and a learnable d.npz (40 training, 8 test samples) beside it."""
    script = tmp / "mirrored.py"
    script.write_text(emit(load_text(MIRRORED, "mirrored.net"), "keras"))
    rng = np.random.default_rng(1)
    y = (np.arange(48) % 3).astype(np.int64)
    x = rng.normal(0, 0.3, (48, 1, 8, 8)).astype(np.float32) + y[:, None, None, None]
    np.savez(tmp / "d.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    return script


@pytest.mark.parametrize("backend", BACKENDS)
def test_saved_model_reloads_without_netdsl_and_trains_on(backend, tmp_path):
    setup_model(tmp_path, ROUND_TRIP, "roundtrip", 16)
    child(tmp_path, backend, TRAIN_AND_SAVE)
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        config = json.loads(archive.read("config.json"))
    assert config["compile_config"]["optimizer"]["registered_name"] == "netdsl>TorchAdam"
    child(tmp_path, backend, LOAD_AND_CONTINUE, "resumed")
    child(tmp_path, backend, LOAD_AND_CONTINUE, "fresh-optimizer")
    before, after = np.load(tmp_path / "uninterrupted_run.npz"), np.load(tmp_path / "resumed_run.npz")
    np.testing.assert_allclose(after["out"], before["out"], rtol=0, atol=1e-6)
    # two further steps: the first loss is that of the saved weights, the second also of the optimizer's moments
    np.testing.assert_allclose(after["loss"], before["loss"], rtol=1e-6, atol=0)
    assert max_difference(weights(tmp_path / "resumed.npz"), weights(tmp_path / "uninterrupted.npz")) < 1e-6
    # the control shows the comparison can fail: new moments move the same weights elsewhere
    assert max_difference(weights(tmp_path / "fresh-optimizer.npz"), weights(tmp_path / "uninterrupted.npz")) > 1e-3


def test_mirrored_strategy_trains_as_one_replica(tmp_path):
    init = setup_model(tmp_path, MIRRORED, "mirrored", 40)
    child(tmp_path, "tensorflow", MIRRORED_RUN)
    two, one = weights(tmp_path / "two_replicas.npz"), weights(tmp_path / "one_replica.npz")
    assert max_difference(one, init) > 1e-2  # the 5 steps moved the weights
    assert max_difference(two, one) < 1e-5


def test_script_checkpoints_and_resumes(tmp_path):
    """--checkpoint writes a .keras file each epoch (atomically, with its epoch); --resume continues there."""
    script = script_and_data(tmp_path)
    checkpoint = tmp_path / "run.keras"

    def run(*argv):
        return subprocess.run([sys.executable, str(script), "--data", f"npz:{tmp_path / 'd.npz'}", "--out-dir",
                               str(tmp_path / "out"), "--checkpoint", str(checkpoint), *argv], cwd=tmp_path,
                              capture_output=True, text=True, timeout=900, env=keras_env(tmp_path, "tensorflow"))

    first = run("--epochs", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert [line for line in first.stdout.splitlines() if line.startswith("epoch ")][0].startswith("epoch 1/1: loss ")
    with zipfile.ZipFile(checkpoint) as archive:
        assert json.loads(archive.read("netdsl-epoch.json")) == {"epoch": 1}
    second = run("--epochs", "3", "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    epochs = [line.split(":")[0] for line in second.stdout.splitlines() if line.startswith("epoch ")]
    assert epochs == ["epoch 2/3", "epoch 3/3"]
    with zipfile.ZipFile(checkpoint) as archive:
        assert json.loads(archive.read("netdsl-epoch.json")) == {"epoch": 3}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")) == []
    assert (tmp_path / "out" / "Mirrored.keras").exists()
    bad = run("--checkpoint", str(tmp_path / "run.h5"))
    assert bad.returncode == 2 and "name it PATH.keras" in bad.stderr
    mps = run("--device", "mps")
    assert mps.returncode == 2 and "--device mps: Keras's tensorflow back end cannot use MPS" in mps.stderr


def test_script_trains_with_amp_and_compile(tmp_path):
    """--amp (bfloat16 on the CPU) and --compile (XLA) on TensorFlow: the script trains and says how well;
    the saved model carries the mixed-precision policy. Its numbers are not compared with float32's."""
    script = script_and_data(tmp_path)
    proc = subprocess.run([sys.executable, str(script), "--data", f"npz:{tmp_path / 'd.npz'}", "--out-dir",
                           str(tmp_path / "out"), "--epochs", "1", "--amp", "--compile", "--device", "cpu"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env=keras_env(tmp_path, "tensorflow"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("epoch 1/1: loss "))
    assert np.isfinite(float(line.split("loss ")[1].split(",")[0]))
    with zipfile.ZipFile(tmp_path / "out" / "Mirrored.keras") as archive:
        config = json.loads(archive.read("config.json"))
    dense = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
    assert dense["config"]["dtype"]["config"]["name"] == "mixed_bfloat16"


CLASSES_ROUND_TRIP = NO_NETDSL + '''
import importlib

import keras
import numpy as np

for name in sys.argv[2:]:
    m = importlib.import_module(name)
    rng = np.random.default_rng(0)
    def shape(batch_shape):  # 4 samples; sequences of 5 steps
        return (4,) + tuple(5 if d is None else d for d in batch_shape[1:])

    inputs = {k: rng.uniform(-1, 1, shape(v)).astype(np.float32) for k, v in m.INPUTS.items()}
    out = shape(m.OUTPUTS[list(m.OUTPUTS)[0]])
    targets = rng.integers(0, out[-1], out[:-1])
    model = m.build_model()
    m.make_trainer(model)
    m.train_step(model, model.optimizer, inputs, targets)
    model.save(name + ".keras")
    loaded = keras.models.load_model(name + ".keras")
    assert type(loaded.loss).__name__ == type(model.loss).__name__
    before, after = m.predict(model, inputs), m.predict(loaded, inputs)
    assert all(np.array_equal(before[k], after[k]) for k in before), name
    losses = [m.train_step(net, net.optimizer, inputs, targets) for net in (model, loaded)]
    assert losses[0] == losses[1], (name, losses)
'''


def test_other_custom_classes_reload(tmp_path):
    """Stabilizer, CNTKLSTMCell (peepholes, stabilizers, projection), CNTKGRUCell and TrainingLoss (here the loss of a
    softmax head) also come back from a .keras file."""
    root = Path(__file__).resolve().parent / "traps"
    from netdsl.frontend import load

    names = []
    for trap in ("stabilizer", "softmax_head", "../cntk_reference/lstm_self_stabilization",
                 "../cntk_reference/gru_self_stabilization"):
        code = emit(load(root / f"{trap}.net"), "keras")
        assert "TrainingLoss()" in code and (trap != "stabilizer" or "Stabilizer(" in code)
        name = "trap_" + Path(trap).name
        (tmp_path / f"{name}.py").write_text(code)
        names.append(name)
    child(tmp_path, "tensorflow", CLASSES_ROUND_TRIP, *names)
