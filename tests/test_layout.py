"""emit/layout.py's own tokenizer against Python's: the fast path must read every statement the
emitters lay out exactly as tokenize does (kinds, texts, spacing), or hand it to tokenize."""
from __future__ import annotations

import io
import tokenize
from pathlib import Path

import pytest

from netdsl.emit import layout as L
from netdsl.emit.base import emit
from netdsl.frontend import load

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted(ROOT.glob("models/*.net")) + sorted((ROOT / "tests" / "traps").glob("*.net"))[:12]


def by_tokenize(code: str) -> list:
    out, prev_end = [], None
    for t in tokenize.generate_tokens(io.StringIO(code).readline):
        if t.type not in L._SKIP:
            out.append((t.type, t.string, prev_end is not None and t.start != prev_end))
            prev_end = t.end
    return out


TRICKY = [
    "x = f('a\\'b', \"c\\\"d\", b'\\x00', 1e-05, 2.5E+10, 0x1F, .5, 3j)  # note",
    "y = {'k': [a[1:2], (b,)], **rest}",
    "z = lambda a, b=1: a ** b // 2 >= 1 != 0",
    "w = x.y(u'é', r'\\d+') -> None",
    "t = ( 1 ,2 )",
]


@pytest.mark.parametrize("code", TRICKY)
def test_tricky_statements(code):
    assert L._tokens(code) == by_tokenize(code)


def test_every_statement_the_emitters_lay_out(monkeypatch):
    seen = []
    real = L._tokens

    def recording(code):
        seen.append(code)
        return real(code)

    monkeypatch.setattr(L, "_tokens", recording)
    for path in MODELS:
        graph = load(str(path))
        for target in ("pytorch", "keras", "tf-estimator", "gluon", "cntk"):
            try:
                emit(graph, target)
            except Exception:  # a refused kind: what was laid out before it still counts
                pass
    assert len(seen) > 100
    for code in seen:
        assert real(code) == by_tokenize(code), code


# statements that differ only in digits (one layout per emit, layout._memoized), and ones it must not share
FAMILY = [f'dense_{i} = tf.compat.v1.layers.dense(dense_{i - 1}, {w}, activation=tf.nn.relu, name="dense_{i}")'
          for i in (1, 9, 10, 99, 100, 1234, 99999) for w in (8, 32, 1000)] + [
    "self.layer_12 = nn.HybridLambda(lambda F, x: (x - 33.328500000000005) / 78.5655, prefix='image_2_')",
    "x = f(0x1F, 1e-05, 2.5E+10, .5, 3j, 10_000, 'a1\\'b2', [3, (4,)], {5: 6})  # 7 moves up: not memoized",
    "y = g(a1, b22, c333, d4444, e55555, f666666, g7777777, h88888888, i999999999, j0, k12, l123, m1234)",
]


@pytest.mark.parametrize("indent", [4, 8, 40])
def test_memoized_layouts_are_the_layouts(indent):
    fresh = {(code, w): L.layout(code, indent, w) for code in FAMILY + TRICKY for w in (40, 88)}
    with L.memo_scope():
        for _ in range(2):  # the second round takes every layout from the memo
            for (code, w), expected in fresh.items():
                assert L.layout(code, indent, w) == expected, code
    assert L._memo is None


@pytest.mark.parametrize("code", FAMILY[:9] + [TRICKY[1], TRICKY[3], TRICKY[4], '"d_1_"', "nn.Dense(32, prefix='d_1_')"])
def test_an_element_is_laid_out_as_inside_its_bracket(code):
    for indent in (8, 16, 60):
        with L.memo_scope():
            alone = L.element(code, indent)
        whole = L.layout("[  # c\n" + code + ",\n]", indent - 4).split("\n")
        assert " " * indent + alone == "\n".join(whole[1:-1]), code
    assert L.element("a, b", 8) is None and L.element("f(x)  # c", 8) is None and L.element(TRICKY[2], 8) is None


@pytest.mark.parametrize("name", ["cntk_for_convnet", "resnet_mnist", "dssm"])
def test_gluon_children_are_laid_out_as_one_statement(name):
    """emit/gluon.child_statement composes a group from its members' layouts: as layout() of it all."""
    from netdsl.emit import gluon

    graph = load(str(ROOT / "models" / f"{name}.net"))
    lg = gluon.TARGET.context_of(graph)
    views = {layer.name: gluon.TARGET.layers[layer.kind](lg, layer) for layer in graph.layers}
    ctx = gluon.TARGET.context(lg, views)
    assert any(node["type"] == "group" for node in ctx["tree"])
    for node, child in zip(ctx["tree"], ctx["children"]):
        whole = f"self.{node['attr']} = {gluon._block_source(node, ' ' * 8, ctx['length_groups'])}"
        assert child == L.layout(whole, 8)
        if node["type"] == "group":  # composed, not the fallback
            assert gluon._group_lines(node, ctx["length_groups"], 8, "") is not None
