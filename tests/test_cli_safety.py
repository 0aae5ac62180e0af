"""The command line never loses a user's file and never shows a traceback (issue 17, items 2, 4, 5).

Each test runs the real command (`python -m netdsl ...`) in a subprocess with a time bound, so a hang
fails the test instead of stalling the suite.
"""
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL = (ROOT / "models" / "mlp_relu.net").read_text(encoding="utf-8")


def netdsl(*args, cwd, stdout=subprocess.PIPE, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "netdsl", *map(str, args)], cwd=cwd, env=env, stdout=stdout,
                       stderr=subprocess.PIPE, timeout=timeout, text=True)
    assert "Traceback" not in r.stderr, r.stderr
    return r


@pytest.fixture
def model(tmp_path):
    p = tmp_path / "m.net"
    p.write_text(MODEL, encoding="utf-8")
    return p


def test_output_onto_the_model_source_is_refused(model, tmp_path):
    r = netdsl("compile", model.name, "--target", "pytorch", "-o", model.name, cwd=tmp_path)
    assert r.returncode == 1 and "also an input" in r.stderr
    assert model.read_text(encoding="utf-8") == MODEL


def test_output_onto_an_imported_file_is_refused(tmp_path):
    lib = tmp_path / "lib.net"
    lib.write_text("def Block(n) = Dense(n, activation=relu)\n", encoding="utf-8")
    main = tmp_path / "main.net"
    main.write_text('import "lib.net"\n' + MODEL, encoding="utf-8")
    before = lib.read_bytes()
    r = netdsl("compile", "main.net", "--target", "pytorch", "-o", "lib.net", cwd=tmp_path)
    assert r.returncode == 1 and "also an input" in r.stderr
    assert lib.read_bytes() == before


def test_output_onto_a_symlink_to_the_model_is_refused(model, tmp_path):
    (tmp_path / "out.py").symlink_to("m.net")
    r = netdsl("compile", model.name, "--target", "gluon", "-o", "out.py", cwd=tmp_path)
    assert r.returncode == 1 and "also an input" in r.stderr
    assert model.read_text(encoding="utf-8") == MODEL and (tmp_path / "out.py").is_symlink()


def test_output_onto_a_fifo_is_refused_and_the_fifo_kept(model, tmp_path):
    fifo = tmp_path / "out.py"
    os.mkfifo(fifo)
    r = netdsl("compile", model.name, "--target", "pytorch", "-o", fifo.name, cwd=tmp_path)
    assert r.returncode == 1 and "not a regular file" in r.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_output_onto_a_device_is_refused(model, tmp_path):
    before = os.stat("/dev/null")
    r = netdsl("compile", model.name, "--target", "pytorch", "-o", "/dev/null", cwd=tmp_path)
    assert r.returncode == 1 and "not a regular file" in r.stderr
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


def test_output_mode_follows_the_umask_and_an_existing_file_keeps_its_mode(model, tmp_path):
    old = os.umask(0o022)
    try:
        r = netdsl("compile", model.name, "--target", "pytorch", "-o", "new.py", cwd=tmp_path)
    finally:
        os.umask(old)
    assert r.returncode == 0
    assert stat.S_IMODE(os.stat(tmp_path / "new.py").st_mode) == 0o644
    os.chmod(tmp_path / "new.py", 0o640)
    r = netdsl("compile", model.name, "--target", "keras", "-o", "new.py", cwd=tmp_path)
    assert r.returncode == 0
    assert stat.S_IMODE(os.stat(tmp_path / "new.py").st_mode) == 0o640
    assert "keras" in (tmp_path / "new.py").read_text(encoding="utf-8")


def test_output_into_a_missing_directory(model, tmp_path):
    r = netdsl("compile", model.name, "--target", "pytorch", "-o", "nowhere/out.py", cwd=tmp_path)
    assert r.returncode == 1 and "does not exist" in r.stderr


def test_output_onto_a_directory(model, tmp_path):
    (tmp_path / "d").mkdir()
    r = netdsl("compile", model.name, "--target", "pytorch", "-o", "d", cwd=tmp_path)
    assert r.returncode == 1 and "is a directory" in r.stderr


