"""Issue 12's layer kinds and activations in the executor: forward and backward against finite differences
(float64) and real PyTorch (float32), as tests/test_exec_ops.py does for the older kinds; and their front end."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from test_exec_ops import T, assert_close, away_from_zero, fd_check, normal, rng_for  # noqa: E402

from netdsl.errors import NetdslError  # noqa: E402
from netdsl.exec.kernels import activation, global_pool  # noqa: E402
from netdsl.frontend import load_text  # noqa: E402

# IR spelling -> the same function in PyTorch
TORCH_ACTS = {
    "elu": F.elu,
    "leaky_relu(alpha=0.01)": F.leaky_relu,
    "leaky_relu(alpha=0.2)": lambda x: F.leaky_relu(x, 0.2),
    "leaky_relu(alpha=0.0)": lambda x: F.leaky_relu(x, 0.0),
    "gelu(approximate=False)": F.gelu,
    "gelu(approximate=True)": lambda x: F.gelu(x, approximate="tanh"),
    "softplus": F.softplus,
    "silu": F.silu,
    "hard_sigmoid": F.hardsigmoid,
}


def spread(rng, shape):
    """Values over [-5, 5] away from the kinks at 0 and +-3 (hard_sigmoid), so central differences hold."""
    x = rng.uniform(-5, 5, shape)
    for kink in (-3.0, 0.0, 3.0):
        near = np.abs(x - kink) < 0.05
        x[near] = kink + 0.1
    return x


@pytest.mark.parametrize("act", list(TORCH_ACTS))
@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4), (2, 3, 2, 2)])
def test_activation(act, shape):
    rng = rng_for("act12", act, shape)
    x = spread(rng, shape)
    R = normal(rng, shape)
    y, cache = activation.activation_forward(x, act)
    fd_check(activation.activation_forward, [x, act], [0], [activation.activation_backward(R, cache)], R)

    x32, R32 = x.astype(np.float32), R.astype(np.float32)
    y, cache = activation.activation_forward(x32, act)
    dx = activation.activation_backward(R32, cache)
    assert y.dtype == np.float32 and dx.dtype == np.float32
    xt = T(x32)
    yt = TORCH_ACTS[act](xt)
    (yt * T(R32, False)).sum().backward()
    assert_close(y, yt.detach(), what="y")
    assert_close(dx, xt.grad, what="dx")


def test_activations_do_not_overflow():
    x = np.array([-1e4, -100.0, 0.0, 100.0, 1e4], np.float32)
    for act, fn in TORCH_ACTS.items():
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            y, cache = activation.activation_forward(x, act)
            dx = activation.activation_backward(np.ones_like(x), cache)
        assert np.isfinite(y).all() and np.isfinite(dx).all(), act
        assert_close(y, fn(torch.tensor(x)), what=act)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 1, 1), (3, 1, 7, 2)])
def test_global_average_pooling(shape):
    rng = rng_for("gap", shape)
    x = normal(rng, shape)
    R = normal(rng, shape[:2])
    y, cache = global_pool.global_avg_forward(x)
    dx = global_pool.global_avg_backward(R, cache)
    fd_check(lambda x: global_pool.global_avg_forward(x), [x], [0], [dx], R)

    x32, R32 = x.astype(np.float32), R.astype(np.float32)
    y, cache = global_pool.global_avg_forward(x32)
    dx = global_pool.global_avg_backward(R32, cache)
    xt = T(x32)
    yt = F.adaptive_avg_pool2d(xt, 1).flatten(1)
    (yt * T(R32, False)).sum().backward()
    assert y.dtype == np.float32 and dx.dtype == np.float32
    assert_close(y, yt.detach(), what="y")
    assert_close(dx, xt.grad, what="dx")


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 1, 1), (3, 1, 7, 2)])
def test_global_max_pooling(shape):
    rng = rng_for("gmp", shape)
    x = away_from_zero(rng, shape)
    R = normal(rng, shape[:2])
    y, cache = global_pool.global_max_forward(x)
    dx = global_pool.global_max_backward(R, cache)
    fd_check(lambda x: global_pool.global_max_forward(x), [x], [0], [dx], R)

    x32, R32 = x.astype(np.float32), R.astype(np.float32)
    y, cache = global_pool.global_max_forward(x32)
    dx = global_pool.global_max_backward(R32, cache)
    xt = T(x32)
    yt = F.adaptive_max_pool2d(xt, 1).flatten(1)
    (yt * T(R32, False)).sum().backward()
    assert_close(y, yt.detach(), what="y")
    assert_close(dx, xt.grad, what="dx")


def test_global_max_pooling_ties_go_to_the_first_position_as_torch():
    x = np.zeros((1, 1, 2, 3), np.float32)
    _, cache = global_pool.global_max_forward(x)
    dx = global_pool.global_max_backward(np.ones((1, 1), np.float32), cache)
    xt = T(x)
    F.adaptive_max_pool2d(xt, 1).sum().backward()
    assert_close(dx, xt.grad, what="dx")
    assert dx.sum() == 1


# ------------------------------------------------------------------ front end

def lower(text):
    return load_text(text, "t.net")


def acts(graph):
    return [layer.attr("activation") for layer in graph.layers if layer.attr("activation") is not None]


def test_activation_spellings_reach_the_ir_with_every_parameter():
    g = lower("x = Input(4)\n"
              "a = Dense(3, activation=leaky_relu)(x)\n"
              "b = Dense(3, activation=leaky_relu(0.2))(a)\n"
              "c = gelu(b)\n"
              "d = gelu(approximate=True)(c)\n"
              "e = swish(d)\n"
              "f = Sequential([elu, softplus, hard_sigmoid, leaky_relu(alpha=0.3)])(e)\n"
              "output f\n")
    assert acts(g) == ["leaky_relu(alpha=0.01)", "leaky_relu(alpha=0.2)", "gelu(approximate=False)",
                       "gelu(approximate=True)", "silu", "elu", "softplus", "hard_sigmoid", "leaky_relu(alpha=0.3)"]


@pytest.mark.parametrize("text, code, words", [
    ("leaky_relu(2)", "E103", "alpha must be a number between 0 and 1, got the number 2"),
    ("leaky_relu(slope=0.1)", "E102", "leaky_relu has no argument 'slope'"),
    ("gelu(approximate=1)", "E103", "approximate must be True or False"),
    ("relu(0.5)", "E109", "relu takes no arguments"),
    ("leaky_relu(0.1, 0.2)", "E109", "at most 1 argument"),
])
def test_activation_arguments_are_checked(text, code, words):
    with pytest.raises(NetdslError) as e:
        lower(f"x = Input(4)\ny = Dense(3, activation={text})(x)\noutput y\n")
    d = e.value.diagnostics[0]
    assert d.code == code and words in d.message, d.message


def test_global_pooling_needs_an_image():
    with pytest.raises(NetdslError) as e:
        lower("x = Input(4)\ny = GlobalAveragePooling()(x)\noutput y\n")
    assert e.value.diagnostics[0].code == "E201"
    g = lower("x = Input((3, 5, 7))\ny = GlobalMaxPooling()(x)\noutput y\n")
    assert g.nodes[-1].type.shape == (3,)


def test_seed_004_convolution_keywords():
    """rf_shape= is seed 004's name for filter_shape (Convolution, MaxPooling, AveragePooling); sharing=True and
    reduction_rank=1 are CNTK's defaults and accepted; the values netdsl cannot honour are refused at the argument."""
    g = lower("img = Input((2, 6, 6))\n"
              "c = Convolution(rf_shape=(3, 3), num_filters=4, sharing=True, reduction_rank=1)(img)\n"
              "p = AveragePooling(rf_shape=(2, 2), strides=2)(MaxPooling(rf_shape=3, pad=True)(c))\n"
              "output p\n")
    conv = g.layers[0]
    assert conv.attr("kernel") == (3, 3) and conv.attr("filters") == 4
    assert sorted(layer.attr("window") for layer in g.layers[1:]) == [(2, 2), (3, 3)]
    assert g.nodes[-1].type.shape == (4, 2, 2)


