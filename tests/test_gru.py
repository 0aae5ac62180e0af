"""GRU: the executor's kernel against finite differences and PyTorch (nn.GRU for reset_after=True, the
CNTK cell written in torch for reset_after=False), and the front end's checks."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from netdsl.exec.kernels import gru  # noqa: E402
from tests.test_exec_ops import T, assert_close, fd_check, normal, rng_for  # noqa: E402


def torch_gru(x, W, H, b, bh, go_backwards, init=0.0, alpha=None):
    """(output, the tensors to read gradients from) for canonical weights: nn.GRU when bh is given
    (reset_after=True), else CNTK's cell, reset before the recurrent product, in torch ops."""
    hs = H.shape[1]
    xin = torch.flip(x, [1]) if go_backwards else x
    if bh is not None:
        m = torch.nn.GRU(x.shape[2], hs, batch_first=True).to(x.dtype)
        with torch.no_grad():
            m.weight_ih_l0.copy_(W)
            m.weight_hh_l0.copy_(H)
            m.bias_ih_l0.copy_(b)
            m.bias_hh_l0.copy_(bh)
        out, _ = m(xin, torch.full((1, x.shape[0], hs), init, dtype=x.dtype))
        params = (m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0)
    else:
        params = tuple(T(a) for a in (W, H, b)) + (() if alpha is None else (T(alpha),))
        Wt, Ht, bt = params[:3]
        # CNTK's enable_self_stabilization: Sdh = softplus(4 alpha) / 4 scales h_prev in the gates and the interpolation
        beta = 1.0 if alpha is None else torch.nn.functional.softplus(params[3], beta=4)
        h = torch.full((x.shape[0], hs), init, dtype=x.dtype)
        steps = []
        for t in range(x.shape[1]):
            h = beta * h
            a = xin[:, t] @ Wt.T + bt
            r = torch.sigmoid(a[:, :hs] + h @ Ht[:hs].T)
            z = torch.sigmoid(a[:, hs:2 * hs] + h @ Ht[hs:2 * hs].T)
            n = torch.tanh(a[:, 2 * hs:] + (r * h) @ Ht[2 * hs:].T)
            h = (1 - z) * n + z * h
            steps.append(h)
        out = torch.stack(steps, 1)
    return (torch.flip(out, [1]) if go_backwards else out), params


# init: Recurrence's initial_state, a constant h0 (no gradient of its own); stab: CNTK's enable_self_stabilization
@pytest.mark.parametrize("reset_after, go_backwards, init, stab", [
    (False, False, 0.0, False), (False, True, 0.0, False), (True, False, 0.0, False), (True, True, 0.0, False),
    (False, True, 0.4, False), (True, False, -0.6, False), (False, False, 0.0, True), (False, True, 0.3, True)])
def test_gru_kernel(reset_after, go_backwards, init, stab):
    rng = rng_for("gru", reset_after, go_backwards, *([init] if init else []), *(["stab"] if stab else []))
    n, T_, f, hs = 2, 4, 3, 3
    x = normal(rng, (n, T_, f))
    W = normal(rng, (3 * hs, f)) * 0.5
    H = normal(rng, (3 * hs, hs)) * 0.5
    b = normal(rng, (3 * hs,)) * 0.5
    bh = normal(rng, (3 * hs,)) * 0.5 if reset_after else None
    alpha = np.asarray(rng.uniform(-0.5, 1.0)) if stab else None
    y, cache = gru.gru_forward(x, W, H, b, bh, go_backwards, init, alpha)
    assert y.shape == (n, T_, hs)
    R = normal(rng, y.shape)
    dx, dW, dH, db, dbh, dalpha = gru.gru_backward(R, cache)
    assert (dalpha is None) == (not stab)
    extra, extra_grads = ([bh], [dbh]) if reset_after else ([alpha], [dalpha]) if stab else ([], [])
    args, grads = [x, W, H, b] + extra, [dx, dW, dH, db] + extra_grads

    def fwd(x, W, H, b, last=None):
        return gru.gru_forward(x, W, H, b, last if reset_after else None, go_backwards, init, last if stab else None)

    fd_check(fwd, args, list(range(len(args))), grads, R)

    a32 = [np.asarray(a, np.float32) for a in args]
    R32 = R.astype(np.float32)
    y, cache = fwd(*a32)
    dx, dW, dH, db, dbh, dalpha = gru.gru_backward(R32, cache)
    xt = T(a32[0])
    yt, params = torch_gru(xt, *(torch.tensor(a) for a in a32[1:4]), torch.tensor(a32[4]) if reset_after else None,
                           go_backwards, init, a32[4] if stab else None)
    (yt * T(R32, False)).sum().backward()
    assert y.dtype == dx.dtype == dW.dtype == np.float32
    assert_close(y, yt.detach(), what="y")
    assert_close(dx, xt.grad, what="dx")
    for ours, ref, what in zip((dW, dH, db, dbh if reset_after else dalpha), params, ("dW", "dH", "db", "dbh/dalpha")):
        assert_close(ours, ref.grad, what=what)


