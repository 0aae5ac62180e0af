"""`netdsl run`'s files (issue 17, items 2, 4 and 7): outputs are checked before
training, never replace an input, a FIFO or a directory, keep an existing
file's mode; an existing checkpoint needs --resume or --overwrite; FIFOs given
as inputs are refused instead of blocking; stale temp files of killed runs are
removed at start-up, a live writer's are not."""
from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from netdsl.cli import main
from netdsl.exec.weights import init_params, save_weights
from netdsl.frontend import load
from netdsl.fsutil import TMP_SUFFIX

from test_exec_train import needs_mnist

REPO = Path(__file__).resolve().parent.parent
SRC = (REPO / "models" / "mlp_relu.net").read_text()
QUICK = ["--limit-train", "64", "--limit-test", "64", "--epochs", "1", "--no-progress"]


@pytest.fixture
def model(tmp_path):
    m = tmp_path / "m.net"
    m.write_text(SRC)
    return m


def _run(capsys, *args):
    rc = main(["run", *map(str, args)])
    return rc, capsys.readouterr()


@pytest.mark.parametrize("flag", ["--save", "--checkpoint"])
def test_an_output_over_the_model_source_is_refused(model, capsys, flag):
    extra = ["--overwrite"] if flag == "--checkpoint" else []
    rc, out = _run(capsys, model, flag, model, *extra, *QUICK)
    assert rc == 1 and "is also an input of this command" in out.err and "[E608]" in out.err
    assert model.read_text() == SRC and "epoch" not in out.out


def test_an_output_over_an_imported_file_is_refused(tmp_path, capsys):
    lib = tmp_path / "lib.net"
    lib.write_text("def Hidden(n) = Dense(n, activation=relu)\n")
    main_net = tmp_path / "main.net"
    main_net.write_text('import "lib.net"\nmodel M\nx = Input(784)\nh = Hidden(32)(x)\nz = Dense(10)(h)\noutput z\n'
                        'train {\n    dataset = "mnist"\n}\n')
    before = lib.read_text()
    rc, out = _run(capsys, main_net, "--save", lib, *QUICK)
    assert rc == 1 and "is also an input of this command" in out.err, out.err
    assert lib.read_text() == before


def test_save_over_the_loaded_weights_is_refused(model, tmp_path, capsys):
    w = tmp_path / "w.npz"
    save_weights(w, init_params(load(str(model)), 0))
    before = w.read_bytes()
    rc, out = _run(capsys, model, "--load", w, "--save", w, *QUICK)
    assert rc == 1 and "also an input" in out.err and w.read_bytes() == before


@pytest.mark.parametrize("flag", ["--save", "--checkpoint"])
def test_fifo_and_directory_outputs_are_refused_before_training(model, tmp_path, capsys, flag):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    rc, out = _run(capsys, model, flag, fifo, "--overwrite", *QUICK)
    assert rc == 1 and "not a regular file" in out.err and stat.S_ISFIFO(os.stat(fifo).st_mode)
    rc, out = _run(capsys, model, flag, tmp_path, "--overwrite", *QUICK)
    assert rc == 1 and "is a directory [E608]" in out.err and "epoch" not in out.out


def test_save_and_checkpoint_on_one_file_is_refused(model, tmp_path, capsys):
    rc, out = _run(capsys, model, "--save", tmp_path / "a.npz", "--checkpoint", tmp_path / "a.npz", *QUICK)
    assert rc == 1 and "name the same file [E608]" in out.err


def test_an_existing_checkpoint_needs_resume_or_overwrite(model, tmp_path, capsys):
    ck = tmp_path / "ck.npz"
    ck.write_bytes(b"precious")
    rc, out = _run(capsys, model, "--checkpoint", ck, *QUICK)
    assert rc == 1 and "already exists" in out.err and "--overwrite" in out.err and "[E608]" in out.err
    assert ck.read_bytes() == b"precious"