@pytest.mark.parametrize("args, code, words", [
    ("(3, 3), 4, sharing=False", "E103", "sharing=False (a separate filter per position) is not supported"),
    ("(3, 3), 4, sharing=1", "E103", "sharing must be True or False"),
    ("(3, 3), 4, reduction_rank=2", "E103", "reduction_rank must be 1"),
    ("(3, 3), 4, reduction_rank=0", "E201", "needs a rank-2 (height, width) value"),
    ("(3, 3), 4, rf_shape=(3, 3)", "E105", "'filter_shape' given twice"),
    ("(3,), 4", "E201", "Convolution with a 1-D window (k,) needs a sequence of vectors, got (2, 6, 6)"),
    ("(3, 3, 3), 4", "E103", "3-D convolution (filter_shape (3, 3, 3)) is not supported yet"),
])
def test_convolution_arguments_netdsl_cannot_honour_are_refused(args, code, words):
    text = f"img = Input((2, 6, 6))\nc = Convolution({args})(img)\noutput c\n"
    with pytest.raises(NetdslError) as e:
        lower(text)
    d = e.value.diagnostics[0]
    assert d.code == code and words in d.message, d.message
    assert d.span.line == 2


def test_1d_convolution_and_pooling_over_a_sequence_keep_the_features_as_channels():
    g = lower("x = SequenceInput(5, length=9)\n"
              "c = Convolution1D(3, 4, strides=2)(x)\n"
              "m = MaxPooling((2,), pad=True)(c)\n"
              "output m\n")
    conv = g.layers[0]
    assert conv.attr("kernel") == (3,) and conv.attr("strides") == (2,) and conv.attr("pads") == ((0, 0),)
    assert conv.param("W").shape == (4, 5, 3)
    c, m = g.nodes
    assert (c.type.seq, c.type.length, c.type.shape) == (True, 4, (4,))
    assert g.layers[1].attr("pads") == ((0, 1),)  # an even window's odd pad goes at the end (stride 1)
    assert (m.type.length, m.type.shape) == (4, (4,))


@pytest.mark.parametrize("layer, code, words", [
    ("Convolution1D((3, 3), 4)", "E103", "Convolution1D filter_shape must be a positive integer or (k,)"),
    ("Convolution((3,), 4, strides=(2, 2))", "E103", "strides of a 1-D window must be a positive integer or (s,)"),
    ("Convolution((3,), 4, pad=((1, 1), (1, 1)))", "E103", "pad of a 1-D window must be True, False"),
    ("MaxPooling((3,), strides=(1, 2))", "E103", "strides of a 1-D window"),
    ("Convolution((3,), 4, pad=True, strides=2)", "E202", "needs a fixed sequence length"),
    ("AveragePooling((3,), pad=((3, 0),))", "E202", "must be smaller than the window"),
])
def test_1d_window_arguments_that_cannot_be_honoured_are_refused(layer, code, words):
    text = f"x = SequenceInput(5)\nc = {layer}(x)\noutput c\n"
    with pytest.raises(NetdslError) as e:
        lower(text)
    d = e.value.diagnostics[0]
    assert d.code == code and words in d.message, d.message
    assert d.span.line == 2