def test_gru_conventions_differ():
    """The two reset_after values are different functions (with bh = 0), so a target that confused them
    would fail conformance."""
    rng = rng_for("gru-conventions")
    x = normal(rng, (2, 5, 3), np.float32)
    W, H, b = normal(rng, (6, 3), np.float32), normal(rng, (6, 2), np.float32), normal(rng, (6,), np.float32)
    before, _ = gru.gru_forward(x, W, H, b)
    after, _ = gru.gru_forward(x, W, H, b, np.zeros(6, np.float32))
    assert np.abs(before - after).max() > 1e-2


def test_gru_go_backwards_output_alignment():
    rng = rng_for("gru-align")
    x = normal(rng, (2, 5, 3), np.float32)
    W, H, b = normal(rng, (6, 3), np.float32), normal(rng, (6, 2), np.float32), normal(rng, (6,), np.float32)
    y, _ = gru.gru_forward(x, W, H, b, go_backwards=True)
    first_step, _ = gru.gru_forward(x[:, -1:], W, H, b)
    np.testing.assert_allclose(y[:, -1], first_step[:, 0], rtol=1e-6)
    reversed_fwd, _ = gru.gru_forward(x[:, ::-1].copy(), W, H, b)
    np.testing.assert_allclose(y[:, 0], reversed_fwd[:, -1], rtol=1e-6)


# ------------------------------------------------------------------ front end

def diagnostics(text):
    from netdsl.errors import NetdslError
    from netdsl.frontend import load_text

    with pytest.raises(NetdslError) as e:
        load_text(text, "t.net")
    return [(d.code, d.message, d.span.line, d.span.col) for d in e.value.diagnostics]


