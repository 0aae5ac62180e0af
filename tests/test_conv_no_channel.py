"""Convolution without a channel axis (seed 004 line 172): CNTK 2.7's reduction_rank=0 convolves a rank-2 (H, W)
value as the one-channel image (1, H, W), W kept OIHW with I = 1; num_filters left out is one filter whose axis
the output drops, (H', W'), W OIHW with O = 1. The numbers on every target: tests/traps/conv_no_channel.net,
tests/cntk_reference/convolution_reduction_rank0.net and convolution_no_num_filters.net."""
import numpy as np
import pytest

from netdsl.errors import NetdslError
from netdsl.exec.graph import Executor
from netdsl.frontend import load_text

RANK0 = "x = Input(6)\nt = Dense((5, 7), activation=tanh)(x)\n" \
        "c = Convolution((3, 2), 4, reduction_rank=0, pad=True, strides=(2, 1), activation=tanh)(t)\noutput c\n"
NO_FILTERS = "x = Input((2, 6, 7))\nc = Convolution((3, 2), pad=True, strides=(2, 1), activation=tanh)(x)\n" \
             "d = Convolution((2, 2), reduction_rank=0)(c)\noutput d\ntrain {\n    loss = squared_error\n}\n"


def test_a_rank2_value_becomes_a_one_channel_image():
    g = load_text(RANK0, "t.net")
    conv = next(layer for layer in g.layers if layer.kind == "Convolution")
    assert conv.param("W").shape == (4, 1, 3, 2)
    assert g.nodes[-1].type.shape == (4, 3, 7)
    plain = load_text("x = Input((1, 5, 7))\nc = Convolution((3, 2), 4)(x)\noutput c\n", "t.net")
    g = load_text(NO_FILTERS, "t.net")
    first, second = g.layers
    assert first.param("W").shape == (1, 2, 3, 2) and dict(first.attrs)["no_filter_axis"] is True
    assert second.param("W").shape == (1, 1, 2, 2)
    assert [n.type.shape for n in g.nodes] == [(3, 7), (2, 6)]
    assert not {"reduction_rank", "no_filter_axis"} & set(dict(plain.layers[0].attrs))  # a plain one's IR is unchanged


@pytest.mark.parametrize("source, line, code, words", [
    ("Input((2, 6, 6))", "Convolution((3, 3), 4, reduction_rank=0)(x)", "E201", "needs a rank-2 (height, width)"),
    ("SequenceInput(3)", "Convolution((3,), 4, reduction_rank=0)(x)", "E103", "sequence of scalars"),
    ("SequenceInput(3)", "Convolution1D(3, 4, reduction_rank=0)(x)", "E103", "sequence of scalars"),
    ("Input((2, 6, 6))", "Convolution((3, 3), 4, reduction_rank=2)(x)", "E103", "must be 1 (reduce over"),
    ("Input(3)", "Convolution((3, 3), 4, reduction_rank=0)(Dense((2, 2))(x))", "E202", "does not fit"),
    ("SequenceInput(3)", "Convolution((3,))(x)", "E103", "a 1-D Convolution needs num_filters"),
    ("Input((2, 6, 6))", "Convolution((3, 3), activation=softmax)(x)", "E103", "softmax"),
    ("Input((2, 6, 6))", "MaxPooling((2, 2), strides=2)(Convolution((3, 3))(x))", "E201",
     "MaxPooling does not take the rank-2 tensor (4, 4)"),
    ("Input((2, 6, 6))", "Convolution((3, 3), 2)(Convolution((3, 3))(x))", "E201", "Convolution does not take"),
])
def test_what_reduction_rank_0_cannot_do_is_refused_where_written(source, line, code, words):
    with pytest.raises(NetdslError) as e:
        load_text(f"x = {source}\nz = {line}\noutput z\n", "t.net")
    d = e.value.diagnostics[0]
    assert d.code == code and words in d.message, d.message
    assert d.span.line == 2


