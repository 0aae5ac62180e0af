"""`netdsl conformance --steps 20` over the seeded train-block combinations (issue 18), on every column.

One conformance run (one driver process per column) trains each of the combinations of tests/train_combos.py
for 20 steps on every training column and natively. No cell may FAIL. A column refuses (E802) what its
generated script does not implement yet; the refused combinations of each column must be exactly
EXPECTED_REFUSED below, so a refusal can neither appear nor vanish silently. Target engineers shrink
their column's set as they implement settings.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netdsl import conformance as conf
from netdsl import conformance_steps as cs
from netdsl.frontend import load_text
from train_combos import MODEL, OPTIMIZERS, block, combinations

ROOT = Path(__file__).resolve().parent.parent
DRAWN = combinations(40, seed=18)
# what every target implemented before issue 18 (emit/training.py BASELINE): compared on every column today
BASELINE = [("SGD(lr=0.05, momentum=0.9, nesterov=True)", None, None, "cross_entropy_with_softmax"),
            ("Adam(lr=0.01)", None, None, "squared_error"),
            ("Adadelta(lr=1.0)", None, None, "cross_entropy_with_softmax")]
COMBOS = DRAWN + BASELINE
STEPS = 20

# column -> the indices into COMBOS its generated code refuses (E802). Today every target refuses every drawn
# combination; a target engineer replaces ALL in their column by the indices their target still refuses.
ALL = list(range(len(DRAWN)))
EXPECTED_REFUSED = {
    "pytorch": [],  # every setting implemented (tests/test_train_pytorch.py)
    "keras/torch": [],  # tests/test_train_keras.py
    "keras/tensorflow": [],
    "tf-estimator": [],  # tests/test_train_tf_estimator.py
    "gluon": [],  # every setting implemented (tests/test_train_gluon.py)
    "cntk": [],  # every drawn combination trains on cntk (tests/test_train_cntk.py)
}


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("steps")
    files = []
    for i, combo in enumerate(COMBOS):
        path = tmp / f"c{i:02d}.net"
        path.write_text(MODEL % block(*combo))
        files.append(str(path))
    work = tmp / "work"
    work.mkdir()
    # the baseline with int labels, what the targets implemented before issue 18; the drawn ones take
    # label_form's seeded choice, so cross-entropy is compared on int labels and on one-hot rows
    forms = {f: "labels" for f in files[len(DRAWN):]}
    return files, cs.run_steps(files, conf.COLUMNS, STEPS, 0, work, print, forms)


def test_no_cell_fails(cells):
    files, found = cells
    failed = [f"{Path(m).stem} {COMBOS[files.index(m)]} on {c}: {cell.short()}: {cell.reason}"
              for (m, c), cell in found.items() if cell.status == "FAIL"]
    assert not failed, "\n".join(failed)


def test_refused_combinations_are_the_expected_ones(cells):
    files, found = cells
    refused = {c.name: sorted(files.index(m) for (m, col), cell in found.items()
                              if col == c.name and cell.status == "unsupported") for c in conf.COLUMNS}
    for (m, c), cell in found.items():
        if cell.status == "unsupported":
            assert cell.codes == ("E802",), (m, c, cell.reason)
    assert refused == {c.name: EXPECTED_REFUSED[c.name] for c in conf.COLUMNS}


def test_every_cell_ran_or_says_why(cells):
    files, found = cells
    for (m, c), cell in found.items():
        assert cell.status in ("pass", "unsupported", "not run", "FAIL"), cell
        if cell.status == "not run":
            assert cell.reason
    assert len(found) == len(files) * len(conf.COLUMNS)


def test_the_combinations_cover_every_optimizer_and_both_label_forms():
    assert len(DRAWN) >= 40
    assert {c[0] for c in DRAWN} == set(OPTIMIZERS)
    forms = {cs.label_form(f"c{i:02d}.net", 0) for i, c in enumerate(DRAWN) if c[3].startswith("cross_entropy")}
    assert forms == {"labels", "one-hot"}


def test_one_hot_rows_train_exactly_as_their_labels():
    for loss in ("cross_entropy_with_softmax", "cross_entropy_with_softmax(reduction=sum)"):
        graph = cs.steps_graph(load_text(MODEL % block("Adam(lr=0.01)", None, "clip_norm = 0.5", loss), "m.net"))
        params = conf.conformance_params(graph, 0)
        inputs = conf.batch_for(graph, 0)
        out = conf.native_predict(graph, params, inputs)
        labels, rows = cs.steps_targets(graph, out, 0), cs.steps_targets(graph, out, 0, one_hot=True)
        assert rows.dtype == np.float32 and rows.shape == (3, 3) and (rows.argmax(axis=1) == labels).all()
        a, b = cs.native_steps(graph, params, inputs, labels, 5), cs.native_steps(graph, params, inputs, rows, 5)
        assert a[0] == b[0] and all(np.array_equal(a[1][k], b[1][k]) for k in a[1])
    fmap = {"y": np.zeros((2, 4, 3, 3), np.float32)}  # a feature map: the classes on the channel axis
    rows = cs.steps_targets(graph, fmap, 0, one_hot=True)
    assert rows.shape == (2, 4, 3, 3) and (rows.sum(axis=1) == 1).all()


def test_the_baseline_runs_everywhere(cells):
    """The combinations no target refuses are compared on every column whose framework is here."""
    files, found = cells
    for m in files[len(DRAWN):]:
        for c in conf.COLUMNS:
            cell = found[(m, c.name)]
            assert cell.status == "pass" or (cell.status == "not run" and c.python()[0] is None), (m, c.name, cell)


def test_a_difference_fails_the_cell():
    """The comparison itself: the native run against itself passes; a nudged weight or loss fails."""
    graph = cs.steps_graph(load_text(MODEL % block("Adam(lr=0.01)", None, None, "squared_error"), "m.net"))
    params = conf.conformance_params(graph, 0)
    inputs = conf.batch_for(graph, 0)
    targets = cs.steps_targets(graph, conf.native_predict(graph, params, inputs), 0)
    assert targets.dtype == np.float32 and targets.shape == (3, 3) and np.abs(targets).max() < 1
    ref = cs.native_steps(graph, params, inputs, targets, 5)
    losses, weights, _ = ref
    assert cs.compare(graph, ref, losses, weights).status == "pass"
    nudged = dict(weights, **{"dense_1.W": weights["dense_1.W"] + 1e-3})
    assert cs.compare(graph, ref, losses, nudged).status == "FAIL"
    assert cs.compare(graph, ref, [v * (1 + 1e-3) for v in losses], weights).status == "FAIL"
    assert cs.compare(graph, ref, losses[:-1], weights).status == "FAIL"


def test_targets_per_loss():
    for loss, kind, low, high in [("binary_cross_entropy_with_logits", "f", 0, 1), ("l2", "f", -1, 1),
                                  ("cross_entropy_with_softmax", "i", 0, 2)]:
        graph = cs.steps_graph(load_text(MODEL % block("SGD(lr=0.1)", None, None, loss), "m.net"))
        out = {"y": np.zeros((3, 3), np.float32)}
        t = cs.steps_targets(graph, out, 0)
        assert t.dtype.kind == kind and low <= t.min() and t.max() <= high
        assert t.shape == ((3,) if kind == "i" else (3, 3))


def test_the_tolerance_table_is_in_the_docs():
    assert set(cs.TOLERANCE) == {o.split("(")[0] for o in OPTIMIZERS}
    assert (ROOT / "docs" / "conformance.md").read_text().endswith(cs.doc_section())


def test_cli(tmp_path, capsys):
    from netdsl.cli import main

    net = tmp_path / "m.net"
    net.write_text(MODEL % block("SGD(lr=0.1, momentum=0.9)", None, None, "cross_entropy_with_softmax"))
    assert main(["conformance", "--steps", "0", str(net)]) == 2
    assert main(["conformance", "--steps", "3", "--columns", "pytorch,onnx", str(net)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["pytorch", "onnx"]
    assert out[1].split()[:3] == ["m", "pass", "loss"] and out[1].split()[-1] == "n/a"