@pytest.mark.parametrize("text,code,message,col", [
    ("rows = SequenceInput(4)\nh = GRU(3)(rows)\noutput h\n", "E103",
     "GRU must be wrapped in Recurrence(...) to run over a sequence", 5),
    ("rows = SequenceInput(4)\nh = Recurrence(GRU(3, reset_after=1))(rows)\noutput h\n", "E103",
     "GRU reset_after must be True or False, got the number 1", 23),
    ("rows = SequenceInput(4)\nh = Recurrence(GRU(0))(rows)\noutput h\n", "E103",
     "GRU shape must be a positive integer, got the number 0", 20),
    ("rows = SequenceInput(4)\nh = Recurrence(Dense(3))(rows)\noutput h\n", "E103",
     "Recurrence takes an LSTM(...) or a GRU(...), got", 16),
    ("rows = SequenceInput(4)\nh = Recurrence(GRU(3, use_peepholes=True))(rows)\noutput h\n", "E102",
     "GRU has no argument 'use_peepholes'", 23),
    # CNTK's GRU has enable_self_stabilization: only on CNTK's cell (reset_after=False), and not with initial_state yet
    (("rows = SequenceInput(4)\nh = Recurrence(GRU(3, enable_self_stabilization=True, reset_after=True))(rows)\n"
      "output h\n"), "E103", "GRU enable_self_stabilization=True needs reset_after=False (CNTK's GRU)", 23),
    ("rows = SequenceInput(4)\nh = Recurrence(GRU(3, enable_self_stabilization=1))(rows)\noutput h\n", "E103",
     "GRU enable_self_stabilization must be True or False, got the number 1", 23),
    (("rows = SequenceInput(4)\nh = Recurrence(GRU(3, enable_self_stabilization=True), initial_state=0.5)(rows)\n"
      "output h\n"), "E103",
     "Recurrence initial_state with a self-stabilized GRU (enable_self_stabilization) is not supported yet", 56),
    # initial_state with the LSTM options that run as a helper loop: not yet
    ("rows = SequenceInput(4)\nh = Recurrence(LSTM(3, use_peepholes=True), initial_state=0.5)(rows)\noutput h\n",
     "E103", "Recurrence initial_state with a peephole LSTM (use_peepholes) is not supported yet", 45),
    ("image = Input((1, 8, 8))\nh = Recurrence(GRU(3))(image)\noutput h\n", "E201",
     "Recurrence(GRU) needs a sequence of feature vectors, got (1, 8, 8)", 5),
    # initial_state: a constant finite number only (CNTK also takes a tensor or a computed value)
    ("rows = SequenceInput(4)\nh = Recurrence(GRU(3), initial_state=rows)(rows)\noutput h\n", "E103",
     "Recurrence initial_state must be a constant finite number (float32), the value every state component "
     "starts from; a tensor or a computed value is not supported, got the value 'rows'", 24),
    ("rows = SequenceInput(4)\nh = Recurrence(LSTM(3), initial_state=(1, 2))(rows)\noutput h\n", "E103",
     "a tensor or a computed value is not supported, got", 25),
    ("rows = SequenceInput(4)\nh = Recurrence(LSTM(3), initial_state=True)(rows)\noutput h\n", "E103",
     "Recurrence initial_state must be a constant finite number", 25),
    ("rows = SequenceInput(4)\nh = Recurrence(LSTM(3), initial_state=1e39)(rows)\noutput h\n", "E103",
     "Recurrence initial_state must be a constant finite number", 25),
    ("rows = SequenceInput(4)\nh = Recurrence(LSTM(3), initial_state=Dense(3))(rows)\noutput h\n", "E103",
     "Recurrence initial_state must be a constant finite number", 25),
])
def test_gru_errors_are_located(text, code, message, col):
    (got,) = diagnostics(text)
    assert got[0] == code and message in got[1] and got[2:] == (2, col), got


@pytest.mark.parametrize("body,message", [
    ("h = Recurrence(GRU(3, reset_after=True))(rows)",
     "GRU enable_self_stabilization=True (here from default_options) needs reset_after=False"),
    ("h = Recurrence(GRU(3), initial_state=0.5)(rows)",
     ("Recurrence initial_state with a self-stabilized GRU (enable_self_stabilization, here from default_options) "
      "is not supported yet")),
    ("h = Recurrence(LSTM(3), initial_state=0.5)(rows)", "Recurrence initial_state with use_peepholes or "
     "enable_self_stabilization (here from default_options) is not supported yet"),
])
def test_stabilization_from_default_options_is_refused_where_applied(body, message):
    (got,) = diagnostics("rows = SequenceInput(4)\nwith default_options(enable_self_stabilization=True) {\n"
                         f"    {body}\n}}\noutput h\n")
    assert got[0] == "E103" and message in got[1] and got[2:] == (3, 9), got


def test_gru_parameters_and_attrs():
    from netdsl.frontend import load_text

    g = load_text("rows = SequenceInput(4)\nf = Recurrence(GRU(3))(rows)\n"
                  "b = Recurrence(GRU(2, reset_after=True), go_backwards=True)(rows)\ns = splice([f, b])\noutput s\n",
                  "t.net")
    shapes = {p.name: tuple(p.shape) for p in g.params()}
    assert shapes == {"gru_1.W": (9, 4), "gru_1.H": (9, 3), "gru_1.b": (9,),
                      "gru_2.W": (6, 4), "gru_2.H": (6, 2), "gru_2.b": (6,), "gru_2.bh": (6,)}
    attrs = {layer.name: (layer.attr("reset_after"), layer.attr("go_backwards")) for layer in g.layers if layer.kind == "GRU"}
    assert attrs == {"gru_1": (False, False), "gru_2": (True, True)}


