"""Dense with a tensor shape (CNTK's Dense((3, 4)), seed 004 line 122): the IR keeps W 2-D and the output's shape
beside units; only the kinds every target computes exactly read a rank-2 value, the rest refuse it where applied.
The numbers on every target: tests/traps/dense_tensor_shape.net and tests/cntk_reference/dense_tensor_shape.net."""
import pytest

from netdsl import ir
from netdsl.errors import NetdslError
from netdsl.frontend import load_text


def lower(text):
    return load_text(text, "t.net")


def test_tensor_shape_keeps_w_two_dimensional():
    g = lower("x = Input(6)\nd = Dense((3, 4), activation=relu)(x)\nz = Dense(5)(d)\noutput z\n")
    d, z = g.layers
    assert g.nodes[0].type.shape == (3, 4)
    assert d.attr("units") == 12 and d.attr("out_shape") == (3, 4)
    assert d.param("W").shape == (12, 6) and d.param("b").shape == (12,)
    assert z.param("W").shape == (5, 12) and z.attr("out_shape") is None
    assert ir.from_json(ir.to_json(g)) == g


def test_a_one_axis_shape_is_the_plain_dense():
    one = lower("x = Input(6)\nd = Dense((5,))(x)\noutput d\n")
    plain = lower("x = Input(6)\nd = Dense(5)(x)\noutput d\n")
    assert one.layers[0].attrs == plain.layers[0].attrs and one.layers[0].params == plain.layers[0].params


def test_a_shared_tensor_dense_keeps_its_shape():
    g = lower("x = Input(6)\ny = Input(6)\nf = Dense((2, 3))\na = f(x)\nb = f(y)\nz = Flatten()(a + b)\noutput z\n")
    assert [n.type.shape for n in g.nodes] == [(2, 3), (2, 3), (2, 3), (6,)]


@pytest.mark.parametrize("line, code, words", [
    ("z = Dense((2, 3, 4))(x)", "E103", "rank-3 or higher output is not supported"),
    ("z = Dense((0, 4))(x)", "E103", "a positive integer or a pair of them"),
    ("z = Dense((3, 4), activation=softmax)(x)", "E103", "with activation=softmax"),
    ("z = Activation(softmax)(Dense((3, 4))(x))", "E201", "softmax of the rank-2 tensor (3, 4)"),
    ("z = BatchNormalization()(Dense((3, 4))(x))", "E201", "BatchNormalization does not take the rank-2 tensor (3, 4)"),
    ("z = LayerNormalization()(Dense((3, 4))(x))", "E201", "LayerNormalization does not take"),
    ("z = splice([Dense((3, 4))(x), Dense((3, 4))(x)])", "E201", "Splice does not take"),
    ("z = Convolution((2, 2), 3)(Dense((3, 4))(x))", "E201", "Convolution does not take"),
    ("z = MaxPooling((2, 2))(Dense((3, 4))(x))", "E201", "MaxPooling does not take"),
    ("z = Stabilizer()(Dense((3, 4))(x))", "E201", "Stabilizer does not take"),
])
def test_what_cannot_read_a_tensor_is_refused_where_applied(line, code, words):
    with pytest.raises(NetdslError) as e:
        lower(f"x = Input(6)\n{line}\noutput z\n")
    d = e.value.diagnostics[0]
    assert d.code == code and words in d.message, d.message
    assert d.span.line == 2


def test_a_recurrence_over_a_sequence_of_tensors_is_refused():
    with pytest.raises(NetdslError) as e:
        lower("s = SequenceInput(5)\nz = Recurrence(LSTM(4))(Dense((3, 4))(s))\noutput z\n")
    d = e.value.diagnostics[0]
    assert d.code == "E201" and "LSTM does not take the rank-2 tensor seq[?] of (3, 4)" in d.message, d.message


def test_cross_entropy_on_a_tensor_output_is_refused_at_the_loss():
    text = "x = Input(6)\nz = Dense((3, 4))(x)\noutput z\ntrain {\n    loss = %s\n}\n"
    with pytest.raises(NetdslError) as e:
        lower(text % "cross_entropy_with_softmax")
    d = e.value.diagnostics[0]
    assert d.code == "E103" and "disagree on the axis" in d.message and d.span.line == 5
    assert lower(text % "squared_error").nodes[0].type.shape == (3, 4)
    with pytest.raises(NetdslError) as e:  # the default loss, without a train block: at the output's node
        lower("x = Input(6)\nz = Dense((3, 4))(x)\noutput z\n")
    d = e.value.diagnostics[0]
    assert d.code == "E103" and "(the default)" in d.message and d.span.line == 2


