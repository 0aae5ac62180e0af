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


# evaluation: recursion through lambdas, defaults and deep calls ends in a diagnostic, not a RecursionError
EVAL_REGRESSIONS = [
    ("lambda-self-recursion", H + "f = lambda y: f(y)\nz = f(x)\noutput z\n", "E110"),
    ("lambda-omega", H + "w = lambda g: g(g)\nz = w(w)\n", "E110"),
    ("y-combinator", H + "y = lambda h: (lambda q: h(lambda v: q(q)(v)))(lambda q: h(lambda v: q(q)(v)))\n"
     "fact = y(lambda self2: lambda n: self2(n))\nz = fact(3)\n", "E110"),
    ("lambda-recursion-through-layerstack", H + "f = lambda: LayerStack(2, lambda i: f())\nz = f()(x)\n", "E110"),
    ("lambda-recursion-through-for", H + "f = lambda i: For(range(2), f)\nz = f(0)(x)\n", "E110"),
    ("block-default-calls-itself", H + "def a(v=a()) = v\nz = a()\n", "E110"),
    ("block-defaults-mutual", H + "def a(v=b()) = v\ndef b(v=a()) = v\nz = a()\n", "E110"),
    ("blocks-chain-each-deep", H + "".join(f"def b{i}(v) = b{i + 1}(v)" + " + 0" * 390 + "\n" for i in range(30))
     + "def b30(v) = v\nq = b0(1)\n" + T, "E005"),
    ("blocks-exponential", H + "def b0(v) = v\n" + "".join(f"def b{i + 1}(v) = b{i}(v) + b{i}(v)\n" for i in range(40))
     + "a = b40(1)\n", "E501"),
    ("errors-at-every-leaf", H + "def b0(v) = nope\n" + "".join(f"def b{i + 1}(v) = [b{i}(v), b{i}(v)]\n" for i in range(30))
     + "a = b30(1)\n", "E101"),
]


@pytest.fixture
def small_step_budget(monkeypatch):
    """The default budget (2M steps) takes seconds to exhaust; the mechanism is the same at 100k."""
    from netdsl.limits import LIMITS

    monkeypatch.setattr(LIMITS, "max_eval_steps", 100_000)


@pytest.mark.parametrize("text,code", [(t, c) for _, t, c in EVAL_REGRESSIONS], ids=[i for i, _, _ in EVAL_REGRESSIONS])
def test_eval_regression(text, code, small_step_budget):
    t0 = time.perf_counter()
    assert fuzz.check(text, timeout=30) is None
    assert codes_of(text) == code
    assert time.perf_counter() - t0 < 30


def test_too_many_errors_stop_at_the_limit():
    from netdsl.limits import LIMITS

    text = dict((i, t) for i, t, _ in EVAL_REGRESSIONS)["errors-at-every-leaf"]
    with pytest.raises(NetdslError) as e:
        load_text(text, "f.net")
    assert len(e.value.diagnostics) == LIMITS.max_errors
    assert "stopping after" in e.value.diagnostics[-1].note


# composition: deep or self-doubling composites end in a diagnostic, fast
COMPOSE_REGRESSIONS = [
    ("group-chain-3000-statements", H + "s0 = Dense(4)\n" + "".join(f"s{i + 1} = s{i} >> relu\n" for i in range(3000))
     + "z = s3000(x)\noutput z\n", "E005"),
    ("group-doubling", H + "s0 = Dropout(0.1)\n" + "".join(f"s{i + 1} = s{i} >> s{i}\n" for i in range(40))
     + "z = s40(x)\noutput z\n", "E501"),
    ("list-nested-by-statements", H + "l0 = relu\n" + "".join(f"l{i + 1} = [l{i}]\n" for i in range(3000))
     + "s = Sequential(l3000)\nz = s(x)\noutput z\n", "E005"),
    ("group-chain-99-ok", H + "s0 = Dense(4)\n" + "".join(f"s{i + 1} = s{i} >> relu\n" for i in range(98))
     + "z = s98(x)\noutput z\n", None),
]