def test_gru_self_stabilization_parameter():
    # CNTK's GRU(enable_self_stabilization=True), given or from default_options: one scalar Sdh, beta = 1 at the start
    from netdsl.frontend import load_text
    from netdsl.layers.stabilizer import initial_alpha

    g = load_text("rows = SequenceInput(4)\nf = Recurrence(GRU(3, enable_self_stabilization=True))(rows)\n"
                  "with default_options(enable_self_stabilization=True):\n    b = Recurrence(GRU(2))(f)\noutput b\n",
                  "t.net")
    params = {p.name: p for p in g.params()}
    assert {k: tuple(p.shape) for k, p in params.items() if k.endswith(".Sdh")} == {"gru_1.Sdh": (), "gru_2.Sdh": ()}
    assert params["gru_1.Sdh"].init == f"constant({initial_alpha(4.0)!r})"


def test_initial_state_is_an_attr_next_to_go_backwards():
    from netdsl.frontend import load_text

    g = load_text("rows = SequenceInput(4)\nf = Recurrence(GRU(3), initial_state=1)(rows)\n"
                  "b = Recurrence(LSTM(2), go_backwards=True, initial_state=-0.5)(rows)\n"
                  "c = Recurrence(LSTM(2))(rows)\ns = splice([f, b, c])\noutput s\n", "t.net")
    rec = [layer for layer in g.layers if layer.kind in ("LSTM", "GRU")]
    attrs = {layer.name: (layer.attr("go_backwards"), layer.attr("initial_state")) for layer in rec}
    assert attrs == {"gru_1": (False, 1.0), "lstm_1": (True, -0.5), "lstm_2": (False, 0.0)}
    assert all(type(layer.attr("initial_state")) is float for layer in rec)


# ------------------------------------------------------------------ init_bias (seed 004, LSTM's and GRU's)

