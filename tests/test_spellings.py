"""Seed code's own spellings (issue 12): `model = ...`, `F >> G >> H`, and the Python form of a with block."""
from __future__ import annotations

import pytest

from netdsl.errors import NetdslError
from netdsl.frontend import load_text

BRACES = """model M
x = Input(8)
with default_options(activation=relu) {
    a = Dense(4)
    with default_options(bias=False) {
        b = Dense(5, activation=tanh)
    }
    c = Sequential([
        Dense(6),
        Dense(3, activation=None)])
}
z = c(b(a(x)))
output z
"""

PYTHON = """model M
x = Input(8)
with default_options(activation=relu):
    a = Dense(4)
    with default_options(bias=False):
        b = Dense(5, activation=tanh)
    c = Sequential([
        Dense(6),
  Dense(3, activation=None)])   # inside brackets, indentation is free
z = c(b(a(x)))
output z
"""


def structure(g):
    return [(l.name, l.kind, l.attrs, tuple(p.shape for p in l.params)) for l in g.layers], \
        [(n.name, n.layer, n.inputs, n.type) for n in g.nodes]


def test_the_python_form_of_with_means_the_braces_form():
    assert structure(load_text(PYTHON, "p.net")) == structure(load_text(BRACES, "b.net"))


def test_model_is_a_name_beside_the_model_statement():
    g = load_text("""model Composed
x = Input(12)
F = Dense(8, activation=relu)
G = Dense(6)
H = Dense(4)
model = F >> G >> H
z = model(x)
output z
""", "m.net")
    assert g.name == "Composed" and [l.kind for l in g.layers] == ["Dense"] * 3
    same = load_text("""model Composed
x = Input(12)
F = Dense(8, activation=relu)
G = Dense(6)
H = Dense(4)
z = Sequential([F, G, H])(x)
output z
""", "s.net")
    assert structure(g) == structure(same)


@pytest.mark.parametrize("text, line, col", [
    ("model M\nx = Input(8)\nwith default_options(activation=relu):\ny = Dense(4)(x)\noutput y\n", 4, 1),
    ("model M\nx = Input(8)\nwith default_options(activation=relu): y = Dense(4)(x)\noutput y\n", 3, 40),
    ("model M\nx = Input(8)\nwith default_options(activation=relu):\n", 3, 39),
    ("model M\nx = Input(8)\n  with default_options(activation=relu):\n  y = Dense(4)(x)\noutput y\n", 4, 3),
])
def test_a_with_block_without_an_indented_body_is_located(text, line, col):
    with pytest.raises(NetdslError) as e:
        load_text(text, "w.net")
    d = e.value.diagnostics[0]
    assert (d.code, d.span.line, d.span.col) == ("E001", line, col)
    assert "indented block" in d.message


def test_a_lambda_colon_inside_the_header_is_not_the_block_colon():
    g = load_text("""model M
x = Input(8)
with default_options(activation=relu):
    s = LayerStack(2, lambda: Dense(4))
    t = LayerStack(2, lambda i: Dense(4 + i))
z = t(s(x))
output z
""", "l.net")
    assert [l.attrs for l in g.layers][0] == [l.attrs for l in g.layers][1]
    assert len(g.layers) == 4
