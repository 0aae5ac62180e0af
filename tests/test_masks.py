"""Variable-length sequence batches (docs/ir.md): padded (N, T, ...) batches with (N,) lengths.

The native executor's LSTM (both directions), select_last/select_first and the masked loss,
forward and backward, against finite differences (float64) and PyTorch's packed sequences
(float32); outputs at valid positions that do not depend on how far a batch is padded.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from netdsl.data.feed import masked_loss
from netdsl.exec import losses
from netdsl.exec.graph import Executor
from netdsl.exec.kernels import lstm, masking
from netdsl.exec.weights import init_params
from netdsl.frontend import load, load_text

torch = pytest.importorskip("torch")


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def close(ours, ref, tol, what):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
    scale = max(1.0, float(np.abs(ref).max()))
    err = float(np.abs(ours - ref).max())
    assert err <= tol * scale, f"{what}: max abs error {err:.3g} > {tol * scale:.3g}"


def lstm_weights(rng, f, hs, dtype, cell=None):
    """[W, H, b], and the projection P (hs, cell) after them with a cell size (cell_shape)."""
    cs = hs if cell is None else cell
    shapes = ((4 * cs, f), (4 * cs, hs), (4 * cs,)) + (() if cell is None else ((hs, cs),))
    return [(rng.standard_normal(s) * 0.5).astype(dtype) for s in shapes]


def masked_lstm(x, W, H, b, lengths, go_backwards, P=None):
    """The LSTM kernel's path for a padded batch."""
    return masking.run_masked(lambda v: lstm.lstm_forward(v, W, H, b, P=P), lstm.lstm_backward, x, lengths,
                              go_backwards)


# ------------------------------------------------------------ the helpers

def test_reverse_valid_reverses_each_prefix_and_is_its_own_inverse():
    x = np.arange(2 * 5).reshape(2, 5, 1)
    r = masking.reverse_valid(x, np.array([3, 5]))
    assert r[..., 0].tolist() == [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]]
    assert (masking.reverse_valid(r, np.array([3, 5])) == x).all()


@pytest.mark.parametrize("bad", [[0, 2], [2, 6], [2.0, 3.0], [1, 2, 3]])
def test_lengths_are_checked(bad):
    with pytest.raises(ValueError):
        masking.check_lengths(np.array(bad), 2, 5)


# ------------------------------------------------------------ LSTM kernel

@pytest.mark.parametrize("cell", [None, 4])  # 4: a projected LSTM (cell_shape), gradient of P too
@pytest.mark.parametrize("go_backwards", [False, True])
def test_masked_lstm_finite_differences(go_backwards, cell):
    rng = rng_for("fd", go_backwards, cell)
    n, T, f, hs = 3, 5, 2, 3
    lengths = np.array([5, 2, 3])
    x = rng.standard_normal((n, T, f))
    args = [x, *lstm_weights(rng, f, hs, np.float64, cell)]
    y, cache = masked_lstm(*args[:4], lengths, go_backwards, *args[4:])
    assert (y[~masking.valid_mask(lengths, T)] == 0).all()
    R = rng.standard_normal(y.shape)
    grads = masking.backward_masked(R, cache)
    assert len(grads) == len(args)
    for i, g in enumerate(grads):
        a, num = args[i], np.zeros_like(args[i])
        for idx in np.ndindex(a.shape):
            old = a[idx]
            a[idx] = old + 1e-6
            lp = float((masked_lstm(*args[:4], lengths, go_backwards, *args[4:])[0] * R).sum())
            a[idx] = old - 1e-6
            lm = float((masked_lstm(*args[:4], lengths, go_backwards, *args[4:])[0] * R).sum())
            a[idx] = old
            num[idx] = (lp - lm) / 2e-6
        close(g, num, 1e-6, f"gradient {i}")
    # padded input steps get no gradient: nothing reads them
    assert (grads[0][~masking.valid_mask(lengths, T)] == 0).all()


TORCH_LSTM_NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "weight_hr_l0")


