"""Fuzzing the front end: every input ends in success or a clean NetdslError.

The generators and the oracle live in bench/fuzz.py, which runs the same
generators as a long campaign (see bench/RESULTS.md, "Fuzzing"). Here they
run under hypothesis, deterministically and with a bounded number of
examples, so CI stays fast (the whole file well under a minute).

REGRESSIONS holds every input that once broke the contract, found by the
campaign or by hand, with the diagnostic code it must now produce.
"""
from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("netdsl_bench_fuzz", ROOT / "bench" / "fuzz.py")
fuzz = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fuzz
_spec.loader.exec_module(fuzz)

from netdsl.errors import NetdslError  # noqa: E402
from netdsl.frontend import load_text  # noqa: E402

H = "x = Input(4)\n"
T = "z = Dense(2)(x)\noutput z\n"

# (id, source, expected first diagnostic code or None for success)
REGRESSIONS = [
    # literals: out-of-range numbers and bad strings are reported at their token
    ("int-literal-5000-digits", H + "a = " + "1" * 5000 + "\n" + T, "E501"),
    ("int-literal-over-2**62", H + "a = 4611686018427387905\n" + T, "E501"),
    ("int-literal-2**62-ok", H + "a = 4611686018427387904\n" + T, None),
    ("float-literal-inf", H + "z = Dense(2, init_bias=1e999)(x)\noutput z\n", "E501"),
    ("float-literal-inf-in-init", H + "z = Dense(2, init=uniform(1e999))(x)\noutput z\n", "E501"),
    ("huge-int-optimizer-arg", H + T + "train { optimizer = SGD(lr=" + "9" * 400 + ") }\n", "E501"),
    ("string-unknown-N-escape", H + T + 'train { dataset = "\\N{nope}" }\n', "E001"),
    ("string-invalid-escape", H + T + 'train { dataset = "\\q" }\n', "E001"),
    ("string-truncated-x-escape", H + T + 'train { dataset = "\\x0" }\n', "E001"),
    ("string-nul-char", H + T + 'train { dataset = "\x00" }\n', "E001"),
    ("import-bad-escape", 'import "\\N{x}.net"\n' + H + T, "E001"),
    ("long-number-token-in-message", H + "z = Dense(2)(x)\noutput z " + "1" * 5000 + "\n", "E001"),
    # a bracket in a comment or a string nests nothing
    ("brackets-in-comment", H + "# " + "(" * 500 + "\n" + T, None),
    ("brackets-in-string", H + T + 'train { dataset = "' + "[" * 500 + '" }\n', None),
]


def codes_of(text: str, file: str = "fuzz.net"):
    try:
        load_text(text, file)
        return None
    except NetdslError as e:
        return e.diagnostics[0].code


@pytest.mark.parametrize("text,code", [(t, c) for _, t, c in REGRESSIONS], ids=[i for i, _, _ in REGRESSIONS])
def test_regression(text, code):
    assert fuzz.check(text, timeout=20) is None
    assert codes_of(text) == code


def test_long_token_is_clipped_in_messages():
    with pytest.raises(NetdslError) as e:
        load_text(H + "z = Dense(2)(x)\noutput z " + "1" * 5000 + "\n", "f.net")
    msg = e.value.diagnostics[0].message
    assert len(msg) < 300 and "(5000 characters)" in msg


def test_literal_errors_point_at_the_token():
    with pytest.raises(NetdslError) as e:
        load_text(H + "a = 1\nb = (2, 1e999)\n" + T, "f.net")
    d = e.value.diagnostics[0]
    assert (d.code, d.span.line, d.span.col) == ("E501", 3, 9)
    assert "1e999" in d.message