@pytest.mark.parametrize("text,code", [(t, c) for _, t, c in COMPOSE_REGRESSIONS], ids=[i for i, _, _ in COMPOSE_REGRESSIONS])
def test_compose_regression(text, code, monkeypatch):
    from netdsl.limits import LIMITS

    monkeypatch.setattr(LIMITS, "max_nodes", 20_000)  # the default (300k) takes seconds to reach
    t0 = time.perf_counter()
    assert fuzz.check(text, timeout=30) is None
    assert codes_of(text) == code
    assert time.perf_counter() - t0 < 20


# the training block: any expression can stand where a name is expected
TRAIN = H + T + "train {\n    %s\n}\n"
TRAIN_REGRESSIONS = [
    ("loss-list", TRAIN % "loss = [1]", "E402"),
    ("loss-deep-tuple", H + "t0 = 1\n" + "".join(f"t{i + 1} = (t{i},)\n" for i in range(3000)) + T
     + "train { loss = t3000 }\n", "E402"),
    ("loss-poison", TRAIN % "loss = nope(1)", "E402"),  # a call there names a loss: unknown loss
    ("loss-string", TRAIN % 'loss = "mse"', None),
    ("optimizer-int", TRAIN % "optimizer = 5", "E403"),
    ("optimizer-float", TRAIN % "optimizer = 1.5", "E403"),
    ("optimizer-list", TRAIN % "optimizer = [1]", "E403"),
    ("optimizer-poison", TRAIN % "optimizer = Adam(lr=1)(x)", "E101"),
    ("optimizer-arg-poison", TRAIN % "optimizer = Adam(lr=nope)", "E101"),
    ("optimizer-string", TRAIN % 'optimizer = "Adam"', None),
    ("metrics-deep-list", H + T + "t0 = 1\n" + "".join(f"t{i + 1} = (t{i},)\n" for i in range(3000))
     + "train { metrics = [t3000[0]] }\n", "E403"),
    ("metrics-poison", TRAIN % "metrics = [accuracy, nope(2)]", "E403"),  # a call there names a metric
]


@pytest.mark.parametrize("text,code", [(t, c) for _, t, c in TRAIN_REGRESSIONS], ids=[i for i, _, _ in TRAIN_REGRESSIONS])
def test_train_regression(text, code):
    assert fuzz.check(text, timeout=30) is None
    assert codes_of(text) == code


def test_messages_about_values_are_short_and_escaped():
    with pytest.raises(NetdslError) as e:
        load_text(TRAIN % ('loss = "mse\\x1b[31m' + "x" * 5000 + '"'), "f.net")
    d = e.value.diagnostics[0]
    assert len(d.message) < 200 and "\x1b" not in d.message and "\\x1b" in d.message
    with pytest.raises(NetdslError) as e:
        load_text(H + "z = Dense(\"" + "y" * 5000 + "\")(x)\noutput z\n", "f.net")
    assert len(e.value.diagnostics[0].message) < 200


# diagnostics echo the line the lexer counted, and never raw control characters
@pytest.mark.parametrize("text,line,shown", [
    ("x = Input(4)\x0cz = Dense(2)(x)\noutput zz\n", 2, "output zz"),
    ("x = Input(4) # a\u2028comment\nz = Dense(2)(x)\noutput zz\n", 3, "output zz"),
    ("x = Input(4)\r\nz = Dense(2)(x)\r\noutput zz\r\n", 3, "output zz"),
    ("x = Input(4) # \x1b]0;title\x07 \u202e\nz = Dense(2)(x)\routput zz\n", 2, "z = Dense(2)(x)?output zz"),
], ids=["formfeed", "line-separator", "crlf", "escape-sequences"])
def test_source_line_is_the_lexers_line(text, line, shown):
    with pytest.raises(NetdslError) as e:
        load_text(text, "f.net")
    d = e.value.diagnostics[0]
    assert d.span.line == line
    echoed = e.value.format().split("\n")[1]
    assert echoed == "    " + shown
    caret = e.value.format().split("\n")[2]
    assert echoed[caret.index("^")] == "z"  # the caret is under the undefined name
    assert all(c.isprintable() for c in e.value.format().replace("\n", ""))


