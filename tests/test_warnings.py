"""Warnings (netdsl/lint.py): located W-code diagnostics for likely mistakes in a valid model.

`netdsl check` prints them and still exits 0; --Werror makes them errors (exit 1); `compile` and
`run` print them to stderr without changing stdout. Each rule has a model that triggers it, at a
pinned place, and a near miss that does not.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from netdsl import ir
from netdsl.emit.base import emit
from netdsl.errors import CODES, NetdslError
from netdsl.frontend import load, load_with_warnings
from netdsl.lint import RULES, lint

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted((ROOT / "models").glob("*.net")) + sorted((ROOT / "tests" / "traps").glob("*.net"))

CNN = """\
x = Input((1, 28, 28))
net = Sequential([
    Convolution((3, 3), 32, pad=True, activation=relu),
    MaxPooling((2, 2){strides}),
    Convolution((3, 3), 32, pad=True, activation=relu),
    MaxPooling((2, 2){strides}),
    Dense(10),
])
z = net(x)
output z
"""

MLP = """\
x = Input(784)
h = Dense(64, activation=relu)(x)
z = Dense(10, activation={act})(h)
output z
train {{ dataset = "mnist"
    loss = {loss} }}
"""


def netdsl(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "netdsl", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def warnings_of(tmp_path: Path, text: str, name: str = "m.net") -> list:
    path = tmp_path / name
    path.write_text(text)
    _graph, diags, _sources = load_with_warnings(str(path))
    assert all(d.severity == "warning" and d.code in CODES for d in diags)
    return diags


def codes(diags) -> list:
    return [d.code for d in diags]


# ------------------------------------------------------------ the command line

def test_check_prints_located_warnings_and_exits_0(tmp_path):
    (tmp_path / "m.net").write_text(MLP.format(act="softmax", loss="cross_entropy_with_softmax"))
    proc = netdsl("check", "m.net", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr == (
        "m.net:3:5: warning: output 'z' ends in softmax (layer 'dense_2', Dense), but the loss "
        "cross_entropy_with_softmax applies its own softmax: it is computed on softmax values instead of logits [W001]\n"
        "    z = Dense(10, activation=softmax)(h)\n"
        "        ^~~~~~~~~~~~~~~~~~~~~~~~~~~~~\n"
        "note: give the last layer activation=None (the output is then logits; apply softmax when you need "
        "probabilities), or use loss = squared_error\n"
        "ok: 1 of 1 file passed, 1 warning\n")


def test_werror_turns_warnings_into_errors(tmp_path):
    (tmp_path / "m.net").write_text(MLP.format(act="softmax", loss="cross_entropy_with_softmax"))
    (tmp_path / "clean.net").write_text(MLP.format(act="None", loss="cross_entropy_with_softmax"))
    proc = netdsl("check", "--Werror", "m.net", "clean.net", cwd=tmp_path)
    assert proc.returncode == 1
    first = proc.stderr.splitlines()[0]
    assert first.startswith("m.net:3:5: error: output 'z' ends in softmax") and first.endswith("[W001]")
    assert "warning:" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == "error: 1 of 2 files passed"
    assert netdsl("check", "--Werror", "clean.net", cwd=tmp_path).returncode == 0
    quiet = netdsl("check", "-q", "--Werror", "m.net", cwd=tmp_path)
    assert quiet.returncode == 1 and "passed" not in quiet.stderr


def test_clean_model_prints_no_warning(tmp_path):
    (tmp_path / "m.net").write_text(MLP.format(act="None", loss="cross_entropy_with_softmax"))
    proc = netdsl("check", "m.net", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == "ok: 1 of 1 file passed\n"


def test_errors_come_without_warnings(tmp_path):
    # the lint runs only on a model that passed every check; an error is reported alone
    (tmp_path / "m.net").write_text(MLP.format(act="softmax", loss="cross_entropy_with_softmax") + "y = Dense(3)(q)\n")
    proc = netdsl("check", "m.net", cwd=tmp_path)
    assert proc.returncode == 1
    assert "[E101]" in proc.stderr and "warning" not in proc.stderr and "Traceback" not in proc.stderr


def test_compile_prints_warnings_to_stderr_and_the_same_code_to_stdout(tmp_path):
    path = tmp_path / "m.net"
    path.write_text(CNN.format(strides=""))
    proc = netdsl("compile", "m.net", "--target", "pytorch", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == emit(_load_in(tmp_path, "m.net"), "pytorch")  # the code, and nothing else
    assert proc.stderr.startswith("m.net:6:5: warning: ") and "[W002]" in proc.stderr


def _load_in(directory: Path, name: str) -> ir.Graph:
    old = os.getcwd()
    os.chdir(directory)
    try:
        return load(name)
    finally:
        os.chdir(old)


def test_run_prints_warnings_before_it_starts(tmp_path):
    # no dataset: `run` stops with E701 right after loading, so this needs no data and no training
    (tmp_path / "m.net").write_text(CNN.format(strides=""))
    proc = netdsl("run", "m.net", cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("m.net:6:5: warning: ") and lines[0].endswith("[W002]")
    assert "[E701]" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------ the rules

@pytest.mark.parametrize("act", ["softmax", "sigmoid"])
def test_w001_softmax_or_sigmoid_output_under_softmax_cross_entropy(tmp_path, act):
    (d,) = warnings_of(tmp_path, MLP.format(act=act, loss="cross_entropy_with_softmax"))
    assert d.code == "W001" and f"ends in {act}" in d.message
    assert (d.span.line, d.span.col, d.span.end_col) == (3, 5, 34 + len(act) - len("softmax"))


def test_w001_through_default_options_dropout_and_activation_layers(tmp_path):
    text = ("x = Input(784)\nwith default_options(activation=softmax) {\n    net = Sequential([Dense(10), Dropout(0.5)])\n}\n"
            "z = net(x)\noutput z\n")
    assert codes(warnings_of(tmp_path, text)) == ["W001", "W005"]
    text = "x = Input(784)\nz = Sequential([Dense(10), softmax])(x)\noutput z\n"
    (d,) = warnings_of(tmp_path, text)
    assert d.code == "W001" and "(layer 'activation_1', Activation)" in d.message
    assert "(the default: there is no train block)" in d.message


def test_w001_near_misses(tmp_path):
    assert warnings_of(tmp_path, MLP.format(act="softmax", loss="squared_error")) == []
    assert warnings_of(tmp_path, MLP.format(act="relu", loss="cross_entropy_with_softmax")) == []
    # seed 001's shape: logits trained, probabilities as a second output
    text = "x = Input(784)\nz = Dense(10)(x)\np = Activation(softmax)(z)\noutput z, p\n"
    assert codes(warnings_of(tmp_path, text)) == ["W004"]


def test_w002_seed_000_parameter_counts(tmp_path):
    (d,) = warnings_of(tmp_path, CNN.format(strides=""))
    assert d.code == "W002" and (d.span.line, d.span.col) == (6, 5)
    assert "Dense layer 'dense_1' after it has 216,330 parameters" in d.message
    assert "it would have 15,690" in d.message
    graph = load(str(tmp_path / "m.net"))
    assert sum(p.size for p in graph.layer("dense_1").params) == 216_330
    fixed = load_text_params(CNN.format(strides=", strides=2"))
    assert fixed == 15_690
    assert warnings_of(tmp_path, CNN.format(strides=", strides=2")) == []
    assert warnings_of(tmp_path, CNN.format(strides=", strides=1")) == []  # written out: meant


def load_text_params(text: str) -> int:
    from netdsl.frontend import load_text

    return sum(p.size for p in load_text(text).layer("dense_1").params)


def test_w002_through_flatten_and_not_before_a_convolution(tmp_path):
    text = ("x = Input((1, 8, 8))\nh = MaxPooling((2, 2))(x)\nc = Convolution((3, 3), 2)(h)\n"
            "p = MaxPooling((3, 3))(c)\nz = Dense(4)(Flatten()(p))\noutput z\n")
    (d,) = warnings_of(tmp_path, text)
    assert d.code == "W002" and (d.span.line, d.span.col) == (4, 5)
    # 8 -> pool 7 -> conv 5 -> pool 3: 2*3*3 = 18 inputs; at stride 2: 8 -> 4 -> 2, and a 3x3 pool does not fit
    assert "has 76 parameters" in d.message and "would have" not in d.message


def test_w003_cross_entropy_alias(tmp_path):
    diags = warnings_of(tmp_path, MLP.format(act="None", loss="cross_entropy"))
    (d,) = diags
    assert d.code == "W003" and (d.span.line, d.span.col, d.span.end_col) == (6, 12, 25)
    assert "alias for cross_entropy_with_softmax" in d.message
    assert load(str(tmp_path / "m.net")).training.loss == "cross_entropy_with_softmax"


def test_w004_several_outputs_names_the_trained_one(tmp_path):
    text = "x = Input(784)\nz = Dense(10)(x)\nh = Dense(3)(x)\noutput z, h\n"
    (d,) = warnings_of(tmp_path, text)
    assert d.code == "W004" and (d.span.line, d.span.col) == (4, 11)
    assert "trains the first, 'z', only: 'h' gets no loss of its own" in d.message


def test_w004_counts_values_not_names(tmp_path):
    text = "x = Input(784)\nz = Dense(10)(x)\nwith default_options(activation=relu) {\n    output z\n}\noutput x\n"
    (d,) = warnings_of(tmp_path, text)
    assert d.code == "W004" and (d.span.line, d.span.col) == (6, 8)
    assert "the model has 2 outputs" in d.message and "'x' gets no loss" in d.message


def test_w007_output_listed_twice(tmp_path):
    text = "x = Input(784)\nz = Dense(10)(x)\nb = z\noutput z, b\n"
    (d,) = warnings_of(tmp_path, text)  # one value: no W004
    assert d.code == "W007" and (d.span.line, d.span.col) == (4, 11) and "'z'" in d.message


def test_w005_dropout_last(tmp_path):
    text = "x = Input(784)\nz = Sequential([Dense(10), Dropout(0.5)])(x)\noutput z\n"
    (d,) = warnings_of(tmp_path, text)
    assert d.code == "W005" and (d.span.line, d.span.col) == (2, 28)


def test_w006_unused_input(tmp_path):
    text = "x = Input(784)\nq = Input(5)\nz = Dense(10)(x)\noutput z\n"
    (d,) = warnings_of(tmp_path, text)
    assert d.code == "W006" and (d.span.line, d.span.col) == (2, 1) and "'q'" in d.message


def test_warning_inside_an_imported_block_shows_its_line(tmp_path):
    (tmp_path / "blocks.net").write_text("def head(n) = Sequential([\n    Dense(n, activation=softmax),\n])\n")
    (tmp_path / "m.net").write_text('import "blocks.net"\nx = Input(784)\nz = head(10)(x)\noutput z\n')
    proc = netdsl("check", "-q", "m.net", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("blocks.net:2:5: warning: ") and lines[0].endswith("[W001]")
    assert lines[1:3] == ["        Dense(n, activation=softmax),", "        ^" + "~" * (len("Dense(n, activation=softmax)") - 1)]


# ------------------------------------------------------------ pinned: one file per code in tests/warnings/

PINNED = sorted((ROOT / "tests" / "warnings").glob("*.net"))


def test_every_warning_code_has_a_pinned_case():
    pinned = {p.name[:4].upper() for p in PINNED}
    assert pinned == {c for c in CODES if c.startswith("W")}


@pytest.mark.parametrize("path", PINNED, ids=[p.stem for p in PINNED])
def test_warning_is_pinned(path):
    """Update after an intended change with: NETDSL_UPDATE_GOLDEN=1 python -m pytest tests/test_warnings.py"""
    proc = netdsl("check", "-q", str(path.relative_to(ROOT)), cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout == "" and "Traceback" not in proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first.startswith(f"tests/warnings/{path.name}:") and ": warning: " in first
    assert f"[{path.name[:4].upper()}]" in proc.stderr
    expected = path.with_suffix(".expected")
    if os.environ.get("NETDSL_UPDATE_GOLDEN") == "1" or not expected.exists():
        expected.write_text(proc.stderr)
        if os.environ.get("NETDSL_UPDATE_GOLDEN") != "1":
            pytest.fail(f"wrote missing pin {expected.name}; review it and commit")
    assert proc.stderr == expected.read_text()
    assert netdsl("check", "-q", "--Werror", str(path.relative_to(ROOT)), cwd=ROOT).returncode == 1


# ------------------------------------------------------------ the registry and the committed models

def test_every_rule_has_one_registered_code():
    names = [name for name, _ in RULES]
    assert len(set(names)) == len(names)
    w_codes = sorted(c for c in CODES if c.startswith("W"))
    assert w_codes == [f"W{i:03d}" for i in range(1, len(RULES) + 1)]


# traps that exist to run a warned construct on every target (tests/test_traps.py): exactly these codes
TRAP_WARNINGS = {"softmax_head": ["W001"], "sigmoid_head": ["W001"], "two_outputs": ["W004"]}


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_committed_models_are_clean_and_load_is_unchanged(path):
    rel = str(path.relative_to(ROOT))
    old = os.getcwd()
    os.chdir(ROOT)
    try:
        graph, diags, _ = load_with_warnings(rel)
        expected = TRAP_WARNINGS.get(path.stem, []) if path.parent.name == "traps" else []
        assert [d.code for d in diags] == expected, [d.format() for d in diags]
        assert ir.to_json(graph) == ir.to_json(load(rel))
    finally:
        os.chdir(old)


def test_lint_without_syntax_still_runs_the_ir_rules(tmp_path):
    path = tmp_path / "m.net"
    path.write_text(MLP.format(act="softmax", loss="cross_entropy"))
    assert codes(lint(load(str(path)))) == ["W001"]  # the alias is only in the syntax tree
    with pytest.raises(NetdslError):
        load_with_warnings(str(tmp_path / "missing.net"))