def torch_bilstm(x, lengths, fwd, bwd):
    """nn.LSTM(bidirectional=True) over a packed batch: (forward half, backward half), padded with 0.
    fwd, bwd: [W, H, b] or [W, H, b, P] (then proj_size)."""
    f, hs = x.shape[2], fwd[1].shape[1]
    proj = {"proj_size": hs} if len(fwd) == 4 else {}
    m = torch.nn.LSTM(f, fwd[0].shape[0] // 4, batch_first=True, bidirectional=True, **proj)
    with torch.no_grad():
        for suffix, ws in (("", fwd), ("_reverse", bwd)):
            for short, w in zip(TORCH_LSTM_NAMES, ws):
                getattr(m, short + suffix).copy_(torch.tensor(w))
            getattr(m, "bias_hh_l0" + suffix).zero_()
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths), batch_first=True,
                                                     enforce_sorted=False)
    out, _ = m(packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out[..., :hs], out[..., hs:], m


@pytest.mark.parametrize("cell", [None, 7])  # 7: projected (cell_shape=7 -> 5), PyTorch's proj_size
def test_masked_lstm_matches_pytorch_packed_bidirectional(cell):
    """Both directions against one nn.LSTM(bidirectional=True) on a packed batch: outputs, and the
    gradients of every weight and of x."""
    rng = rng_for("torch", *(() if cell is None else (cell,)))
    n, T, f, hs = 4, 7, 3, 5
    lengths = np.array([7, 1, 4, 6])
    x = rng.standard_normal((n, T, f)).astype(np.float32)
    x[~masking.valid_mask(lengths, T)] = 9.0  # padding that would show if it were read
    fwd, bwd = lstm_weights(rng, f, hs, np.float32, cell), lstm_weights(rng, f, hs, np.float32, cell)
    yf, cf = masked_lstm(x, *fwd[:3], lengths, False, *fwd[3:])
    yb, cb = masked_lstm(x, *bwd[:3], lengths, True, *bwd[3:])
    Rf, Rb = (rng.standard_normal(yf.shape).astype(np.float32) for _ in range(2))
    xt = torch.tensor(x, requires_grad=True)
    tf_, tb, m = torch_bilstm(xt, lengths, fwd, bwd)
    close(yf, tf_.detach(), 1e-5, "forward half")
    close(yb, tb.detach(), 1e-5, "backward half")
    ((tf_ * torch.tensor(Rf)).sum() + (tb * torch.tensor(Rb)).sum()).backward()
    dxf, *gf = masking.backward_masked(Rf, cf)
    dxb, *gb = masking.backward_masked(Rb, cb)
    close(dxf + dxb, xt.grad, 1e-5, "dx")
    for suffix, grads in (("", gf), ("_reverse", gb)):
        assert len(grads) == len(fwd)
        for short, g in zip(TORCH_LSTM_NAMES, grads):
            close(g, getattr(m, short + suffix).grad, 1e-5, short + suffix)


def test_full_lengths_equal_no_lengths():
    rng = rng_for("full")
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    W, H, b = lstm_weights(rng, 3, 2, np.float32)
    for back in (False, True):
        plain, _ = lstm.lstm_forward(x, W, H, b, back)
        masked, _ = masked_lstm(x, W, H, b, np.array([4, 4]), back)
        close(masked, plain, 1e-6, f"go_backwards={back}")


# gru_stab: CNTK's enable_self_stabilization (its alpha's gradient too), from the zero state it is limited to
@pytest.mark.parametrize("kind", ["lstm", "gru", "gru_stab"])
@pytest.mark.parametrize("back", [False, True])
def test_initial_state_starts_each_padded_sample(kind, back):
    """Recurrence initial_state on a padded batch: each sample starts from it at its first valid step
    (its last going backwards), as the same sample alone and unpadded; weight gradients likewise."""
    from netdsl.exec.kernels import gru

    rng = rng_for("initial-state", kind, back)
    x = rng.standard_normal((3, 5, 3)).astype(np.float32)
    lengths = np.array([5, 2, 4])
    init = 0.0 if kind == "gru_stab" else 0.6
    if kind == "lstm":
        ws = lstm_weights(rng, 3, 2, np.float32)
        fwd, bwd = (lambda v, gb=False: lstm.lstm_forward(v, *ws, gb, init=init)), lstm.lstm_backward
    else:
        ws = [(rng.standard_normal(s) * 0.5).astype(np.float32) for s in ((6, 3), (6, 2), (6,))]
        alpha = np.asarray(0.3, np.float32) if kind == "gru_stab" else None
        fwd, bwd = (lambda v, gb=False: gru.gru_forward(v, *ws, None, gb, init, alpha)), gru.gru_backward
    y, cache = masking.run_masked(fwd, bwd, x, lengths, back)
    R = rng.standard_normal(y.shape).astype(np.float32)
    _, *grads = masking.backward_masked(R, cache)
    want = [np.zeros_like(g) for g in grads if g is not None]
    for i, L in enumerate(lengths):
        alone, c = fwd(x[i:i + 1, :L].copy(), back)
        close(y[i, :L], alone[0], 1e-6, f"sample {i}")
        assert not y[i, L:].any()
        _, *g = bwd(R[i:i + 1, :L].copy(), c)
        want = [w + gi for w, gi in zip(want, (gi for gi in g if gi is not None))]
    for got, ref in zip((g for g in grads if g is not None), want):
        close(got, ref, 1e-5, "weight gradient")


# ------------------------------------------------------------ whole models

TAGGER = """
words = SequenceInput(vocab=20)
e = Embedding(4)(words)
h_fwd = Recurrence(LSTM(3))(e)
h_bwd = Recurrence(LSTM(3), go_backwards=True)(e)
h = splice([h_fwd, h_bwd])
tags = Dense(5)(h)
last = select_last(h_fwd)
first = select_first(h_bwd)
output tags, last, first
"""


def tagger(dtype=np.float64):
    g = load_text(TAGGER, "tagger.net")
    return g, {k: v.astype(dtype) for k, v in init_params(g, 0).items()}


def padded(rng, lengths, T, vocab=20):
    ids = rng.integers(1, vocab, (len(lengths), T))
    ids[~masking.valid_mask(lengths, T)] = 0
    return ids


def test_outputs_at_valid_positions_do_not_depend_on_the_padding_length():
    """The same batch padded to T and T + 5 (and padded with other ids): equal at valid positions,
    and each sample equal to itself run alone, unpadded."""
    g, params = tagger(np.float32)
    rng = rng_for("pad-len")
    lengths = np.array([6, 2, 4])
    ids = padded(rng, lengths, 6)
    ex = Executor(g, params, np.float32)
    a = ex.forward({"words": ids}, lengths={"words": lengths})
    longer = np.concatenate([ids, rng.integers(1, 20, (3, 5))], axis=1)
    b = ex.forward({"words": longer}, lengths={"words": lengths})
    mask = masking.valid_mask(lengths, 6)
    np.testing.assert_allclose(a["tags"][mask], b["tags"][:, :6][mask], rtol=1e-6, atol=1e-7)
    for name in ("last", "first"):
        np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=1e-7)
    for k, L in enumerate(lengths):
        alone = ex.forward({"words": ids[k:k + 1, :L]})
        np.testing.assert_allclose(a["tags"][k, :L], alone["tags"][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a["last"][k], alone["last"][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a["first"][k], alone["first"][0], rtol=1e-5, atol=1e-6)


def test_without_lengths_a_padded_backward_lstm_differs():
    """Why masks matter: unmasked, the backward LSTM reads the padding first."""
    g, params = tagger(np.float32)
    lengths = np.array([6, 2])
    ids = padded(rng_for("nomask"), lengths, 6)
    ex = Executor(g, params, np.float32)
    masked = ex.forward({"words": ids}, lengths={"words": lengths})["first"]
    plain = ex.forward({"words": ids})["first"]
    np.testing.assert_allclose(masked[0], plain[0], rtol=1e-6)  # full length: the same
    assert np.abs(masked[1] - plain[1]).max() > 1e-3


def test_model_gradients_finite_differences_with_lengths():
    """The graph's backward on a padded batch (embedding, both LSTMs, splice, dense, both
    selects, the masked loss) against central differences of the masked loss."""
    g, params = tagger(np.float64)
    rng = rng_for("graph-fd")
    lengths = np.array([5, 2, 3])
    ids = padded(rng, lengths, 5)
    labels = rng.integers(0, 5, (3, 5))
    mask = masking.valid_mask(lengths, 5)
    R_last, R_first = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))

    def loss_and_grads(need):
        ex = Executor(g, params, np.float64)
        out = ex.forward({"words": ids}, lengths={"words": lengths})
        loss, d = masked_loss(losses.softmax_cross_entropy, out["tags"], labels, mask)
        loss += float((out["last"] * R_last).sum() + (out["first"] * R_first).sum())
        grads = ex.backward({"tags": d, "last": R_last, "first": R_first}) if need else None
        return loss, grads

    _, grads = loss_and_grads(True)
    pick = np.random.default_rng(0)
    for name, p in params.items():
        for _ in range(4):
            idx = tuple(int(pick.integers(0, s)) for s in p.shape)
            if name.endswith(".E"):
                idx = (int(ids[mask][pick.integers(0, mask.sum())]),) + idx[1:]  # a row the batch reads
            old = p[idx]
            p[idx] = old + 1e-6
            lp = loss_and_grads(False)[0]
            p[idx] = old - 1e-6
            lm = loss_and_grads(False)[0]
            p[idx] = old
            num = (lp - lm) / 2e-6
            assert abs(grads[name][idx] - num) <= 1e-6 * max(1.0, abs(num)), (name, idx, grads[name][idx], num)