def test_output_into_a_read_only_directory(model, tmp_path):
    if os.geteuid() == 0:
        target = "/proc/netdsl-out.py"  # not writable even for root
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        target = str(ro / "out.py")
    r = netdsl("compile", model.name, "--target", "pytorch", "-o", target, cwd=tmp_path)
    assert r.returncode == 1 and "error:" in r.stderr
    assert not os.path.exists(target)


def test_fifo_as_the_model_file_does_not_block(tmp_path):
    os.mkfifo(tmp_path / "m.net")
    for cmd in (["check", "m.net"], ["compile", "m.net", "--target", "pytorch"], ["summary", "m.net"],
                ["ir", "m.net"], ["ir", "--load", "m.net"]):
        r = netdsl(*cmd, cwd=tmp_path, timeout=60)
        assert r.returncode == 1 and "not a regular file" in r.stderr, (cmd, r.stderr)


def test_check_against_a_file_that_is_not_utf8(model, tmp_path):
    (tmp_path / "out.py").write_bytes(b"\xff\xfe\x00generated")
    r = netdsl("compile", model.name, "--target", "pytorch", "--check", "out.py", cwd=tmp_path)
    assert r.returncode == 1 and "not UTF-8" in r.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("cmd", [["compile", "m.net", "--target", "pytorch"], ["ir", "m.net"], ["summary", "m.net"]])
def test_full_disk_on_stdout(model, tmp_path, cmd):
    with open("/dev/full", "w") as full:
        r = netdsl(*cmd, cwd=tmp_path, stdout=full)
    assert r.returncode == 1 and "cannot write to standard output" in r.stderr
    assert "Exception ignored" not in r.stderr


def test_ir_load_of_deeply_nested_json(tmp_path):
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    r = netdsl("ir", "--load", "deep.json", cwd=tmp_path)
    assert r.returncode == 1 and "[E007]" in r.stderr


def test_ir_load_of_a_nan(model, tmp_path):
    good = netdsl("ir", "m.net", cwd=tmp_path).stdout
    doc = json.loads(good)
    assert netdsl("ir", "--load", "-", cwd=tmp_path).returncode == 1  # no such file: a diagnostic too
    (tmp_path / "good.json").write_text(good)
    assert netdsl("ir", "--load", "good.json", cwd=tmp_path).stdout == good
    doc["training"]["batch_size"] = float("nan")
    (tmp_path / "nan.json").write_text(json.dumps(doc))  # json.dumps writes the non-JSON token NaN
    r = netdsl("ir", "--load", "nan.json", cwd=tmp_path)
    assert r.returncode == 1 and "[E007]" in r.stderr and "NaN" in r.stderr


def test_check_against_a_fifo_does_not_block(model, tmp_path):
    os.mkfifo(tmp_path / "out.py")
    r = netdsl("compile", model.name, "--target", "pytorch", "--check", "out.py", cwd=tmp_path, timeout=60)
    assert r.returncode == 1 and "not a regular file" in r.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_full_disk_on_stdout_of_a_command_that_prints(tmp_path):
    """`run` prints its progress with print(): main() flushes it and reports the failure itself."""
    sys.path.insert(0, str(ROOT / "bench"))
    import hostile

    for name, data in {"m.net": hostile.SMALL.encode(), **hostile.tiny_dataset()}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    with open("/dev/full", "w") as full:
        r = netdsl("run", "m.net", "--data", "tiny", "--data-dir", ".", "--epochs", "1", "--no-progress",
                   cwd=tmp_path, stdout=full, timeout=300)
    assert r.returncode == 1 and "cannot write" in r.stderr and "No space left" in r.stderr
    assert "Exception ignored" not in r.stderr


def test_dash_output_is_stdout_not_a_file(model, tmp_path):
    r = netdsl("compile", model.name, "--target", "pytorch", "-o", "-", cwd=tmp_path)
    assert r.returncode == 0 and "do not edit" in r.stdout.splitlines()[0]
    assert not (tmp_path / "-").exists()
