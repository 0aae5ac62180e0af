"""The named traps (tests/traps/*.net, each says which trap it guards) on every target, numerically.

Each trap model runs through `netdsl conformance`: the same canonical weights and batch on each
real framework against the native executor, in inference mode and after one plain-SGD step.
"""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from netdsl import conformance as conf

ROOT = Path(__file__).resolve().parent.parent
TRAPS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "traps").glob("*.net") if p.stem != "dropout_rate")
COLUMNS = {c.name: c for c in conf.COLUMNS}
# cells a target refuses at compile time (a located E8xx naming the target and the reason), never a wrong answer
REFUSED = {
    ("gelu_exact", "cntk"): "CNTK 2.7 has no erf",
    ("conv1d_sequence", "cntk"): "changes the sequence length",
}


@pytest.fixture(scope="module")
def matrix(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.chdir(ROOT)
    return conf.run(TRAPS, conf.COLUMNS, workdir=str(tmp_path_factory.mktemp("traps")), log=lambda m: None)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_every_trap_is_named():
    for path in TRAPS + ["tests/traps/dropout_rate.net"]:
        first = (ROOT / path).read_text().splitlines()[0]
        assert first.startswith("# trap: "), path


@pytest.mark.parametrize("column", list(COLUMNS))
@pytest.mark.parametrize("trap", TRAPS, ids=[Path(t).stem for t in TRAPS])
def test_trap(matrix, trap, column):
    cell = matrix[(trap, column)]
    if cell.status == "not run":
        pytest.skip(f"{column.upper()} NOT EXECUTED: {cell.reason}")
    refused = REFUSED.get((Path(trap).stem, column))
    if refused is not None:
        assert cell.status == "unsupported" and refused in cell.reason and f"'{COLUMNS[column].target}'" in cell.reason, \
            f"{cell.short()}: {cell.reason}"
        return
    assert cell.status == "pass", f"{cell.short()}: {cell.reason}"
    assert cell.step_status == "pass", f"{cell.short()}: {cell.reason}"


@pytest.mark.parametrize("column", list(COLUMNS))
def test_dropout_rate_is_the_drop_probability(column, tmp_path):
    """Ones through Dropout(0.2) into a sum: the squared error around the mean is F * rate / (1 - rate).

    A keep_prob/rate swap gives F * 4, and dropout without the 1 / (1 - rate) scaling a huge bias."""
    n, features, rate = 1024, 200, 0.2
    inputs = {"feats": np.ones((n, features), np.float32)}
    targets = np.full((n, 1), features, np.float32)
    loss = conf.training_loss("tests/traps/dropout_rate.net", COLUMNS[column], inputs, targets, workdir=str(tmp_path))
    if isinstance(loss, str):
        pytest.skip(f"{column.upper()} NOT EXECUTED: {loss}")
    expected = features * rate / (1 - rate)  # 50
    assert 0.75 * expected < loss < 1.25 * expected, f"loss {loss}, expected about {expected}"


def test_native_dropout_rate_is_the_drop_probability():
    from netdsl.exec.graph import Executor
    from netdsl.exec.weights import init_params
    from netdsl.frontend import load

    g = load(str(ROOT / "tests/traps/dropout_rate.net"))
    out = Executor(g, init_params(g, 0)).forward({"feats": np.ones((1024, 200), np.float32)}, training=True,
                                                 rng=np.random.default_rng(0))["z"]
    loss = float(((out - 200) ** 2).mean())
    assert 37.5 < loss < 62.5


def test_cntk_does_not_depend_on_the_callers_thread_settings(tmp_path, monkeypatch):
    """CNTK 2.7 died with SIGFPE under OMP_NUM_THREADS=1 when a conv net was evaluated before its first
    train_minibatch (issue 11 item 6): the conformance driver predicts, then steps, in one process."""
    col = replace(COLUMNS["cntk"], env={"OMP_NUM_THREADS": "1"})
    monkeypatch.chdir(ROOT)
    trap = "tests/traps/feature_map_classes.net"
    cell = conf.run([trap], [col], workdir=str(tmp_path), log=lambda m: None)[(trap, "cntk")]
    if cell.status == "not run":
        pytest.skip(f"CNTK NOT EXECUTED: {cell.reason}")
    assert cell.status == "pass" and cell.step_status == "pass", f"{cell.short()}: {cell.reason}"