def test_fifo_inputs_are_refused_not_waited_for(model, tmp_path, capsys):
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    rc, out = _run(capsys, model, "--load", fifo, "--eval-only", "--data-dir", tmp_path / "nodata")
    assert rc == 1 and f"{fifo}:1:1: error: not a regular file" in out.err and "[E601]" in out.err
    rc, out = _run(capsys, model, "--checkpoint", fifo, "--resume", "--eval-only")
    assert rc == 1 and "not a regular file" in out.err and "[E601]" in out.err
    rc, out = _run(capsys, model, "--checkpoint", fifo, "--resume", *QUICK)
    assert rc == 1 and "not a regular file" in out.err and "[E608]" in out.err


def test_stale_temps_are_removed_and_a_live_writer_is_left_alone(model, tmp_path, capsys):
    ck = tmp_path / "ck.npz"
    stale = tmp_path / f".ck.npz.abc123{TMP_SUFFIX}"
    live = tmp_path / f".ck.npz.def456{TMP_SUFFIX}"
    other = tmp_path / f".other.npz.abc123{TMP_SUFFIX}"
    for p in (stale, live, other):
        p.write_bytes(b"x" * 100)
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    # Fails after the start-up checks: the dataset is not there.
    rc, out = _run(capsys, model, "--checkpoint", ck, "--data", "nosuchdata", "--data-dir", tmp_path)
    assert rc == 1 and "nosuchdata" in out.err
    assert not stale.exists() and live.exists() and other.exists()


@needs_mnist
def test_an_existing_file_keeps_its_mode_a_new_one_gets_the_umask(model, tmp_path, capsys):
    old = tmp_path / "old.npz"
    old.write_bytes(b"previous weights")
    os.chmod(old, 0o640)
    ck = tmp_path / "ck.npz"
    mask = os.umask(0o027)
    try:
        rc, out = _run(capsys, model, "--save", old, "--checkpoint", ck, *QUICK)
    finally:
        os.umask(mask)
    assert rc == 0, out.err
    assert stat.S_IMODE(os.stat(old).st_mode) == 0o640 and np.load(old)["dense_1.W"].shape == (200, 784)
    assert stat.S_IMODE(os.stat(ck).st_mode) == 0o640  # 0o666 & ~0o027
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(TMP_SUFFIX)] == []
    # The checkpoint now exists: a second run must say --resume or --overwrite.
    rc, out = _run(capsys, model, "--checkpoint", ck, *QUICK)
    assert rc == 1 and "already exists" in out.err
    rc, out = _run(capsys, model, "--checkpoint", ck, "--overwrite", *QUICK)
    assert rc == 0, out.err


def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 8, arr.ndim]) + b"".join(n.to_bytes(4, "big") for n in arr.shape) + arr.tobytes()


@pytest.mark.parametrize("flag", ["--save", "--checkpoint"])
@pytest.mark.parametrize("kind", ["idx", "npz"])
def test_an_output_over_a_dataset_file_is_refused(model, tmp_path, capsys, flag, kind):
    """Found by bench/hostile.py: `--save tiny/train-labels-idx1-ubyte` trained and then replaced the
    labels with weights. The dataset's files are inputs of the run too."""
    rng = np.random.default_rng(0)
    x = {s: rng.integers(0, 255, (n, 28, 28), dtype=np.uint8) for s, n in (("train", 32), ("test", 16))}
    y = {s: rng.integers(0, 10, len(x[s]), dtype=np.uint8) for s in x}
    if kind == "idx":
        (tmp_path / "tiny").mkdir()
        for s, name in (("train", "train"), ("test", "t10k")):
            (tmp_path / "tiny" / f"{name}-images-idx3-ubyte").write_bytes(_idx(x[s]))
            (tmp_path / "tiny" / f"{name}-labels-idx1-ubyte").write_bytes(_idx(y[s]))
        data, target = ["--data", "tiny", "--data-dir", tmp_path], tmp_path / "tiny" / "train-labels-idx1-ubyte"
    else:
        target = tmp_path / "d.npz"
        np.savez(target, x_train=x["train"], y_train=y["train"], x_test=x["test"], y_test=y["test"])
        data = ["--data", target]
    before = target.read_bytes()
    extra = ["--overwrite"] if flag == "--checkpoint" else []
    rc, out = _run(capsys, model, *data, flag, target, *extra, "--epochs", "1", "--no-progress")
    assert rc == 1 and "is also an input of this command" in out.err and "[E608]" in out.err, out.err
    assert target.read_bytes() == before and "epoch" not in out.out