def test_padding_ids_change_no_gradient():
    """Padding is never read: two paddings of one batch give the same weight gradients."""
    g, params = tagger(np.float32)
    lengths = np.array([4, 1])
    mask = masking.valid_mask(lengths, 4)
    grads = []
    for pad in (0, 7):
        ids = np.where(mask, np.array([[1, 2, 3, 4], [5, 6, 6, 6]]), pad)
        ex = Executor(g, params, np.float32)
        out = ex.forward({"words": ids}, lengths={"words": lengths})
        _, d = masked_loss(losses.softmax_cross_entropy, out["tags"], np.zeros((2, 4), np.int64), mask)
        grads.append(ex.backward({"tags": d}))
    for k in grads[0]:
        np.testing.assert_allclose(grads[0][k], grads[1][k], rtol=1e-5, atol=1e-7, err_msg=k)
    assert not grads[1]["embedding_1.E"][7].any()  # the pad id 7 is never a real token here


def test_lengths_reach_only_sequence_inputs():
    g, params = tagger(np.float32)
    ex = Executor(g, params, np.float32)
    with pytest.raises(ValueError):
        ex.forward({"words": np.ones((2, 3), np.int64)}, lengths={"words": np.array([0, 3])})
    with pytest.raises(KeyError):
        ex.forward({"words": np.ones((2, 3), np.int64)}, lengths={"nope": np.array([1, 3])})