# ------------------------------------------------------------- hypothesis
# The generators of bench/fuzz.py driven by hypothesis-controlled randoms: deterministic
# (derandomize) and bounded (about 400 examples in all), so CI stays fast and repeatable.
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(autouse=True)
def _fast_budgets(monkeypatch):
    """Exhausting the default step budget (1M) takes seconds per input; the mechanism is the same
    at 100k, and bench/fuzz.py runs the defaults."""
    from netdsl.limits import LIMITS

    monkeypatch.setattr(LIMITS, "max_eval_steps", min(LIMITS.max_eval_steps, 100_000))
    monkeypatch.setattr(LIMITS, "max_nodes", min(LIMITS.max_nodes, 50_000))


def assert_contract(text: str):
    problem = fuzz.check(text, timeout=30)
    assert problem is None, f"{problem}\n--- input (first 2000 characters) ---\n{text[:2000]!r}"


def _hypothesis_test(gen):
    @FUZZ
    @given(st.randoms(use_true_random=False))
    def test(rng):
        assert_contract(gen(rng))
    test.__name__ = f"test_{gen.__name__}"
    return test


# one test per generator: token insertions, deletions, swaps, duplications, number replacements
# (10**400, 1e999, ...), truncations at every token class, random bytes and unicode, crossovers,
# deep nesting, recursion, random programs over the real builtins, random terminal streams
for _gen in fuzz.GENERATORS:
    globals()[f"test_{_gen.__name__}"] = _hypothesis_test(_gen)
del _gen


@FUZZ
@given(st.integers(0, len(fuzz.SEEDS) - 1), st.data())
def test_truncation_at_any_character(seed, data):
    text = fuzz.SEEDS[seed]
    assert_contract(text[: data.draw(st.integers(0, len(text)), label="cut")])


@FUZZ
@given(st.integers(0, len(fuzz.SEEDS) - 1), st.data(), st.text(min_size=1, max_size=8))
def test_any_unicode_inserted_anywhere(seed, data, junk):
    text = fuzz.SEEDS[seed]
    pos = data.draw(st.integers(0, len(text)), label="pos")
    assert_contract(text[:pos] + junk + text[pos:])


@pytest.mark.parametrize("kind", range(16))
@pytest.mark.parametrize("depth", [99, 401, 5000])
def test_deep_structures(kind, depth):
    import random

    rng = random.Random(kind)
    assert_contract(H + "a = " + _deep(rng, kind, depth) + "\n" + T)


def _deep(rng, kind, depth):
    # deep_expression picks its kind from rng.randrange(16) first: steer it
    class Steered:
        def randrange(self, n):
            return kind

        def __getattr__(self, name):
            return getattr(rng, name)

    return fuzz.deep_expression(Steered(), depth)


@pytest.mark.parametrize("text", fuzz.RECURSION, ids=range(len(fuzz.RECURSION)))
def test_recursion_templates(text):
    assert_contract(H + text)


@pytest.mark.parametrize("number", [n for n in fuzz.WEIRD_NUMBERS] + ["10**400", "1e999 - 1e999", "2**64"])
@pytest.mark.parametrize("slot", ["Dense({})", "Input({})", "LayerStack({}, lambda i: Dense(2))", "range({})",
                                  "Dropout({})", "[1, 2][{}]", "Convolution(3, {})", "SGD(lr={})"])
def test_huge_and_odd_numbers_in_every_slot(number, slot):
    assert_contract(H + "a = " + slot.format(number) + "\n" + T)