INIT_BIAS_NET = """rows = SequenceInput(4)
with default_options(init_bias=0.25) {
    f = Recurrence(LSTM(3))(rows)
    g = Recurrence(GRU(2, init_bias=-0.5))(rows)
    k = Recurrence(GRU(2, reset_after=True))(rows)
    p = Recurrence(LSTM(2, cell_shape=5))(rows)
}
s = splice([f, g, k, p])
output s
"""
EXPORT_DRIVER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("generated", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
mod.export_netdsl_weights(mod.build_model(), sys.argv[2])
"""


@pytest.mark.parametrize("target", ["native", "pytorch", "keras", "cntk"])
def test_init_bias_starts_the_bias(tmp_path, target):
    """init_bias (given, or from default_options) is the initial bias on every target that initialises by
    the .net file (gluon and tf-estimator start from their own initialisers, docs/targets.md); a reset_after
    GRU's recurrent bias bh starts at 0, as CNTK's GRU has one bias."""
    import os
    import subprocess
    import sys

    from netdsl.emit.base import emit
    from netdsl.exec.weights import init_params
    from netdsl.frontend import load_text

    graph = load_text(INIT_BIAS_NET, "t.net")
    if target == "native":
        params = init_params(graph, 0)
    else:
        from test_emit_legacy import _python

        py = sys.executable if target != "cntk" else _python(target)
        if target == "cntk" and not py:
            pytest.skip("CNTK NOT EXECUTED: no cntk venv")
        (tmp_path / "gen.py").write_text(emit(graph, target))
        (tmp_path / "driver.py").write_text(EXPORT_DRIVER)
        env = dict(os.environ, KERAS_BACKEND="torch", KERAS_HOME=str(tmp_path / "keras-home"), PYTHONDONTWRITEBYTECODE="1")
        proc = subprocess.run([py, "driver.py", "gen.py", "out.npz"], capture_output=True, text=True, timeout=600,
                              env=env, cwd=str(tmp_path))
        assert proc.returncode == 0, proc.stderr[-3000:]
        with np.load(tmp_path / "out.npz") as z:
            params = dict(z)
    np.testing.assert_array_equal(params["lstm_1.b"], np.full(12, 0.25, np.float32))
    np.testing.assert_array_equal(params["gru_1.b"], np.full(6, -0.5, np.float32))
    np.testing.assert_array_equal(params["gru_2.b"], np.full(6, 0.25, np.float32))
    np.testing.assert_array_equal(params["gru_2.bh"], np.zeros(6, np.float32))
    # a projected LSTM (cell_shape): its bias has the cell's 4 * 5 rows, and P (2, 5) is exported,
    # drawn from init (glorot_uniform: within sqrt(6 / (5 + 2)))
    np.testing.assert_array_equal(params["lstm_2.b"], np.full(20, 0.25, np.float32))
    P = params["lstm_2.P"]
    assert P.shape == (2, 5) and np.abs(P).max() <= np.sqrt(6 / 7) and np.abs(P).min() > 0, P


TORCH_GRU = '''
from torch import nn


class GruTagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(4, 6, batch_first=True)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        h, _ = self.gru(x)
        return self.fc(h)
'''


def test_a_torch_gru_imports_as_reset_after(tmp_path):
    """torch.onnx writes nn.GRU as ONNX GRU with linear_before_reset=1: Recurrence(GRU(n, reset_after=True)),
    which the executor runs to torch's numbers."""
    import importlib.util

    from netdsl.cli import main
    from netdsl.exec.graph import Executor
    from netdsl.exec.weights import load_weights
    from netdsl.frontend import load

    src = tmp_path / "tagger.py"
    src.write_text(TORCH_GRU)
    spec = importlib.util.spec_from_file_location("tagger_for_test", src)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    module = mod.GruTagger().eval()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    torch.save(module.state_dict(), tmp_path / "state.pt")
    out = tmp_path / "imported.net"
    assert main(["import", f"{src}:GruTagger", "--input-shape", "7,4", "--state-dict", str(tmp_path / "state.pt"),
                 "-o", str(out)]) == 0
    assert "GRU(6, reset_after=True)" in out.read_text()
    graph = load(str(out))
    weights = load_weights(tmp_path / "imported.npz", graph)
    x = np.random.default_rng(3).uniform(-1, 1, (3, 7, 4)).astype(np.float32)
    got = Executor(graph, weights).forward({graph.inputs[0].name: x})[graph.outputs[0]]
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    assert_close(got, want, what="imported GRU")


@pytest.mark.parametrize("reset_after", [False, True])
def test_a_keras_gru_imports(tmp_path, reset_after):
    """A Keras GRU (z, r, h gates, one or two biases) imports as Recurrence(GRU(n, reset_after=...)); a
    backward one read for its last state becomes select_first of a go_backwards GRU."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    from netdsl.cli import main
    from netdsl.exec.graph import Executor
    from netdsl.exec.weights import load_weights
    from netdsl.frontend import load

    L = keras.layers
    rows = keras.Input((5, 4))
    h = L.GRU(6, return_sequences=True, reset_after=reset_after)(rows)
    last = L.GRU(3, go_backwards=True, reset_after=reset_after)(h)
    model = keras.Model(rows, L.Dense(2)(last), name="gru_model")
    rng = np.random.default_rng(7)
    for layer in model.layers:
        if layer.get_weights():
            layer.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(w.dtype) for w in layer.get_weights()])
    model.save(tmp_path / "m.keras")
    out = tmp_path / "m.net"
    assert main(["import", str(tmp_path / "m.keras"), "-o", str(out)]) == 0
    assert out.read_text().count("reset_after=True") == (2 if reset_after else 0)
    graph = load(str(out))
    weights = load_weights(tmp_path / "m.npz", graph)
    x = rng.uniform(-1, 1, (3, 5, 4)).astype(np.float32)
    got = Executor(graph, weights).forward({graph.inputs[0].name: x})[graph.outputs[0]]
    assert_close(got, np.asarray(model.predict(x, verbose=0)), what="imported Keras GRU")