def test_bilstm_tagger_model_file_padded_matches_per_sample():
    """models/bilstm_tagger.net natively: a padded batch equals each sample run alone."""
    g = load("models/bilstm_tagger.net")
    params = init_params(g, 0)
    rng = rng_for("model-file")
    lengths = np.array([9, 3, 6, 1])
    ids = padded(rng, lengths, 9, vocab=943)
    ex = Executor(g, params, np.float32)
    out = ex.forward({"words": ids}, lengths={"words": lengths})["tags"]
    for k, L in enumerate(lengths):
        alone = ex.forward({"words": ids[k:k + 1, :L]})["tags"][0]
        np.testing.assert_allclose(out[k, :L], alone, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------ the PyTorch target

def generated(graph, target, tmp_path, name):
    import importlib.util

    from netdsl.emit.base import emit

    path = tmp_path / f"{name}.py"
    path.write_text(emit(graph, target))
    spec = importlib.util.spec_from_file_location(f"mask_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pytorch_bilstm_tagger_is_one_bidirectional_lstm_equal_on_padded_batches(tmp_path):
    """models/bilstm_tagger.net on PyTorch: ONE nn.LSTM(bidirectional=True) (issue 14); on a padded
    batch, its valid positions equal the native executor's; padding the same batch to T + 5 changes
    nothing at valid positions; without lengths the backward half reads the padding."""
    from netdsl.conformance import conformance_params
    from netdsl.exec.weights import save_weights

    g = load("models/bilstm_tagger.net")
    mod = generated(g, "pytorch", tmp_path, "bilstm")
    model = mod.build_model()
    lstms = [m for m in model.modules() if isinstance(m, torch.nn.LSTM)]
    assert len(lstms) == 1 and lstms[0].bidirectional
    params = conformance_params(g, 0)
    save_weights(tmp_path / "w.npz", params)
    mod.load_netdsl_weights(model, str(tmp_path / "w.npz"))
    rng = rng_for("torch-bilstm")
    lengths = np.array([8, 3, 5, 1])
    ids = padded(rng, lengths, 8, vocab=943)
    mask = masking.valid_mask(lengths, 8)
    native = Executor(g, params, np.float32).forward({"words": ids}, lengths={"words": lengths})["tags"]
    got = mod.predict(model, {"words": ids}, {"words": lengths})["tags"]
    close(got[mask], native[mask], 1e-5, "valid positions")
    longer = np.concatenate([ids, rng.integers(1, 943, (4, 5))], axis=1)
    got5 = mod.predict(model, {"words": longer}, {"words": lengths})["tags"]
    close(got5[:, :8][mask], got[mask], 1e-6, "padded to T + 5")
    unmasked = mod.predict(model, {"words": ids})["tags"]
    assert np.abs(unmasked[1, :3] - got[1, :3]).max() > 1e-4  # why lengths matter
    close(unmasked[0], got[0], 1e-5, "a full-length sample")


def test_pytorch_train_step_loss_and_gradients_on_valid_steps(tmp_path):
    """One plain-SGD train_step on a padded batch equals the native step with the masked loss; labels
    at padded positions change nothing."""
    from dataclasses import replace

    from netdsl.conformance import STEP_LR, native_step, step_graph
    from netdsl.exec.weights import save_weights

    g = step_graph(load("tests/traps/padded_backward.net"))
    g = replace(g, training=replace(g.training, optimizer_attrs=(("lr", STEP_LR), ("momentum", 0.0),
                                                                 ("nesterov", False))))
    mod = generated(g, "pytorch", tmp_path, "padded_backward")
    params = init_params(g, 0)
    save_weights(tmp_path / "w.npz", params)
    rng = rng_for("torch-step")
    lengths = np.array([6, 2, 4])
    ids = padded(rng, lengths, 6, vocab=12)
    labels = rng.integers(0, 5, (3, 6))
    want = native_step(g, params, {"words": ids}, labels, {"words": lengths})
    for junk in (0, 4):
        labels2 = np.where(masking.valid_mask(lengths, 6), labels, junk)
        model = mod.load_netdsl_weights(mod.build_model(), str(tmp_path / "w.npz"))
        mod.train_step(model, mod.make_trainer(model), {"words": ids}, labels2, {"words": lengths})
        mod.export_netdsl_weights(model, str(tmp_path / "out.npz"))
        got = dict(np.load(tmp_path / "out.npz"))
        for k, w in want.items():
            close(got[k], w, 1e-5, k)


# ------------------------------------------------------------ conformance

def test_conformance_feeds_padded_batches_and_compares_valid_positions(tmp_path):
    """`netdsl conformance` on the bilstm tagger and the padded_backward trap: the PyTorch column runs a
    truly padded batch (lengths drawn, padding written) and matches at valid positions, inference and
    one SGD step; so does the ONNX column (inference, lengths fed as words_lens)."""
    from netdsl import conformance as conf
    from netdsl.conformance_lengths import draw_lengths

    g = load("models/bilstm_tagger.net")
    inputs = conf.batch_for(g, 0)
    lengths = draw_lengths(g, inputs, 0)["words"]
    assert lengths.max() == inputs["words"].shape[1] and lengths.min() < lengths.max()
    assert (inputs["words"][~masking.valid_mask(lengths, inputs["words"].shape[1])] == 0).all()
    models = ["models/bilstm_tagger.net", "tests/traps/padded_backward.net"]
    cols = [c for c in conf.ALL_COLUMNS if c.name in ("pytorch", "onnx")]
    cells = conf.run(models, cols, workdir=str(tmp_path), log=lambda m: None)
    for m in models:
        cell = cells[(m, "pytorch")]
        assert cell.status == "pass" and cell.step_status == "pass" and not cell.reason, (m, cell)
        assert cells[(m, "onnx")].status == "pass" and not cells[(m, "onnx")].reason, cells[(m, "onnx")]


GRU_TAGGER = """
words = SequenceInput(vocab=20)
e = Embedding(4)(words)
h_fwd = Recurrence(GRU(3, reset_after=%s))(e)
h_bwd = Recurrence(GRU(3, reset_after=%s), go_backwards=True)(e)
h = splice([h_fwd, h_bwd])
tags = Dense(5)(h)
last = select_last(h_fwd)
first = select_first(h_bwd)
output tags, last, first
"""


@pytest.mark.parametrize("after", ["False", "True"])
def test_masked_gru_padding_length_invariance_and_finite_differences(after):
    """The GRU takes lengths as the LSTM does (masking.run_masked): valid positions do not depend on the
    padding, each sample equals itself run alone, and the masked gradients pass finite differences."""
    g = load_text(GRU_TAGGER % (after, after), "gru.net")
    params32 = init_params(g, 0)
    rng = rng_for("gru-pad", after)
    lengths = np.array([5, 2, 4])
    ids = padded(rng, lengths, 5)
    ex = Executor(g, params32, np.float32)
    a = ex.forward({"words": ids}, lengths={"words": lengths})
    longer = np.concatenate([ids, rng.integers(1, 20, (3, 4))], axis=1)
    b = ex.forward({"words": longer}, lengths={"words": lengths})
    mask = masking.valid_mask(lengths, 5)
    np.testing.assert_allclose(a["tags"][mask], b["tags"][:, :5][mask], rtol=1e-6, atol=1e-7)
    for k, L in enumerate(lengths):
        alone = ex.forward({"words": ids[k:k + 1, :L]})
        np.testing.assert_allclose(a["tags"][k, :L], alone["tags"][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a["first"][k], alone["first"][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a["last"][k], alone["last"][0], rtol=1e-5, atol=1e-6)
    params = {k: v.astype(np.float64) for k, v in params32.items()}
    ex64 = Executor(g, params, np.float64)
    R = {n: rng.standard_normal(a[n].shape) for n in ("tags", "last", "first")}

    def loss():
        out = ex64.forward({"words": ids}, training=True, lengths={"words": lengths}, rng=np.random.default_rng(0))
        return sum(float((out[n] * R[n]).sum()) for n in R)

    loss()
    grads = ex64.backward(R)
    for name in ("gru_1.W", "gru_2.H", "gru_1.b"):
        p = params[name]
        flat = p.reshape(-1)
        for i in rng.choice(flat.size, 4, replace=False):
            old = flat[i]
            flat[i] = old + 1e-6
            up = loss()
            flat[i] = old - 1e-6
            down = loss()
            flat[i] = old
            fd = (up - down) / 2e-6
            assert abs(fd - grads[name].reshape(-1)[i]) < 1e-6 * max(1, abs(fd)), (name, i)


@pytest.mark.parametrize("after", ["False", "True"])
def test_pytorch_gru_on_padded_batches_equals_native(after, tmp_path):
    from netdsl.conformance import conformance_params
    from netdsl.exec.weights import save_weights

    g = load_text(GRU_TAGGER % (after, after), "gru.net")
    mod = generated(g, "pytorch", tmp_path, f"gru_{after}")
    model = mod.build_model()
    params = conformance_params(g, 0)
    save_weights(tmp_path / "w.npz", params)
    mod.load_netdsl_weights(model, str(tmp_path / "w.npz"))
    lengths = np.array([6, 3, 1, 4])
    ids = padded(rng_for("torch-gru", after), lengths, 6)
    mask = masking.valid_mask(lengths, 6)
    native = Executor(g, params, np.float32).forward({"words": ids}, lengths={"words": lengths})
    got = mod.predict(model, {"words": ids}, {"words": lengths})
    close(got["tags"][mask], native["tags"][mask], 1e-5, "valid positions")
    close(got["last"], native["last"], 1e-5, "select_last")
    close(got["first"], native["first"], 1e-5, "select_first of the backward GRU")
