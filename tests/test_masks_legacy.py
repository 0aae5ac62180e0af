"""Variable-length sequence batches (docs/ir.md) on the legacy targets, run on the REAL frameworks.

The generated modules run in the legacy venv through netdsl's conformance driver (one subprocess per
test): predict() and train_step() take {sequence input: (N,) lengths}. Checked against the native
executor at valid positions. Without that venv the tests SKIP with "LEGACY NOT EXECUTED: ...".
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from netdsl import conformance as conf
from netdsl.conformance_lengths import valid
from netdsl.emit.base import emit
from netdsl.exec.graph import Executor
from netdsl.exec.weights import save_weights
from netdsl.frontend import load

# a backward GRU of each reset convention (reset_after=False is gluon's own _GRUResetBefore loop),
# select_last of a forward one and select_first of a backward one
GRU_TAGGER = """
words = SequenceInput(vocab=20)
e = Embedding(4)(words)
h_fwd = Recurrence(GRU(3))(e)
h_bwd = Recurrence(GRU(3), go_backwards=True)(e)
h_aft = Recurrence(GRU(2, reset_after=True), go_backwards=True)(e)
h = splice([h_fwd, h_bwd, h_aft])
tags = Dense(5)(h)
last = select_last(h_fwd)
first = select_first(h_bwd)
output tags, last, first
train {
    loss = cross_entropy_with_softmax
}
"""


def legacy_python(column: str) -> str:
    col = next(c for c in conf.COLUMNS if c.name == column)
    python, why = col.python()
    if python is None:
        pytest.skip(f"LEGACY NOT EXECUTED ({column}): {why}")
    return python


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


@pytest.mark.parametrize("column", ["gluon", "tf-estimator"])
def test_conformance_on_padded_batches(tmp_path, column):
    """`netdsl conformance` runs the column on truly padded batches (no 'padded batches not
    checked' note) and it matches the native executor at valid positions, inference and one step."""
    legacy_python(column)
    gru = tmp_path / "gru_tagger.net"
    gru.write_text(GRU_TAGGER)
    models = ["models/bilstm_tagger.net", "tests/traps/padded_backward.net", "tests/traps/gru_reset_after.net",
              "tests/traps/gru_shared_last.net", str(gru)]
    cols = [c for c in conf.COLUMNS if c.name == column]
    cells = conf.run(models, cols, workdir=str(tmp_path / "work"), log=lambda m: None)
    for m in models:
        cell = cells[(m, column)]
        assert cell.status == "pass" and cell.step_status == "pass" and not cell.reason, (m, cell)


@pytest.mark.parametrize("column", ["gluon", "tf-estimator"])
def test_bilstm_tagger_valid_positions_do_not_depend_on_the_padding(tmp_path, column):
    """models/bilstm_tagger.net on Gluon and tf.estimator: on a padded batch its valid positions equal the native
    executor's; the same batch padded to T + 5 changes nothing there; without lengths the backward
    half reads the padding (why lengths matter); labels at padded positions change no training step."""
    python = legacy_python(column)
    g = load("models/bilstm_tagger.net")
    sg = conf.step_graph(g)
    params = conf.conformance_params(g, 0)
    save_weights(tmp_path / "w.npz", params)
    (tmp_path / "m.py").write_text(emit(g, column))
    (tmp_path / "s.py").write_text(emit(sg, column))
    rng = rng_for("legacy-bilstm")
    lengths = np.array([8, 3, 5, 1])
    mask = valid(lengths, 8)
    ids = np.where(mask, rng.integers(1, 943, (4, 8)), 0)
    longer = np.concatenate([ids, rng.integers(1, 943, (4, 5))], axis=1)
    labels = rng.integers(0, 129, (4, 8))
    junk = np.where(mask, labels, 7)
    np.savez(tmp_path / "ids.npz", words=ids)
    np.savez(tmp_path / "longer.npz", words=longer)
    np.savez(tmp_path / "lengths.npz", words=lengths)
    np.savez(tmp_path / "labels.npz", targets=labels)
    np.savez(tmp_path / "junk.npz", targets=junk)

    def job(name, module, inputs, masked=True, **more):
        out = {"id": name, "module": str(tmp_path / module), "inputs": str(tmp_path / inputs), **more}
        return dict(out, lengths=str(tmp_path / "lengths.npz")) if masked else out

    def predict(name, inputs, masked=True):
        return job(name, "m.py", inputs, masked, predict_weights=str(tmp_path / "w.npz"),
                   outputs=str(tmp_path / f"{name}.npz"))

    def step(name, targets):
        return job(name, "s.py", "ids.npz", step_weights=str(tmp_path / "w.npz"),
                   targets=str(tmp_path / targets), stepped=str(tmp_path / f"{name}.npz"))

    jobs = [predict("padded", "ids.npz"), predict("longer", "longer.npz"),
            predict("unmasked", "ids.npz", masked=False), step("step", "labels.npz"), step("junk", "junk.npz")]
    col = next(c for c in conf.COLUMNS if c.name == column)
    results = conf.run_driver(python, col, jobs, tmp_path, log=lambda m: None)
    for j in jobs:
        assert results.get(j["id"], {}).get("ok"), results.get(j["id"]) or results.get(conf.DRIVER_EXIT)
    got = np.load(tmp_path / "padded.npz")["tags"]
    got5 = np.load(tmp_path / "longer.npz")["tags"]
    unmasked = np.load(tmp_path / "unmasked.npz")["tags"]
    native = Executor(g, params, np.float32).forward({"words": ids}, lengths={"words": lengths})["tags"]
    assert got5.shape == (4, 13, 129)
    np.testing.assert_allclose(got[mask], native[mask], rtol=0, atol=1e-5)
    np.testing.assert_allclose(got5[:, :8][mask], got[mask], rtol=0, atol=1e-6)
    assert np.abs(unmasked[1, :3] - got[1, :3]).max() > 1e-4
    np.testing.assert_allclose(unmasked[0], got[0], rtol=0, atol=1e-5)  # a full-length sample
    assert results["step"]["loss"] == results["junk"]["loss"]
    stepped, stepped_junk = dict(np.load(tmp_path / "step.npz")), dict(np.load(tmp_path / "junk.npz"))
    want = conf.native_step(sg, params, {"words": ids}, labels, {"words": lengths})
    for k, w in want.items():
        np.testing.assert_array_equal(stepped[k], stepped_junk[k])
        np.testing.assert_allclose(stepped[k], w, rtol=0, atol=1e-5 * max(1.0, float(np.abs(w).max())))
