"""The generated PyTorch training script as a PyTorch user runs it (issue 14), on real torch, on the CPU.

- DDP: `torchrun --standalone --nproc_per_node=2` (gloo) runs 5 steps of the generated script; one
  process runs the same 5 steps from the same --init weights on the same global batches; the final
  weights agree within 1e-5. The ranks' k-th DataLoader batches together are the one-process k-th batch.
- Device: every model of models/ built on the `meta` device runs predict() and a training step up to
  the point where a number is copied out to the host, so nothing on the way is made on the CPU.
- Checkpoints: 2 epochs straight and 1 epoch + --resume 1 epoch give identical weights (dropout on,
  so the RNG state is restored too).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from netdsl import conformance as conf
from netdsl.emit.base import emit
from netdsl.exec.weights import init_params, save_weights
from netdsl.frontend import load, load_text

ROOT = Path(__file__).resolve().parent.parent
TINY_MLP = ROOT / "tests" / "data_models" / "tiny_mlp.net"
# tiny_mlp with dropout: a resumed run must restore the torch RNG to draw the same masks
DROPOUT_MLP = """model DropMlp
features = Input(4)
h = Dense(16, activation=relu)(features)
d = Dropout(0.5)(h)
z = Dense(3)(d)
output z
train {
    loss = cross_entropy_with_softmax
    optimizer = Adam(lr=0.02)
    batch_size = 16
    epochs = 2
}
"""


def blobs(n, seed):
    """Three separable Gaussian blobs in 4 dimensions, classes in turn."""
    rng = np.random.default_rng(seed)
    centres = np.array([[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0]], np.float32)
    y = np.arange(n) % 3
    return (centres[y] + rng.normal(0, 0.5, (n, 4))).astype(np.float32), y.astype(np.int64)


def write_script(graph, tmp_path, n=160):
    """The generated script, an npz dataset of n training samples and canonical --init weights."""
    script = tmp_path / "script.py"
    script.write_text(emit(graph, "pytorch"))
    x, y = blobs(n, 0)
    np.savez(tmp_path / "data.npz", x_train=x, y_train=y, x_test=x[:30], y_test=y[:30])
    save_weights(tmp_path / "init.npz", init_params(graph, 0))
    return script


def run(cmd, cwd, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=240, cwd=cwd, check=False,
                          env=dict(base, OMP_NUM_THREADS="1", **env))


def weights(path):
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def import_script(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main_of(mod, capsys, *argv):
    """(exit code or SystemExit's message, stdout, stderr) of the script's main(argv) in this process."""
    capsys.readouterr()
    try:
        mod.main([str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------ DDP
def test_ddp_two_ranks_match_one_process(tmp_path, capsys):
    """5 steps of 16 samples (8 per rank), from the same --init weights."""
    graph = load(str(TINY_MLP))
    script = write_script(graph, tmp_path)
    common = ["--data", f"npz:{tmp_path / 'data.npz'}", "--init", tmp_path / "init.npz", "--max-steps", "5"]
    # torchrun's own scratch dir (torchelastic_*) outlived some runs in /tmp: keep it under tmp_path
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    ddp = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script,
               *common, "--out-dir", tmp_path / "ddp"], tmp_path, TMPDIR=str(scratch))
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("epoch 1/") == 1, "rank 0 alone logs"  # the other rank trains silently
    code, _, _ = main_of(import_script(script, "one"), capsys, *common, "--out-dir", tmp_path / "one")
    assert code == 0
    got, want = (weights(tmp_path / d / f"{graph.name}.npz") for d in ("ddp", "one"))
    start = weights(tmp_path / "init.npz")
    for name in want:
        assert np.abs(want[name] - start[name]).max() > 1e-3, f"{name}: 5 steps did not move it"
        np.testing.assert_allclose(got[name], want[name], atol=1e-5, rtol=0, err_msg=name)
    # rank 0 alone writes: the state_dict, the canonical weights and the torch.export program
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == [f"{graph.name}.{e}" for e in ("npz", "pt", "pt2")]


def test_ranks_batches_make_up_the_one_process_batch(tmp_path):
    """DistributedSampler + BatchSampler: rank r's batch k is every 2nd sample of the global batch k."""
    mod = import_script(write_script(load(str(TINY_MLP)), tmp_path), "ddp_batches")
    x = np.arange(40, dtype=np.float32)[:, None]
    y = np.arange(40)
    for epoch in (1, 2):
        loaders = [mod.make_loader(x, y, b, seed=3, rank=r, world=w) for b, r, w in ((8, 0, 1), (4, 0, 2), (4, 1, 2))]
        for loader in loaders:
            loader.sampler.sampler.set_epoch(epoch)
        one, rank0, rank1 = ([y.numpy() for _, y in loader] for loader in loaders)
        assert len(one) == len(rank0) == len(rank1) == 5
        for k in range(5):
            assert sorted(np.concatenate([rank0[k], rank1[k]])) == sorted(one[k])
    assert not np.array_equal(np.concatenate(one), y), "shuffled"


def test_batch_size_must_split_over_the_ranks(tmp_path, monkeypatch, capsys):
    mod = import_script(write_script(load(str(TINY_MLP)), tmp_path), "split")
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, _, err = main_of(mod, capsys, "--data", f"npz:{tmp_path / 'data.npz'}", "--batch-size", "15")
    assert code == 2 and "--batch-size 15 does not split evenly over 2 processes" in err


# --------------------------------------------------------------- devices
MODELS = sorted(p.stem for p in (ROOT / "models").glob("*.net"))


@pytest.mark.parametrize("model", MODELS)
def test_meta_device_predict_and_train(model, tmp_path):
    """On `meta`, a tensor made on the CPU meets the model's and fails with 'not on the expected device';
    so predict() must get as far as copying its output to the host, and a training step as far as
    reading its loss (.item()): the only two places where the script leaves the device."""
    graph = load(str(ROOT / "models" / f"{model}.net"))
    path = tmp_path / f"{model}.py"
    path.write_text(emit(graph, "pytorch"))
    mod = import_script(path, f"meta_{model}")
    torch.manual_seed(0)
    with torch.device("meta"):
        net = mod.build_model()
    assert {p.device.type for p in net.parameters()} == {"meta"}
    inputs = conf.batch_for(graph, 0, n=2, steps=3)
    with pytest.raises(NotImplementedError, match="Cannot copy out of meta tensor"):
        mod.predict(net, inputs)
    with torch.no_grad():
        outputs = net(*mod.to_tensors(inputs, torch.device("meta")))
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    shapes = {o: np.zeros(tuple(z.shape), np.float32) for o, z in zip(graph.outputs, outputs)}
    targets = conf.targets_for(graph, shapes, 0)
    trainer = mod.make_trainer(net)
    # a sequence loss keeps the valid steps (a boolean mask: nonzero()), whose count meta cannot know;
    # without lengths every step is valid, which is exactly what this switch makes meta assume
    from torch.fx.experimental import _config as fx_config

    with fx_config.patch(meta_nonzero_assume_all_nonzero=True):
        loss = mod.fit_batch(net, trainer, inputs, targets)
        assert loss.device.type == "meta" and loss.shape == ()
        assert all(p.grad.device.type == "meta" for p in net.parameters() if p.requires_grad)
        with pytest.raises(RuntimeError, match="cannot be called on meta tensors"):
            mod.train_step(net, trainer, inputs, targets)
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert mod.pick_device("auto") == torch.device("cpu")


def test_unavailable_device_is_a_usage_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    mod = import_script(write_script(load(str(TINY_MLP)), tmp_path), "nocuda")
    code, _, err = main_of(mod, capsys, "--data", f"npz:{tmp_path / 'data.npz'}", "--device", "cuda")
    assert code == 2 and "--device cuda: not available on this machine" in err


# ----------------------------------------------------------- checkpoints
def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, capsys):
    """Straight and first epoch in this process, the resumed epoch in a fresh one, as a user runs it."""
    graph = load_text(DROPOUT_MLP, "drop_mlp.net")
    script = write_script(graph, tmp_path)
    mod = import_script(script, "resume")
    common = ["--data", f"npz:{tmp_path / 'data.npz'}", "--init", str(tmp_path / "init.npz")]
    code, straight, _ = main_of(mod, capsys, *common, "--epochs", "2", "--out-dir", str(tmp_path / "straight"))
    assert code == 0
    ckpt = tmp_path / "ck" / "run.pt"
    ckpt.parent.mkdir()
    code, _, _ = main_of(mod, capsys, *common, "--epochs", "1", "--checkpoint", str(ckpt), "--out-dir",
                         str(tmp_path / "first"))
    assert code == 0
    resumed = run([sys.executable, script, *common, "--epochs", "2", "--checkpoint", ckpt, "--resume", "--out-dir",
                   tmp_path / "resumed"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.startswith("epoch 2/2:"), "resumed after epoch 1"
    assert resumed.stdout == straight.splitlines(keepends=True)[1]
    a, b = weights(tmp_path / "straight" / f"{graph.name}.npz"), weights(tmp_path / "resumed" / f"{graph.name}.npz")
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    assert os.listdir(ckpt.parent) == ["run.pt"], "no temporary file left beside the checkpoint"
    state = torch.load(ckpt, weights_only=True)  # loadable without unpickling code
    assert state["epoch"] == 2 and state["step"] == 2 * 10
    assert set(state["rng"]) >= {"torch", "numpy", "python", "loader"}


def test_resume_refuses_a_missing_or_broken_checkpoint(tmp_path, capsys):
    mod = import_script(write_script(load(str(TINY_MLP)), tmp_path), "broken")
    common = ["--data", f"npz:{tmp_path / 'data.npz'}", "--epochs", "1"]
    code, _, err = main_of(mod, capsys, *common, "--checkpoint", str(tmp_path / "none.pt"), "--resume")
    assert code == 2 and "--resume: no checkpoint at" in err
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    code, _, err = main_of(mod, capsys, *common, "--checkpoint", str(tmp_path / "bad.pt"), "--resume")
    # a message, so the script exits with status 1 and no traceback
    assert str(code).startswith(f"error: checkpoint {tmp_path / 'bad.pt'}: cannot resume from it ("), code
    assert (tmp_path / "bad.pt").read_bytes() == b"not a checkpoint"


def test_amp_on_the_cpu_trains_in_bfloat16(tmp_path, capsys):
    graph = load(str(TINY_MLP))
    mod = import_script(write_script(graph, tmp_path), "amp")
    code, out, _ = main_of(mod, capsys, "--data", f"npz:{tmp_path / 'data.npz'}", "--init", str(tmp_path / "init.npz"),
                           "--amp", "--epochs", "2", "--out-dir", str(tmp_path / "amp"))
    assert code == 0
    assert float(out.split("test accuracy ")[-1]) >= 0.9, out
    got = weights(tmp_path / "amp" / f"{graph.name}.npz")
    assert all(a.dtype == np.float32 and np.isfinite(a).all() for a in got.values())
