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
