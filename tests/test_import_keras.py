"""`netdsl import model.keras`: Sequential and functional Keras models of the supported layer kinds, with
their (randomised, as if trained) weights; the imported model is compiled to every target (pytorch,
keras/torch, keras/tensorflow, tf-estimator, gluon, cntk) and each must reproduce the Keras model's own
outputs (max |diff| <= 1e-5 x max(1, max |out|)).

Keras is channels-last; the imported .net takes NCHW images, so the batch is transposed for it.
"""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")  # the lighter backend, when nothing chose one
keras = pytest.importorskip("keras")
pytest.importorskip("onnx")

from netdsl import conformance as conf
from netdsl.cli import main
from netdsl.exec.weights import load_weights
from netdsl.frontend import load

L = keras.layers
COLUMNS = conf.COLUMNS  # every target


def keras_cnn():
    """The Keras ConvNet of seed 001 (mnist_cnn.py), with 'same' padding at stride 2 and a BatchNorm added."""
    inp = keras.Input((28, 28, 1))
    x = L.Rescaling(1 / 255)(inp)
    x = L.Conv2D(8, (3, 3), activation="relu")(x)
    x = L.Conv2D(16, (3, 3), strides=2, padding="same")(x)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    x = L.MaxPooling2D(pool_size=(2, 2))(x)
    # symmetric pads: Keras 3's torch backend pads asymmetric 'same' average pooling with zeros it then counts
    x = L.AveragePooling2D(pool_size=(3, 3), strides=1, padding="same")(x)
    x = L.Dropout(0.25)(x)
    x = L.Flatten()(x)
    x = L.Dense(32, activation="relu")(x)
    x = L.Dropout(0.5)(x)
    return keras.Model(inp, L.Dense(10, activation="softmax")(x), name="keras_cnn")


def shared_functional():
    """Two inputs through one shared Dense, concatenated, layer-normalised."""
    a, b = keras.Input((6,)), keras.Input((6,))
    shared = L.Dense(4, activation="tanh")
    h = L.Concatenate()([shared(a), shared(b)])
    h = L.LayerNormalization(epsilon=1e-3)(h)
    return keras.Model([a, b], L.Dense(3)(h), name="shared")


def lstm_tagger():
    words = keras.Input((5,), dtype="int32")
    e = L.Embedding(20, 6)(words)
    h = L.LSTM(7, return_sequences=True)(e)
    tags = L.Dense(4)(h)
    last = L.LSTM(3, go_backwards=True)(h)
    return keras.Model(words, [tags, last], name="tagger")


def sequential_mlp():
    return keras.Sequential([keras.Input((12,)), L.Dense(16, activation="sigmoid"), L.Dense(5)], name="mlp")


def sequential_cnn():
    """Seed 000's Keras createCNNModel as a Sequential, smaller: 'same' convolutions, dropout, softmax head."""
    return keras.Sequential([
        keras.Input((20, 24, 3)),
        L.Conv2D(8, (3, 3), padding="same", activation="relu"),
        L.Dropout(0.2),
        L.Conv2D(8, (3, 3), activation="relu", padding="same"),
        L.MaxPooling2D(pool_size=(2, 2)),
        L.Flatten(),
        L.Dense(16, activation="relu"),
        L.Dropout(0.5),
        L.Dense(5, activation="softmax"),
    ], name="seed000_cnn")


def residual_functional():
    """A small Keras ResNet: two blocks of conv-BN-relu-conv-BN added to their input, global average and max
    pooling concatenated."""
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu")(inp)
    for _ in range(2):
        y = L.Conv2D(8, 3, padding="same", use_bias=False)(x)
        y = L.Activation("relu")(L.BatchNormalization()(y))
        y = L.BatchNormalization()(L.Conv2D(8, 3, padding="same", use_bias=False)(y))
        x = L.Activation("relu")(L.Add()([x, y]))
    x = L.Concatenate()([L.GlobalAveragePooling2D()(x), L.GlobalMaxPooling2D()(x)])
    return keras.Model(inp, L.Dense(10)(x), name="resnet")


def merges():
    """Subtract, Multiply and a three-way Add of vectors, one of them through a shared Dense."""
    a, b = keras.Input((6,)), keras.Input((6,))
    shared = L.Dense(6, activation="tanh")
    sa, sb = shared(a), shared(b)
    d = L.Subtract()([sa, sb])
    m = L.Multiply()([sa, b])
    return keras.Model([a, b], L.Dense(4)(L.Add()([d, m, a])), name="merges")


MODELS = {"keras_cnn": keras_cnn, "shared": shared_functional, "tagger": lstm_tagger, "mlp": sequential_mlp,
          "seed000_cnn": sequential_cnn, "resnet": residual_functional, "merges": merges}


