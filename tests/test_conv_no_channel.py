"""Convolution over a value without a channel axis (CNTK 2.7's reduction_rank=0, seed 004 line 172): a rank-2
(H, W) value is convolved as the one-channel image (1, H, W), W kept OIHW with I = 1. The numbers on every
target: tests/traps/conv_no_channel.net and tests/cntk_reference/convolution_reduction_rank0.net."""
import numpy as np
import pytest

from netdsl.errors import NetdslError
from netdsl.exec.graph import Executor
from netdsl.frontend import load_text

RANK0 = "x = Input(6)\nt = Dense((5, 7), activation=tanh)(x)\n" \
        "c = Convolution((3, 2), 4, reduction_rank=0, pad=True, strides=(2, 1), activation=tanh)(t)\noutput c\n"


def test_a_rank2_value_becomes_a_one_channel_image():
    g = load_text(RANK0, "t.net")
    conv = next(layer for layer in g.layers if layer.kind == "Convolution")
    assert conv.param("W").shape == (4, 1, 3, 2)
    assert g.nodes[-1].type.shape == (4, 3, 7)
    plain = load_text("x = Input((1, 5, 7))\nc = Convolution((3, 2), 4)(x)\noutput c\n", "t.net")
    assert "reduction_rank" not in plain.layers[0].attrs  # a plain Convolution's IR is unchanged


@pytest.mark.parametrize("source, line, code, words", [
    ("Input((2, 6, 6))", "Convolution((3, 3), 4, reduction_rank=0)(x)", "E201", "needs a rank-2 (height, width)"),
    ("SequenceInput(3)", "Convolution((3,), 4, reduction_rank=0)(x)", "E103", "sequence of scalars"),
    ("SequenceInput(3)", "Convolution1D(3, 4, reduction_rank=0)(x)", "E103", "sequence of scalars"),
    ("Input((2, 6, 6))", "Convolution((3, 3), 4, reduction_rank=2)(x)", "E103", "must be 1 (reduce over"),
    ("Input(3)", "Convolution((3, 3), 4, reduction_rank=0)(Dense((2, 2))(x))", "E202", "does not fit"),
])
def test_what_reduction_rank_0_cannot_do_is_refused_where_written(source, line, code, words):
    with pytest.raises(NetdslError) as e:
        load_text(f"x = {source}\nz = {line}\noutput z\n", "t.net")
    d = e.value.diagnostics[0]
    assert d.code == code and words in d.message, d.message
    assert d.span.line == 2


def test_executor_forward_and_backward_match_pytorch():
    """float64, against torch's conv2d on x.unsqueeze(1): the executor's reshape around its conv kernel."""
    torch = pytest.importorskip("torch")
    g = load_text(RANK0, "t.net")
    rng = np.random.default_rng(4)
    params = {p.name: rng.standard_normal(p.shape) for p in g.params()}
    x, dy = rng.standard_normal((2, 6)), rng.standard_normal((2, 4, 3, 7))
    ex = Executor(g, params, dtype=np.float64)
    y = ex.forward({"x": x})["c"]
    grads = ex.backward({"c": dy})
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    dense, conv = (layer.name for layer in g.layers)
    t = torch.tanh(torch.tensor(x) @ tp[f"{dense}.W"].T + tp[f"{dense}.b"]).reshape(2, 5, 7)
    padded = torch.nn.functional.pad(t.unsqueeze(1), (0, 1, 1, 1))  # pad=True: rows (1, 1), columns (0, 1)
    yt = torch.tanh(torch.nn.functional.conv2d(padded, tp[f"{conv}.W"], tp[f"{conv}.b"], stride=(2, 1)))
    (yt * torch.tensor(dy)).sum().backward()
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    for name, p in tp.items():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def test_gradcheck_with_finite_differences():
    from tests.test_exec_graph import _fd_check

    g = load_text(RANK0, "t.net")
    assert _fd_check(g, {"x": np.random.default_rng(5).standard_normal((3, 6))}, n_coords=6) == 22  # 6 of each W, the 4 conv biases