def test_input_rank_and_map_rank_keep_the_leading_axis():
    g = lower("x = Input(6)\nt = Dense((3, 4))(x)\na = Dense(5, input_rank=1)(t)\nb = Dense(5, map_rank=1)(t)\n"
              "c = Dense(2, input_rank=2)(t)\nd = Dense(2, map_rank=0)(t)\noutput c, a, b, d\n")
    shapes = {n.name: n.type.shape for n in g.nodes}
    assert (shapes["a"], shapes["b"], shapes["c"], shapes["d"]) == ((3, 5), (3, 5), (2,), (2,))
    by_name = {n.name: g.layer(n.layer) for n in g.nodes}
    assert by_name["a"].param("W").shape == (5, 4) and by_name["a"].attr("map_axes") == 1
    assert by_name["c"].param("W").shape == (2, 12) and by_name["c"].attr("map_axes") is None
    # CNTK 2.7's own example: Dense(5, input_rank=2) on (10, 3, 3) classifies the 10 maps apart, W (3, 3, 5) there
    image = lower("x = Input((10, 3, 3))\ny = Dense(5, input_rank=2)(x)\nz = Dense(2)(y)\noutput z\n")
    assert image.nodes[0].type.shape == (10, 5) and image.layers[0].param("W").shape == (5, 9)
    plain = lower("x = Input(6)\nd = Dense(5)(x)\noutput d\n").layers[0]
    assert "input_rank" not in dict(plain.attrs) and "map_rank" not in dict(plain.attrs)


@pytest.mark.parametrize("text, code, words", [
    ("Dense(5, input_rank=1, map_rank=1)(t)", "E103", "input_rank or map_rank, not both"),
    ("Dense(5, input_rank=0)(t)", "E103", "input_rank must be None or an integer from 1"),
    ("Dense(5, map_rank=True)(t)", "E103", "map_rank must be None or an integer from 0"),
    ("Dense(5, input_rank=3)(t)", "E201", "input_rank=3 needs an input of at least that rank"),
    ("Dense(5, map_rank=2)(t)", "E201", "leaves no axis of (3, 4) to reduce over"),
    ("Dense((2, 5), input_rank=1)(t)", "E201", "would make a rank-3 value"),
    ("Dense(5, input_rank=1, activation=softmax)(t)", "E103", "with activation=softmax making a rank-2 value"),
    ("Dense(5, input_rank=1)(i)", "E201", "keeping (2, 3) of (2, 3, 4) would make a rank-3 value"),
])
def test_input_rank_and_map_rank_that_cannot_be_honoured_are_refused(text, code, words):
    with pytest.raises(NetdslError) as e:
        lower(f"i = Input((2, 3, 4))\nt = Dense((3, 4))(i)\nz = {text}\noutput z\n")
    d = e.value.diagnostics[0]
    assert d.code == code and words in d.message, d.message
    assert d.span.line == 3


def test_executor_maps_over_the_kept_axis_forward_and_backward():
    """Dense(5, input_rank=1) after Dense((3, 4)) in the executor, against the same sums in PyTorch (float64)."""
    torch = pytest.importorskip("torch")
    import numpy as np

    from netdsl.exec.graph import Executor

    g = lower("x = Input(6)\nt = Dense((3, 4), activation=tanh)(x)\ny = Dense(5, map_rank=1)(t)\noutput y\n"
              "train {\n    loss = squared_error\n}\n")
    rng = np.random.default_rng(12)
    params = {p.name: rng.standard_normal(p.shape) for p in g.params()}
    x, dy = rng.standard_normal((2, 6)), rng.standard_normal((2, 3, 5))
    ex = Executor(g, params, dtype=np.float64)
    y = ex.forward({"x": x})["y"]
    grads = ex.backward({"y": dy})
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    first, second = (layer.name for layer in g.layers)
    t = torch.tanh(torch.tensor(x) @ tp[f"{first}.W"].T + tp[f"{first}.b"]).reshape(2, 3, 4)
    yt = t @ tp[f"{second}.W"].T + tp[f"{second}.b"]
    (yt * torch.tensor(dy)).sum().backward()
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    for name, p in tp.items():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def test_predict_writes_a_tensor_output_per_sample(tmp_path, capsys):
    """`netdsl predict` on a model whose output is (2, 3): one row per sample (not one per 'token'), and the
    .npy it writes is (N, 2, 3), the executor's numbers."""
    import numpy as np

    from netdsl import conformance as conf
    from netdsl.cli import main
    from netdsl.exec.graph import Executor

    net = tmp_path / "t.net"
    net.write_text("x = Input(6)\nh = Dense((2, 3), activation=tanh)(x)\noutput h\ntrain {\n    loss = squared_error\n}\n")
    g = lower(net.read_text())
    params = conf.conformance_params(g, 0)
    np.savez(tmp_path / "w.npz", **params)
    x = np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", str(net), "--load", str(tmp_path / "w.npz"), str(tmp_path / "x.npy")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + 4
    assert main(["predict", str(net), "--load", str(tmp_path / "w.npz"), str(tmp_path / "x.npy"),
                 "-o", str(tmp_path / "y.npy")]) == 0
    want = Executor(g, params).forward({"x": x})["h"]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, rtol=1e-6, atol=1e-6)
