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