@pytest.mark.parametrize("case", ["rank0", "no_filters"])
def test_executor_forward_and_backward_match_pytorch(case):
    """float64, against torch's conv2d on x.unsqueeze(1) / with its (N, 1, H', W') result squeezed: the executor's
    reshapes around its conv kernel."""
    torch = pytest.importorskip("torch")
    conv2d, pad = torch.nn.functional.conv2d, torch.nn.functional.pad
    g = load_text(RANK0 if case == "rank0" else NO_FILTERS, "t.net")
    rng = np.random.default_rng(4)
    params = {p.name: rng.standard_normal(p.shape) for p in g.params()}
    x = rng.standard_normal((2, 6) if case == "rank0" else (2, 2, 6, 7))
    dy = rng.standard_normal((2,) + g.nodes[-1].type.shape)
    ex = Executor(g, params, dtype=np.float64)
    y = ex.forward({"x": x})[g.outputs[0]]
    grads = ex.backward({g.outputs[0]: dy})
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    first, second = (layer.name for layer in g.layers)
    if case == "rank0":
        t = torch.tanh(torch.tensor(x) @ tp[f"{first}.W"].T + tp[f"{first}.b"]).reshape(2, 5, 7)
        padded = pad(t.unsqueeze(1), (0, 1, 1, 1))  # pad=True: rows (1, 1), columns (0, 1)
        yt = torch.tanh(conv2d(padded, tp[f"{second}.W"], tp[f"{second}.b"], stride=(2, 1)))
    else:
        c = torch.tanh(conv2d(pad(torch.tensor(x), (0, 1, 1, 1)), tp[f"{first}.W"], tp[f"{first}.b"], stride=(2, 1)))
        yt = conv2d(c, tp[f"{second}.W"], tp[f"{second}.b"]).squeeze(1)  # c is (N, 1, 3, 7): (3, 7) unsqueezed
    (yt * torch.tensor(dy)).sum().backward()
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    for name, p in tp.items():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def test_gradcheck_with_finite_differences():
    from tests.test_exec_graph import _fd_check

    g = load_text(RANK0, "t.net")
    assert _fd_check(g, {"x": np.random.default_rng(5).standard_normal((3, 6))}, n_coords=6) == 22  # 6 of each W, the 4 conv biases
    g = load_text(NO_FILTERS, "t.net")
    assert _fd_check(g, {"x": np.random.default_rng(6).standard_normal((3, 2, 6, 7))}, n_coords=6) == 12


def test_netdsl_run_feeds_mnist_shaped_samples_to_an_input_without_a_channel_axis(tmp_path, capsys):
    """(N, 28, 28) samples train an Input((28, 28)) model with reduction_rank=0 exactly as the Input((1, 28, 28))
    model with the plain convolution (the same weights: W (8, 1, 5, 5) either way)."""
    from netdsl.cli import main

    rng = np.random.default_rng(7)
    x, y = rng.integers(0, 256, (96, 28, 28)).astype(np.uint8), rng.integers(0, 10, 96)
    np.savez(tmp_path / "d.npz", x_train=x[:64], y_train=y[:64], x_test=x[64:], y_test=y[64:])
    lines = []
    for shape, rank in (("(28, 28)", ", reduction_rank=0"), ("(1, 28, 28)", "")):
        net = tmp_path / "m.net"
        net.write_text(f"x = Input({shape})\nc = Convolution((5, 5), 8{rank}, strides=2, activation=relu)(x)\n"
                       "z = Dense(10)(c)\noutput z\n")
        rc = main(["run", str(net), "--data", f"npz:{tmp_path / 'd.npz'}", "--epochs", "2", "--batch-size", "16",
                   "--no-progress"])
        out, err = capsys.readouterr()
        assert rc == 0, err
        lines.append([line.split(", ")[:3] for line in out.splitlines() if line.startswith("epoch")])
    assert lines[0] == lines[1] and len(lines[0]) == 2
