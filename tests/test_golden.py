"""Golden files: the generated PyTorch and Keras code of every model, byte for byte.

A change to an emitter or a template shows up here as a diff to review. When
the change is intended, regenerate and commit the goldens:

    NETDSL_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

from netdsl.emit.base import emit
from netdsl.frontend import load

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
MODELS = sorted(p.stem for p in (ROOT / "models").glob("*.net"))
TARGETS = ("pytorch", "keras")
UPDATE = os.environ.get("NETDSL_UPDATE_GOLDEN") == "1"


def generate(model: str, target: str) -> str:
    """Compiled the way `netdsl compile models/<model>.net` does from the repository root (the header says so)."""
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        return emit(load(f"models/{model}.net"), target)
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("model", MODELS)
def test_golden(model, target):
    path = GOLDEN / model / f"{target}.py"
    code = generate(model, target)
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != code:
            path.write_text(code, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(f"no golden file {path.relative_to(ROOT)}; create it with:\n"
                    f"    NETDSL_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py")
    old = path.read_text(encoding="utf-8")
    if old != code:
        diff = "".join(difflib.unified_diff(old.splitlines(keepends=True), code.splitlines(keepends=True),
                                            fromfile=f"{path.relative_to(ROOT)} (golden)",
                                            tofile=f"models/{model}.net --target {target} (generated now)"))
        pytest.fail(f"generated code changed:\n{diff}\nIf the change is intended, update the goldens with:\n"
                    f"    NETDSL_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py\n"
                    f"and review `git diff tests/golden`.")


def test_no_stale_goldens():
    """Every golden file belongs to a model that still exists."""
    stale = [str(p.relative_to(ROOT)) for t in TARGETS for p in GOLDEN.glob(f"*/{t}.py") if p.parent.name not in MODELS]
    assert not stale, f"golden files for models that no longer exist: {stale}"


def main_flags(code: str) -> list:
    """The add_argument calls of a generated main(), as source text, in order."""
    import ast

    tree = ast.parse(code)
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    return [ast.unparse(c) for c in ast.walk(main)
            if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute) and c.func.attr in
            ("add_argument", "ArgumentParser")]


def test_every_target_has_the_same_command_line():
    """--data, --data-dir, --label-column, --epochs, --batch-size, --lr, --seed, --init, --eval-only, --out-dir,
    --limit-train, --device, --amp, --compile, --checkpoint, --resume, --max-steps, --predict, --output (a target
    that does not honour a runtime flag stops with a usage error, netdsl/emit/base.py RUNTIME_FLAGS):
    the same flags, defaults and help texts in the generated main() of every target and model."""
    flags = {}
    for model in MODELS:
        for target in ("pytorch", "keras", "tf_estimator", "gluon", "cntk"):
            path = GOLDEN / model / f"{target}.py"
            flags[(model, target)] = main_flags(path.read_text(encoding="utf-8"))
    first = next(iter(flags.values()))
    assert [f.split("(")[1].split(",")[0] for f in first[1:]] == [
        "'--data'", "'--data-dir'", "'--label-column'", "'--epochs'", "'--batch-size'", "'--lr'", "'--seed'",
        "'--init'", "'--eval-only'", "'--out-dir'", "'--limit-train'", "'--device'", "'--amp'", "'--compile'",
        "'--checkpoint'", "'--resume'", "'--max-steps'", "'--predict'", "'-o'"]
    differ = {k: v for k, v in flags.items() if v != first}
    assert not differ, f"main() flags differ from {next(iter(flags))}: {sorted(differ)}"


def ruff_or_skip() -> str:
    import shutil
    import sys

    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed")
    return ruff


def test_goldens_pass_ruff_check_with_its_default_rules():
    """A user's pre-commit `ruff check` (ruff's default configuration) leaves the generated code alone."""
    import subprocess

    proc = subprocess.run([ruff_or_skip(), "check", "--isolated", "--no-cache", "--output-format", "concise",
                           str(GOLDEN)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_goldens_are_ruff_formatted():
    """`ruff format` (its default configuration) leaves every golden of every target alone: the emitters lay
    long statements out as ruff keeps them (netdsl/emit/layout.py), the templates are written that way."""
    import subprocess

    proc = subprocess.run([ruff_or_skip(), "format", "--isolated", "--no-cache", "--check", "--diff", str(GOLDEN)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


LAYOUT_CASES = [  # (statement, indent): long calls, chains, comments, lambdas, tuples, subscripts, quotes
    ('h = C.layers.Recurrence(C.layers.LSTM(150, name="lstm_1"), go_backwards=False)(e)', 4),
    ("self.lstm_1.bias_hh_l0.requires_grad_(False)  # netdsl's one bias per gate is bias_ih_l0", 8),
    (('z = tf.compat.v1.layers.dense(tf.compat.v1.layers.flatten(p), 10, activation=None, use_bias=True, '
      'name="dense_1")  # NHWC-flattened: rows permuted on load'), 4),
    ('"batch_normalization_1.running_mean": ((16,), "batch_normalization_1/moving_mean", "identity", None),', 4),
    (('self.layer1 = _sequential("layer1_", [  # Sequential\n  nn.Conv2D(16, (5, 5), strides=(1, 1), padding=(2, 2), '
      'in_channels=1, activation=None, use_bias=True, prefix="c_"),\n  nn.Activation("relu", prefix="a_"),\n])'), 8),
    ("x = nn.HybridLambda(lambda F, x: (x - 33.328500000000005) / 78.5655, prefix='image_scaled_', layout='NTC')", 8),
    (('n = C.layers.For(range(2), lambda i: [\n    C.layers.Dense([10, 20][i], activation=None, name=["d_1", "d_2"][i]),'
      '\n], name="stack")'), 4),
    ("feed[labels] = np.eye(number_of_the_classes, dtype=np.float32)[labels_of_the_batch[:, 0, 1]]", 8),
]


@pytest.mark.parametrize("code, indent", LAYOUT_CASES)
def test_layout_is_ruff_formatted_and_keeps_the_code(code, indent, tmp_path):
    """emit/layout.py changes only the layout: the same AST, and ruff format leaves the result alone."""
    import ast
    import subprocess
    import textwrap

    from netdsl.emit.common import layout

    out = layout(code, indent)
    # continuation lines carry their own indentation; the first is the template's
    wrapped = ("def f():\n    if x:\n        " if indent > 4 else "def f():\n    ") + out
    if code.endswith(","):  # a table entry: inside a dict
        wrapped = "T = {\n    " + out + "\n}"
        code = "{" + code + "}"
    body = ast.parse(wrapped).body[0]
    inner = body.value if isinstance(body, ast.Assign) else (body.body[0].body[0] if indent > 4 else body.body[0])
    expected = ast.parse(textwrap.dedent(code)).body[0]
    expected = expected.value if code.startswith("{") else expected
    assert ast.dump(inner) == ast.dump(expected)
    assert all(len(line) <= 88 for line in wrapped.splitlines() if not line.lstrip().startswith("#"))
    path = tmp_path / "m.py"
    path.write_text(wrapped + "\n", encoding="utf-8")
    proc = subprocess.run([ruff_or_skip(), "format", "--isolated", "--no-cache", "--check", "--diff", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout
    assert layout(code.strip("{}") if code.startswith("{") else code, indent) == out  # deterministic


EVERY_TARGET = ("pytorch", "keras", "tf-estimator", "gluon", "cntk")


def test_every_trap_and_reference_model_passes_ruff(tmp_path):
    """The goldens are a few models: `ruff check` and `ruff format --check` (isolated, ruff's defaults)
    also leave alone the generated code of every tests/traps and tests/cntk_reference model on every
    target that accepts it (a target may refuse one with a located E8xx). One ruff run over all files."""
    import subprocess

    from netdsl.errors import NetdslError

    ruff = ruff_or_skip()
    out = tmp_path / "generated"  # file names that import no module: `keras.py` would be first-party to isort
    out.mkdir()
    nets = sorted((ROOT / "tests" / "traps").glob("*.net")) + sorted((ROOT / "tests" / "cntk_reference").glob("*.net"))
    for net in nets:
        graph = load(str(net))
        for target in EVERY_TARGET:
            try:
                code = emit(graph, target)
            except NetdslError as e:
                assert all(d.code.startswith("E8") for d in e.diagnostics), f"{net.name} {target}: {e}"
                continue
            (out / f"{target.replace('-', '_')}__{net.parent.name}__{net.stem}.py").write_text(code, encoding="utf-8")
    assert len(list(out.iterdir())) > 4 * len(nets)
    for cmd in (["check", "--output-format", "concise"], ["format", "--check", "--diff"]):
        proc = subprocess.run([ruff, *cmd[:1], "--isolated", "--no-cache", *cmd[1:], "."], capture_output=True,
                              text=True, timeout=300, cwd=out)
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
