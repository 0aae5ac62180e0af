"""Issue 12's must-show: a bidirectional tagger on padded variable-length batches matches the native
executor on EVERY column, and its outputs do not change when the same batch is padded further.

models/bilstm_tagger.net (a forward and a go_backwards LSTM, spliced) and a GRU tagger with select_last
and select_first run in each column's own interpreter through netdsl's conformance driver, on real
frameworks: predict() with lengths on the batch padded to T and to T + 5 (the extra steps hold real
token ids, not pad ids), predict() without lengths (the backward half then reads the padding: why
lengths matter), and one train_step with labels at padded positions changed (no effect on the loss).
A column whose interpreter is missing SKIPs, saying so.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from netdsl import conformance as conf
from netdsl.conformance_lengths import TARGETS_WITH_MASKS, valid
from netdsl.emit.base import emit
from netdsl.exec.graph import Executor
from netdsl.exec.weights import save_weights
from netdsl.frontend import load, load_text

GRU_TAGGER = """
words = SequenceInput(vocab=20)
e = Embedding(4)(words)
h_fwd = Recurrence(GRU(3))(e)
h_bwd = Recurrence(GRU(3, reset_after=True), go_backwards=True)(e)
h = splice([h_fwd, h_bwd])
tags = Dense(5)(h)
last = select_last(h_fwd)
first = select_first(h_bwd)
output tags, last, first
train {
    loss = cross_entropy_with_softmax
}
"""

COLUMNS = [c.name for c in conf.COLUMNS]


def column(name: str):
    col = next(c for c in conf.COLUMNS if c.name == name)
    python, why = col.python()
    if python is None:
        pytest.skip(f"NOT EXECUTED ({name}): {why}")
    return col, python


@pytest.mark.parametrize("name", COLUMNS)
@pytest.mark.parametrize("model", ["bilstm", "gru"])
def test_tagger_on_padded_batches_matches_native_and_ignores_the_padding(tmp_path, name, model):
    col, python = column(name)
    assert col.target in TARGETS_WITH_MASKS
    g = load("models/bilstm_tagger.net") if model == "bilstm" else load_text(GRU_TAGGER, "gru_tagger.net")
    vocab = g.inputs[0].type.vocab
    classes = g.value_type(g.outputs[0]).batch_shape()[-1]
    params = conf.conformance_params(g, 0)
    save_weights(tmp_path / "w.npz", params)
    (tmp_path / "m.py").write_text(emit(g, col.target))
    (tmp_path / "s.py").write_text(emit(conf.step_graph(g), col.target))
    rng = np.random.default_rng(zlib.crc32(f"columns-{model}".encode()))
    lengths = np.array([8, 3, 5, 1])
    mask = valid(lengths, 8)
    ids = np.where(mask, rng.integers(1, vocab, (4, 8)), 0)
    longer = np.concatenate([ids, rng.integers(1, vocab, (4, 5))], axis=1)
    labels = rng.integers(0, classes, (4, 8))
    np.savez(tmp_path / "ids.npz", words=ids)
    np.savez(tmp_path / "longer.npz", words=longer)
    np.savez(tmp_path / "lengths.npz", words=lengths)
    np.savez(tmp_path / "labels.npz", targets=labels)
    np.savez(tmp_path / "junk.npz", targets=np.where(mask, labels, classes - 1))

    def job(jid, module, inputs, masked=True, **more):
        out = {"id": jid, "module": str(tmp_path / module), "inputs": str(tmp_path / inputs), **more}
        return dict(out, lengths=str(tmp_path / "lengths.npz")) if masked else out

    def predict(jid, inputs, masked=True):
        return job(jid, "m.py", inputs, masked, predict_weights=str(tmp_path / "w.npz"),
                   outputs=str(tmp_path / f"{jid}.npz"))

    def step(jid, targets):
        return job(jid, "s.py", "ids.npz", step_weights=str(tmp_path / "w.npz"),
                   targets=str(tmp_path / targets), stepped=str(tmp_path / f"{jid}.npz"))

    jobs = [predict("padded", "ids.npz"), predict("longer", "longer.npz"),
            predict("unmasked", "ids.npz", masked=False), step("step", "labels.npz"), step("junk", "junk.npz")]
    results = conf.run_driver(python, col, jobs, tmp_path, log=lambda m: None)
    for j in jobs:
        assert results.get(j["id"], {}).get("ok"), results.get(j["id"]) or results.get(conf.DRIVER_EXIT)
    native = Executor(g, params, np.float32).forward({"words": ids}, lengths={"words": lengths})
    got = dict(np.load(tmp_path / "padded.npz"))
    got5 = dict(np.load(tmp_path / "longer.npz"))
    unmasked = dict(np.load(tmp_path / "unmasked.npz"))
    tags = g.outputs[0]
    assert got5[tags].shape == (4, 13, classes)
    np.testing.assert_allclose(got[tags][mask], native[tags][mask], rtol=0, atol=1e-5)
    np.testing.assert_allclose(got5[tags][:, :8][mask], got[tags][mask], rtol=0, atol=1e-6)
    for out in g.outputs[1:]:  # select_last / select_first: one vector per sample
        np.testing.assert_allclose(got[out], native[out], rtol=0, atol=1e-5)
        np.testing.assert_allclose(got5[out], got[out], rtol=0, atol=1e-6)
    assert np.abs(unmasked[tags][1, :3] - got[tags][1, :3]).max() > 1e-4  # why lengths matter
    np.testing.assert_allclose(unmasked[tags][0], got[tags][0], rtol=0, atol=1e-5)  # a full-length sample
    assert abs(results["step"]["loss"] - results["junk"]["loss"]) <= 1e-6 * abs(results["step"]["loss"])
    stepped = conf.native_step(conf.step_graph(g), params, {"words": ids}, labels, {"words": lengths})
    mine = dict(np.load(tmp_path / "step.npz"))
    for k, w in stepped.items():
        np.testing.assert_allclose(mine[k], w, rtol=0, atol=conf.STEP_TOL * max(1.0, float(np.abs(w).max())))


@pytest.mark.parametrize("model", ["bilstm", "gru"])
def test_onnx_tagger_on_padded_batches_both_oracles_and_round_trip(model):
    """The ONNX export of the same taggers takes the lengths as the optional input words_lens: onnxruntime
    and onnx.reference match the native executor at valid positions, padded to T and to T + 5; without
    words_lens every sample is T long; `netdsl import` maps the lengths machinery back to the same IR."""
    pytest.importorskip("onnxruntime")
    from netdsl.onnx import check
    from netdsl.onnx.export import to_onnx
    from netdsl.onnx.sources import from_onnx_model

    g = load("models/bilstm_tagger.net") if model == "bilstm" else load_text(GRU_TAGGER, "gru_tagger.net")
    vocab = g.inputs[0].type.vocab
    params = conf.conformance_params(g, 0)
    onnx_model = to_onnx(g, params)
    assert [i.name for i in onnx_model.graph.input] == ["words", "words_lens"]
    rng = np.random.default_rng(zlib.crc32(f"onnx-{model}".encode()))
    lengths = np.array([8, 3, 5, 1])
    mask = valid(lengths, 8)
    ids = np.where(mask, rng.integers(1, vocab, (4, 8)), 0)
    longer = np.concatenate([ids, rng.integers(1, vocab, (4, 5))], axis=1)
    ex = Executor(g, params, np.float32)
    native = ex.forward({"words": ids}, lengths={"words": lengths})
    tags = g.outputs[0]
    for oracle in ("onnxruntime", "reference"):
        run = check.run_onnxruntime if oracle == "onnxruntime" else check.run_reference
        got = run(onnx_model, {"words": ids, "words_lens": lengths}, list(g.outputs))
        got5 = run(onnx_model, {"words": longer, "words_lens": lengths}, list(g.outputs))
        np.testing.assert_allclose(got[tags][mask], native[tags][mask], rtol=0, atol=1e-5, err_msg=oracle)
        np.testing.assert_allclose(got5[tags][:, :8][mask], got[tags][mask], rtol=0, atol=1e-6, err_msg=oracle)
        for out in g.outputs[1:]:
            np.testing.assert_allclose(got[out], native[out], rtol=0, atol=1e-5, err_msg=oracle)
            np.testing.assert_allclose(got5[out], got[out], rtol=0, atol=1e-6, err_msg=oracle)
        full = run(onnx_model, {"words": ids}, list(g.outputs))  # no lengths: all T long
        want = ex.forward({"words": ids})
        for out in g.outputs:
            np.testing.assert_allclose(full[out], want[out], rtol=0, atol=1e-5, err_msg=oracle)
    text, weights = from_onnx_model(onnx_model, "tagger.onnx", "tagger")
    back = load_text(text, "back.net")
    assert [i.name for i in back.inputs] == ["words"]
    assert [graph_kinds(back)] == [graph_kinds(g)]
    again = Executor(back, weights, np.float32).forward({"words": ids}, lengths={"words": lengths})
    for a, b in zip(g.outputs, back.outputs):
        np.testing.assert_allclose(again[b], native[a], rtol=0, atol=1e-6)


def graph_kinds(g):
    """Each node's kind and its recurrence direction, in order."""
    return [(g.layer(n.layer).kind, g.layer(n.layer).attr("go_backwards")) for n in g.nodes]