def randomise(model, seed):
    """Weights a training run could have left: kernels of variance 1/fan-in (so that no softmax saturates
    and every output is informative), vectors (biases, BatchNorm statistics) in [-0.5, 0.5]."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            new = [rng.uniform(-1, 1, w.shape).astype(w.dtype)
                   * np.float32(np.sqrt(3 / np.prod(w.shape[:-1])) if w.ndim > 1 else 0.5) for w in weights]
            if isinstance(layer, L.BatchNormalization):
                new[-1] = rng.uniform(0.5, 1.5, new[-1].shape).astype(np.float32)  # a variance
            layer.set_weights(new)
    return model


def batch(model, seed):
    """Ids, pixels in [0, 255] for a model that rescales them, else values in [-1, 1]."""
    rng = np.random.default_rng(seed)
    pixels = any(isinstance(layer, L.Rescaling) for layer in model.layers)
    out = []
    for t in model.inputs:
        shape = (3,) + tuple(t.shape[1:])
        out.append(rng.integers(0, 20, shape).astype(np.int64) if "int" in str(t.dtype)
                   else rng.uniform(0, 255, shape).astype(np.float32) if pixels
                   else rng.uniform(-1, 1, shape).astype(np.float32))
    return out


def compare(name, workdir):
    """Import MODELS[name] (weights randomised as if trained) and run it on every target against Keras itself.

    Returns ({target: max |diff|}, {target: why it did not run}, tolerance), the tolerance being
    INFER_TOL x max(1, max |Keras output|). Used by bench/imports.py for the table in docs/onnx.md."""
    from pathlib import Path

    workdir = Path(workdir)
    model = randomise(MODELS[name](), 5)
    path = workdir / f"{name}.keras"
    model.save(path)
    out = workdir / f"{name}.net"
    assert main(["import", str(path), "-o", str(out)]) == 0
    graph = load(str(out))
    weights = load_weights(workdir / f"{name}.npz", graph)
    xs = batch(model, 6)
    want = model.predict(xs if len(xs) > 1 else xs[0], verbose=0)
    want = [np.asarray(w) for w in (want if isinstance(want, list | tuple) else [want])]
    inputs = {i.name: (x.transpose(0, 3, 1, 2) if x.ndim == 4 else x) for i, x in zip(graph.inputs, xs)}
    worst, skipped = conf.check_against(want, graph, weights, inputs, COLUMNS, str(workdir))
    scale = conf.scale_of(want)
    return {c: d * scale for c, d in worst.items()}, skipped, conf.INFER_TOL * scale


@pytest.mark.parametrize("name", list(MODELS))
def test_keras_model_imports_and_every_target_reproduces_it(tmp_path, name, record_property):
    diffs, skipped, tol = compare(name, tmp_path)
    record_property("max_abs_diff", diffs)  # per target, in a --junitxml report too
    print(f"{name}: max |diff| per target (tolerance {tol:.1e}): {diffs}; not run: {skipped}")
    assert set(diffs) | set(skipped) == {"native"} | {c.name for c in COLUMNS}
    for column, diff in diffs.items():
        assert diff <= tol, f"{name} on {column}: differs from the source by {diff:.2e}"
    unavailable = {c: why for c, why in skipped.items() if not why.startswith("unsupported")}
    if unavailable:
        pytest.skip("NOT EXECUTED: " + "; ".join(f"{c}: {why}" for c, why in unavailable.items()))


def test_keras_residual_and_merges_import_as_elementwise(tmp_path):
    """Keras's Add/Subtract/Multiply become `a + b`, `a - b`, `a * b`; a three-way Add two of them."""
    ops = {}
    for name in ("resnet", "merges"):
        path = tmp_path / f"{name}.keras"
        MODELS[name]().save(path)
        assert main(["import", str(path), "-o", str(tmp_path / f"{name}.net")]) == 0
        graph = load(str(tmp_path / f"{name}.net"))
        ops[name] = [layer.attr("op") for layer in graph.layers if layer.kind == "Elementwise"]
    assert ops["resnet"] == ["add", "add"]
    assert sorted(ops["merges"]) == ["add", "add", "mul", "sub"]


def test_unsupported_keras_layers_are_all_listed(tmp_path, capsys):
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, dilation_rate=2)(inp)
    x = L.UpSampling2D()(x)
    x = L.Flatten()(x)
    x = L.Dense(3, activation="gelu")(x)
    path = tmp_path / "bad.keras"
    keras.Model(inp, x).save(path)
    assert main(["import", str(path), "-o", str(tmp_path / "bad.net")]) == 1
    err = capsys.readouterr().err
    assert "[E822]" in err and "Traceback" not in err
    assert "3 Keras layer(s)" in err and err.count("[E822]") == 4  # the summary, then one per layer
    for what in ("conv2d", "up_sampling2d", "dense"):
        assert f"layer '{what}" in err