def test_models_themselves_pass():
    for text in fuzz.SEEDS:
        assert fuzz.check(text) is None
        load_text(text, "seed.net")


# inputs outside the IR's types (docs/ir.md): the executor and the targets define nothing for them, so the
# front end must not accept them (BatchNormalization of a (2, 3, 4, 5) sample crashed the executor; Flatten of
# a sequence of images gave the executor and the front end different shapes)
TYPE_REGRESSIONS = [
    ("input-rank-2", "x = Input((3, 4))\nz = BatchNormalization()(x)\noutput z\n", "E201"),
    ("input-rank-4", "x = Input((2, 3, 4, 5))\nz = Dense(3)(x)\noutput z\n", "E103"),
    ("sequence-of-matrices", "x = SequenceInput((2, 3))\nz = Dense(2)(x)\noutput z\n", "E103"),
    ("sequence-of-images", "x = SequenceInput((1, 4, 4))\nz = Flatten()(x)\noutput z\n", "E103"),
    ("vector-ok", "x = Input((4,))\nz = Dense(2)(x)\noutput z\n", None),
    ("image-ok", "x = Input((1, 4, 4))\nz = Dense(2)(x)\noutput z\n", None),
    ("sequence-ok", "x = SequenceInput((4,))\nz = Dense(2)(x)\noutput z\n", None),
]


@pytest.mark.parametrize("text,code", [(t, c) for _, t, c in TYPE_REGRESSIONS], ids=[i for i, _, _ in TYPE_REGRESSIONS])
def test_type_regression(text, code):
    assert fuzz.check(text, timeout=30) is None
    assert codes_of(text) == code


def test_token_streams_cover_every_terminal_of_the_grammar():
    """gen_token_stream draws from PUNCT and KEYWORDS (plus names, numbers, strings): keep them in
    step with netdsl/grammars/netdsl.lark."""
    from netdsl.parser import _PARSER

    literals = {t.pattern.value for t in _PARSER.terminals if t.pattern.type == "str"}
    assert literals <= set(fuzz.PUNCT) | set(fuzz.KEYWORDS)
    patterns = {t.name for t in _PARSER.terminals if t.pattern.type == "re"}
    assert patterns <= {"NAME", "NUMBER", "STRING", "COMMENT", "WS"}


# found by the 100k campaign (bench/RESULTS.md, "Fuzzing")
CAMPAIGN_REGRESSIONS = [
    # seed final-1 #20415 (gen_mut_duplicate): a LayerStack lambda that returns an empty list -> IndexError
    ("layerstack-lambda-makes-no-layer", H + "s = LayerStack(2, lambda i: [])\nz = s(x)\noutput z\n", "E103"),
    ("for-lambda-makes-no-layer", H + "s = For(range(2), lambda i: [[], []])\nz = s(x)\noutput z\n", "E103"),
    # seed final-1 #15778 (gen_mut_insert): a 5000-character name echoed whole in the message
    ("5000-character-name", H + T + "train { " + "a" * 5000 + " = 1 }\n", "E001"),
    ("256-character-name-is-a-name", H + "b" * 256 + " = 1\n" + T, "E106"),
]


@pytest.mark.parametrize("text,code", [(t, c) for _, t, c in CAMPAIGN_REGRESSIONS],
                         ids=[i for i, _, _ in CAMPAIGN_REGRESSIONS])
def test_campaign_regression(text, code):
    assert fuzz.check(text, timeout=30) is None
    assert codes_of(text) == code


@pytest.mark.parametrize("path", ["\\0.net", "\\x00x.net", "\\ud800.net", "a" * 5000 + ".net"])
def test_import_of_an_impossible_path(path):
    text = f'import "{path}"\n' + H + T
    assert fuzz.check(text, timeout=30) is None
    assert codes_of(text) == "E111"
    with pytest.raises(NetdslError) as e:
        load_text(text, "f.net")
    assert len(e.value.diagnostics[0].message) < 300
