"""Resource limits: hostile or mistaken input fails fast, with a clear NetdslError, in little memory.

Every case must end in under 2 s with a peak of traced allocations under
200 MB (tracemalloc; the front end is pure Python, so that is all of it).
Limits live in netdsl/limits.py and can be raised with NETDSL_MAX_* variables.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from netdsl.errors import NetdslError
from netdsl.frontend import load, load_text
from netdsl.limits import LIMITS, Limits

ROOT = Path(__file__).resolve().parent.parent
H = "x = Input(4)\n"
T = "z = Dense(2)(x)\noutput z\n"
MB = 1024 * 1024


def run_bounded(fn, seconds: float = 2.0, peak_mb: float = 200.0):
    """Run fn() expecting a NetdslError; return it, after checking time and peak traced memory.

    The time is this process's CPU time: the bound is on the work done, which a loaded machine
    (other jobs on the same cores) does not change, while it can stretch the wall clock."""
    tracemalloc.start()
    t0 = time.process_time()
    try:
        with pytest.raises(NetdslError) as e:
            fn()
        elapsed = time.process_time() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < seconds, f"took {elapsed:.2f} s"
    assert peak < peak_mb * MB, f"peak {peak / MB:.0f} MB"
    err = e.value
    for d in err.diagnostics:
        assert d.code[0] == "E" and d.span.line >= 1 and d.span.col >= 1
    err.format()  # formats without raising
    return err


# ------------------------------------------------------------------ files
def test_ten_megabyte_file_is_refused_before_reading(tmp_path):
    big = tmp_path / "big.net"
    with open(big, "wb") as f:
        f.write(b"# padding\n" * (MB + 1))  # 10 MB
    err = run_bounded(lambda: load(str(big)))
    assert err.diagnostics[0].code == "E004"
    assert "NETDSL_MAX_SOURCE_BYTES" in err.diagnostics[0].note


def test_ten_megabyte_text_is_refused():
    text = H + T + "# " + "x" * (10 * MB) + "\n"
    err = run_bounded(lambda: load_text(text, "big.net"))
    assert err.diagnostics[0].code == "E004"


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_endless_file_is_read_with_a_bound(tmp_path):
    """st_size of /dev/zero (and of pipes) is 0: the bound must be on the bytes read."""
    link = tmp_path / "zero.net"
    link.symlink_to("/dev/zero")
    err = run_bounded(lambda: load(str(link)))
    assert err.diagnostics[0].code == "E004"


def test_import_of_a_fifo_or_device_is_refused(tmp_path):
    main = tmp_path / "main.net"
    fifo = tmp_path / "fifo.net"
    os.mkfifo(fifo)  # opening it would block until a writer comes
    main.write_text('import "fifo.net"\n' + H + T)
    err = run_bounded(lambda: load(str(main)))
    assert err.diagnostics[0].code == "E111" and "not a regular file" in err.diagnostics[0].message


def test_invalid_utf8_is_reported_at_the_character_column(tmp_path):
    bad = tmp_path / "bad.net"
    bad.write_bytes("x = Input(4) # éé ".encode() + b"\xff\n")
    err = run_bounded(lambda: load(str(bad)))
    d = err.diagnostics[0]
    assert (d.code, d.span.line, d.span.col) == ("E002", 1, 19)


def test_byte_order_mark_is_not_part_of_the_program(tmp_path):
    f = tmp_path / "bom.net"
    f.write_bytes(b"\xef\xbb\xbf" + (H + T).encode())
    assert load(str(f)).outputs == ("z",)


# ------------------------------------------------------------ nesting and chains
@pytest.mark.parametrize("deep", [
    "(" * 5000 + "1" + ")" * 5000,
    "[" * 5000 + "1" + "]" * 5000,
    "(" * 5000,
    "Dense(2)(" * 5000 + "x" + ")" * 5000,
], ids=["parens", "lists", "unclosed", "calls"])
def test_5000_deep_brackets(deep):
    err = run_bounded(lambda: load_text(H + "a = " + deep + "\n" + T, "deep.net"))
    assert err.diagnostics[0].code == "E005"
    assert err.diagnostics[0].span.line == 2  # at the bracket that crossed the limit
    assert deep[err.diagnostics[0].span.col - 5] in "([{"


@pytest.mark.parametrize("op", ["+", "-", "*", "/", "//", "%", "**", ">>"])
def test_100k_term_operator_chain(op):
    """Left-recursive chains stop when the tree gets too deep, right-recursive ones (**) when the
    parser stack does: both after a few hundred terms, not after parsing 100k."""
    term = "relu" if op == ">>" else "1"
    err = run_bounded(lambda: load_text(H + "a = " + f" {op} ".join([term] * 100_000) + "\n" + T, "chain.net"))
    assert err.diagnostics[0].code == "E005"
    assert "nested more than" in err.diagnostics[0].message


@pytest.mark.parametrize("deep", ["-" * 100_000 + "1", "lambda: " * 100_000 + "1", "x" + "[0]" * 100_000,
                                  "relu" + "(x)" * 100_000],
                         ids=["unary", "lambda", "index", "call"])
def test_100k_deep_prefix_and_postfix(deep):
    err = run_bounded(lambda: load_text(H + "a = " + deep + "\n" + T, "deep.net"))
    assert err.diagnostics[0].code == "E005"


def test_chain_just_under_the_depth_limit_is_fine():
    g = load_text(H + "a = " + " + ".join(["1"] * 390) + "\nz = Dense(a)(x)\noutput z\n", "ok.net")
    assert g.nodes[0].type.shape == (390,)


# ---------------------------------------------------------------- models
def test_layerstack_of_a_billion_is_refused_before_building():
    err = run_bounded(lambda: load_text(H + "s = LayerStack(10**9, lambda i: Dense(4))\nz = s(x)\noutput z\n", "big.net"))
    d = err.diagnostics[0]
    assert d.code == "E501" and "1000000000" in d.message and "NETDSL_MAX_LAYERS" in d.note


@pytest.fixture
def small_step_budget(monkeypatch):
    """The default budget (1M steps, a few seconds) takes minutes under tracemalloc; same mechanism."""
    monkeypatch.setattr(LIMITS, "max_eval_steps", 20_000)


def test_nested_layerstacks_that_build_nothing_new_are_bounded(small_step_budget):
    """Each level is under max_layers, and no layer is new, but the work is 10**10 steps."""
    text = H + "d = Dense(4)\ns = LayerStack(100000, lambda i: LayerStack(100000, lambda j: d))\n"
    err = run_bounded(lambda: load_text(text, "big.net"))
    assert err.diagnostics[0].code == "E501"


def test_a_trillion_parameters_are_counted_not_allocated():
    text = "x = Input(10**6)\nz = Dense(10**6)(x)\noutput z\n"
    err = run_bounded(lambda: load_text(text, "big.net"))
    d = err.diagnostics[0]
    assert d.code == "E502"
    assert "1,000,001,000,000 parameters" in d.message and "NETDSL_MAX_PARAMS" in d.note


def test_sizes_over_max_dim_say_so():
    err = run_bounded(lambda: load_text("x = Input(10**9)\nz = Dense(2)(x)\noutput z\n", "big.net"))
    assert err.diagnostics[0].code == "E103" and "NETDSL_MAX_DIM" in err.diagnostics[0].message


def test_recursion_between_blocks():
    err = run_bounded(lambda: load_text(H + "def a() = b()\ndef b() = a()\nz = a()\noutput z\n", "rec.net"))
    d = err.diagnostics[0]
    assert d.code == "E110" and "a -> b -> a" in d.message


def test_recursion_through_lambdas():
    err = run_bounded(lambda: load_text(H + "f = lambda y: f(y)\nz = f(x)\noutput z\n", "rec.net"))
    assert err.diagnostics[0].code == "E110"


def test_exponential_evaluation_is_bounded(small_step_budget):
    text = "def b0(v) = v\n" + "".join(f"def b{i + 1}(v) = b{i}(v) + b{i}(v)\n" for i in range(40)) + "a = b40(1)\n"
    err = run_bounded(lambda: load_text(text, "exp.net"))
    assert err.diagnostics[0].code == "E501" and "NETDSL_MAX_EVAL_STEPS" in err.diagnostics[0].note


# ------------------------------------------------------------ configuration
def _check(text: str, tmp_path, **env) -> subprocess.CompletedProcess:
    f = tmp_path / "m.net"
    f.write_text(text)
    full = {k: v for k, v in os.environ.items() if not k.startswith("NETDSL_MAX_")}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "netdsl", "check", str(f)], capture_output=True, text=True,
                          env=full, timeout=60, cwd=ROOT)


def test_raising_max_nesting_lets_a_deeper_file_through(tmp_path):
    text = H + "a = " + "(" * 150 + "1" + ")" * 150 + "\n" + T
    default = _check(text, tmp_path)
    assert default.returncode == 1 and "[E005]" in default.stderr and "Traceback" not in default.stderr
    raised = _check(text, tmp_path, NETDSL_MAX_NESTING="200")
    assert raised.returncode == 0, raised.stderr


def test_raising_max_layers_lets_a_bigger_model_through(tmp_path):
    text = H + "s = LayerStack(150, lambda i: Dense(4))\nz = s(x)\noutput z\n"
    low = _check(text, tmp_path, NETDSL_MAX_LAYERS="100")
    assert low.returncode == 1 and "[E501]" in low.stderr and "NETDSL_MAX_LAYERS" in low.stderr
    assert _check(text, tmp_path, NETDSL_MAX_LAYERS="200").returncode == 0
    assert _check(text, tmp_path).returncode == 0  # the default is far above 150


def test_raising_max_params_lets_a_bigger_model_through(tmp_path):
    text = "x = Input(1000)\nz = Dense(1000)(x)\noutput z\n"  # 1,001,000 parameters
    low = _check(text, tmp_path, NETDSL_MAX_PARAMS="1000000")
    assert low.returncode == 1 and "[E502]" in low.stderr
    assert _check(text, tmp_path, NETDSL_MAX_PARAMS="1001000").returncode == 0


def test_limits_from_env():
    lim = Limits.from_env({"NETDSL_MAX_LAYERS": "200_000", "NETDSL_MAX_NESTING": " 7 ", "NETDSL_MAX_PARAMS": "²",
                           "NETDSL_MAX_DIM": "-5", "NETDSL_MAX_NODES": "1e6"})
    assert lim.max_layers == 200_000 and lim.max_nesting == 7
    default = Limits()
    # not a plain decimal number: ignored, the default stays (and nothing raises at import time)
    assert (lim.max_params, lim.max_dim, lim.max_nodes) == (default.max_params, default.max_dim, default.max_nodes)


def test_absurd_limits_from_env_do_not_crash(tmp_path):
    proc = _check(H + T, tmp_path, NETDSL_MAX_EVAL_DEPTH="9" * 30, NETDSL_MAX_SOURCE_BYTES="9" * 30)
    assert proc.returncode == 0, proc.stderr


def test_every_limit_has_an_env_var_documented():
    doc = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    for name in Limits.__dataclass_fields__:
        assert f"NETDSL_{name.upper()}" in doc, name


def test_token_count_is_bounded_at_the_token(monkeypatch):
    monkeypatch.setattr(LIMITS, "max_tokens", 1000)
    text = H + "t = (" + "1, " * 2000 + ")\n" + T  # tokens: x = Input ( 4 ) t = ( then 1 , pairs
    err = run_bounded(lambda: load_text(text, "many.net"))
    d = err.diagnostics[0]
    assert d.code == "E004" and "1000 tokens" in d.message and "NETDSL_MAX_TOKENS" in d.note
    # token 1001 (index 1000) is the 496th "1, " pair's comma: 9 tokens before the tuple's first 1
    assert (d.span.line, d.span.col) == (2, 6 + 3 * 495 + 1)
    assert Limits.from_env({"NETDSL_MAX_TOKENS": "500_000"}).max_tokens == 500_000


# Shapes of a 1 MB file that cost the most per byte: one token per one or two characters, or
# unclosed strings that a regex pre-pass rescans. Each must end in seconds (issue 16/17: the
# input-size limit must also bound time), measured in CPU time because the machine may be shared.
ONE_MB = 1_000_000
HOSTILE_MB = {
    "assignments": "a = 1\n" * (ONE_MB // 6),
    "tuple": "t = (" + "1," * (ONE_MB // 2 - 10) + ")\n",
    "output-names": H + "output " + ",".join(["x"] * (ONE_MB // 2 - 20)) + "\n",
    "kwargs": H + "y = Dense(4, " + "bias=True, " * (ONE_MB // 11 - 10) + ")(x)\noutput y\n",
    "escaped-quotes": '"' + '\\"' * (ONE_MB // 2 - 1),
    "quote-per-line": ("\"'" * 500 + "\n") * (ONE_MB // 1001),
    "brackets": "a = " + "(" * 100 + "()" * (ONE_MB // 2 - 200) + ")" * 100,
    "comment-brackets": "#" + "(" * (ONE_MB - 1),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_MB))
def test_one_megabyte_of_anything_finishes_in_seconds(name):
    text = HOSTILE_MB[name][:ONE_MB]
    t0 = time.process_time()
    try:
        load_text(text, f"{name}.net")
    except NetdslError as e:
        assert all(d.code.startswith("E") for d in e.diagnostics)
    assert time.process_time() - t0 < 3.0
