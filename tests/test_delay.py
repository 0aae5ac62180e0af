"""Delay: the executor's kernel against the seed's own example, an explicit loop in torch and finite
differences; what Delay(T < 0) reads at the end of a shorter sample; the front end's checks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from netdsl.exec.kernels import delay  # noqa: E402
from tests.test_exec_ops import T, assert_close, fd_check, normal, rng_for  # noqa: E402


def torch_delay(x, shift, value):
    """y[:, t] = x[:, t - shift] inside the sequence, else value: one step at a time, in torch."""
    steps = []
    for t in range(x.shape[1]):
        s = t - shift
        # x * 0 + value rather than full_like: a zero gradient path even when every step is a fill
        steps.append(x[:, s] if 0 <= s < x.shape[1] else x[:, 0] * 0 + value)
    return torch.stack(steps, 1)


def test_the_seeds_example():
    """Seed 004, lines 399-424: "a b c b" as one-hot rows, delayed by 1 and by -1."""
    x = np.eye(3)[[0, 1, 2, 1]][None]
    past, _ = delay.delay_forward(x, 1)
    future, _ = delay.delay_forward(x, -1)
    np.testing.assert_array_equal(past[0], [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(future[0], [[0, 1, 0], [0, 0, 1], [0, 1, 0], [0, 0, 0]])


@pytest.mark.parametrize("shift,value", [(1, 0.0), (-1, 0.0), (2, 0.5), (-3, -1.25), (6, 2.0), (-6, 0.0)])
def test_delay_kernel(shift, value):
    rng = rng_for("delay", shift, value)
    x = normal(rng, (2, 5, 3))
    y, cache = delay.delay_forward(x, shift, value)
    R = normal(rng, y.shape)
    dx = delay.delay_backward(R, cache)
    fd_check(lambda x: delay.delay_forward(x, shift, value), [x], [0], [dx], R)

    x32, R32 = x.astype(np.float32), R.astype(np.float32)
    y, cache = delay.delay_forward(x32, shift, value)
    dx = delay.delay_backward(R32, cache)
    xt = T(x32)
    yt = torch_delay(xt, shift, value)
    (yt * T(R32, False)).sum().backward()
    assert y.dtype == dx.dtype == np.float32
    assert_close(y, yt.detach(), what="y")
    assert_close(dx, xt.grad, what="dx")


@pytest.mark.parametrize("shift", [-1, -2, 1])
def test_delay_reads_initial_state_not_padding(shift):
    """A padded batch: sample 0 has 2 valid steps of 4. Delay(T < 0) at its last valid steps reads
    initial_state, exactly as if the sample were alone at its own length, and no gradient reaches the
    padding from them (docs/ir.md)."""
    rng = rng_for("delay-lengths", shift)
    x = normal(rng, (2, 4, 3))
    lengths = np.array([2, 4])
    y, cache = delay.delay_forward(x, shift, 0.75, lengths)
    alone, _ = delay.delay_forward(x[:1, :2], shift, 0.75)
    np.testing.assert_array_equal(y[0, :2], alone[0])
    full, _ = delay.delay_forward(x[1:], shift, 0.75)
    np.testing.assert_array_equal(y[1], full[0])
    R = normal(rng, y.shape)
    R[0, 2:] = 0  # the padding's outputs are ignored by every reader
    dx = delay.delay_backward(R, cache)
    fd_check(lambda x: delay.delay_forward(x, shift, 0.75, lengths), [x], [0], [dx], R)
    np.testing.assert_array_equal(dx[0, 2:], 0)


# ------------------------------------------------------------------ front end

def diagnostics(text):
    from netdsl.errors import NetdslError
    from netdsl.frontend import load_text

    with pytest.raises(NetdslError) as e:
        load_text(text, "t.net")
    return [(d.code, d.message, d.span.line, d.span.col) for d in e.value.diagnostics]


@pytest.mark.parametrize("text,code,message", [
    ("x = SequenceInput(4)\ny = Delay(T=0)(x)\noutput y\n", "E103",
     ("Delay T must be a non-zero whole number of steps (negative: future values), at most 100,000,000 "
      "either way, got the number 0")),
    ("x = SequenceInput(4)\ny = Delay(1.5)(x)\noutput y\n", "E103", "Delay T must be a non-zero whole number"),
    ("x = SequenceInput(4)\ny = Delay(T=True)(x)\noutput y\n", "E103", "got the boolean True"),
    ("x = SequenceInput(4)\ny = Delay(T=1000000000)(x)\noutput y\n", "E103", "at most 100,000,000 either way"),
    ("x = SequenceInput(4)\ny = Delay(initial_state='a')(x)\noutput y\n", "E103",
     "Delay initial_state must be a finite number (float32), got the string"),
    ("x = SequenceInput(4)\ny = Delay(initial_state=1e39)(x)\noutput y\n", "E103",
     "Delay initial_state must be a finite number (float32), got the number 1e+39"),
    ("x = SequenceInput(4)\ny = Delay(steps=2)(x)\noutput y\n", "E102", "Delay has no argument 'steps'"),
    ("x = Input(4)\ny = Delay()(x)\noutput y\n", "E201", "Delay needs a sequence of feature vectors, got (4,)"),
    ("x = SequenceInput(vocab=5)\ny = Delay()(x)\noutput y\n", "E201", "Delay needs float features"),
])
def test_delay_errors_are_located(text, code, message):
    (got,) = diagnostics(text)
    assert got[0] == code and message in got[1] and got[2] == 2, got


def test_delay_attrs_and_type():
    from netdsl.frontend import load_text

    g = load_text("x = SequenceInput(4, length=6)\np = Delay()(x)\nn = Delay(-2, 0.5)(x)\n"
                  "t = splice([p, x, n])\noutput t\n", "t.net")
    attrs = {layer.name: (layer.attr("T"), layer.attr("initial_state")) for layer in g.layers if layer.kind == "Delay"}
    assert sorted(attrs.values()) == [(-2, 0.5), (1, 0.0)]
    assert all(isinstance(v, float) for _, v in attrs.values())
    assert not list(g.params())
    assert g.value_type("t").describe() == "seq[6] of (12,)"


TRIGRAM = """
seq = SequenceInput(3)
e = Dense(3)(seq)
xp = Delay()(e)
xn = Delay(T=-2, initial_state=0.5)(e)
h = Recurrence(LSTM(4))(splice([xp, e, xn]))
d = Dense(2)(select_last(h))
output d
"""


def test_executor_gradcheck_through_delays():
    """The executor's graph with two Delays between a Dense and an LSTM: every parameter's gradient against
    finite differences (the Dense's gradient comes back through both Delays)."""
    from netdsl.frontend import load_text
    from tests.test_exec_graph import _fd_check

    g = load_text(TRIGRAM, "trigram.net")
    rng = np.random.default_rng(12)
    assert _fd_check(g, {"seq": rng.standard_normal((3, 5, 3))}, n_coords=4) > 0


def test_executor_padded_batch_is_each_sample_alone():
    """The executor passes a padded batch's lengths to Delay: each sample's valid outputs equal those of the
    sample run alone at its own length (Delay(T=-1) reads initial_state at its last valid step)."""
    from netdsl.exec.graph import Executor
    from netdsl.exec.weights import init_params
    from netdsl.frontend import load_text

    g = load_text(TRIGRAM, "trigram.net")
    h = load_text(TRIGRAM.replace("Dense(2)(select_last(h))", "Dense(2)(h)"), "tagger.net")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    lengths = np.array([3, 5], np.int64)
    for graph, out in ((g, "d"), (h, "d")):
        ex = Executor(graph, init_params(graph, 1))
        batch = ex.forward({"seq": x}, lengths={"seq": lengths}, training=False)[out]
        alone = ex.forward({"seq": x[:1, :3]}, training=False)[out]
        np.testing.assert_allclose(batch[:1, :3] if batch.ndim == 3 else batch[:1], alone, rtol=1e-6, atol=1e-6)


DELAY_RELOAD = '''
import keras
import numpy as np

import trap_delay

model = trap_delay.build_model()
x = {"x": np.random.default_rng(0).uniform(-1, 1, (3, 5, 3)).astype(np.float32)}
model.save("delay.keras")
loaded = keras.models.load_model("delay.keras")
before, after = trap_delay.predict(model, x), trap_delay.predict(loaded, x)
assert all(np.array_equal(before[k], after[k]) for k in before)
'''


def test_keras_delay_reloads_without_netdsl(tmp_path):
    """The Keras target's Delay helper layer is registered as serializable: a saved .keras model holding it
    loads back, without netdsl, and predicts the same."""
    from netdsl.emit.base import emit
    from netdsl.frontend import load
    from tests.test_keras_runtime import NO_NETDSL, child

    trap = Path(__file__).resolve().parent / "traps" / "delay_trigram.net"
    (tmp_path / "trap_delay.py").write_text(emit(load(trap), "keras"))
    child(tmp_path, "tensorflow", NO_NETDSL + DELAY_RELOAD)
