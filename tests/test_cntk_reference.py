"""Constructs of the CNTK Layers Library reference (seed 004), one tiny .net each in tests/cntk_reference/,
written in the reference's own terms: each is accepted, and each computes the same function on every column.

The first line of each file names the seed line it transcribes (`# seed 004, line N`), or says that the
construct is one issue 12 adds beyond the reference (`# not in seed 004 ...`).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from netdsl import conformance as conf
from netdsl.frontend import load

ROOT = Path(__file__).resolve().parent.parent
FILES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "cntk_reference").glob("*.net"))
COLUMNS = {c.name: c for c in conf.ALL_COLUMNS}
SEED = ROOT.parent / "shared" / "seeds" / "004_20cf8e6ceaf8a09f.txt"
# cells a target refuses at compile time with a located E8xx naming the target and the reason
REFUSED = {("activation_gelu", "cntk"): "CNTK 2.7 has no erf",
           ("lstm_cell_shape", "onnx"): "has no projection", ("lstm_use_peepholes", "onnx"): "has no projection",
           ("lstm_self_stabilization", "onnx"): "has no projection",
           ("gru_self_stabilization", "onnx"): "has no self-stabilizer"}


@pytest.mark.parametrize("path", FILES, ids=[Path(f).stem for f in FILES])
def test_each_file_names_its_seed_line_and_is_accepted(path):
    first = (ROOT / path).read_text(encoding="utf-8").splitlines()[0]
    m = re.match(r"# seed 004, lines? (\d+)", first)
    # the constructs issue 12 adds beyond the 2016 reference (global pooling, newer activations) say so
    assert m or first.startswith("# not in seed 004"), \
        f"{path}: the first line must be '# seed 004, line N: ...' or '# not in seed 004 ...'"
    if m and SEED.exists():
        lines = SEED.read_text(encoding="utf-8").splitlines()
        assert int(m.group(1)) <= len(lines) and lines[int(m.group(1)) - 1].strip(), path
    load(str(ROOT / path))


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.chdir(ROOT)
    try:
        yield conf.run(FILES, conf.ALL_COLUMNS, workdir=str(tmp_path_factory.mktemp("reference")), log=lambda m: None)
    finally:
        mp.undo()


@pytest.mark.parametrize("column", list(COLUMNS))
@pytest.mark.parametrize("path", FILES, ids=[Path(f).stem for f in FILES])
def test_every_column_computes_the_same_function(matrix, path, column):
    cell = matrix[(path, column)]
    if cell.status == "not run":
        pytest.skip(f"{column.upper()} NOT EXECUTED: {cell.reason}")
    refused = REFUSED.get((Path(path).stem, column))
    if refused is not None:
        assert cell.status == "unsupported" and refused in cell.reason, f"{cell.short()}: {cell.reason}"
        return
    assert cell.status == "pass", f"{cell.short()}: {cell.reason}"
    if not COLUMNS[column].inference_only:
        assert cell.step_status == "pass", f"{cell.short()}: {cell.reason}"
