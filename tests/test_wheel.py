"""netdsl as a user installs it: a wheel in a fresh venv, outside the source tree.

The wheel is built from a copy of the tree (so the checkout gets no build/ or egg-info), installed into a
new venv under tmp_path, and used from a working directory that holds only copies of the models:
  - first with only the front-end dependencies (no numba, no frameworks): --version, check, summary and
    compile for every target must work, which also proves that compile never imports numba;
  - then with numba and tqdm added: a short `netdsl run` on MNIST.
Packages come from the pinned versions in requirements/main.txt (pip's cache or the index).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PINS = ROOT / "requirements" / "main.txt"
TARGETS = ("pytorch", "keras", "tf-estimator", "gluon", "cntk")
SKIP_DIRS = {".git", ".venvs", "tests", "bench", "build", "dist", "__pycache__", ".pytest_cache", ".hypothesis"}


def _run(cmd, cwd, env=None, timeout=600):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _clean_env():
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=lambda d, names: [n for n in names if n in SKIP_DIRS or n.endswith(".egg-info")])
    dist = base / "dist"
    env = _clean_env()
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "-o", str(dist), str(src)], cwd=base, env=env)
    shutil.rmtree(src)
    wheels = list(dist.glob("netdsl-*.whl"))
    assert len(wheels) == 1, wheels
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=base, env=env)
    py = venv / "bin" / "python"
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheels[0])], cwd=base, env=env)
    # only what the front end and the emitters need
    _run([str(py), "-m", "pip", "install", "-q", "-c", str(PINS), "lark", "jinja2", "MarkupSafe", "numpy"],
         cwd=base, env=env)
    work = base / "work"
    shutil.copytree(ROOT / "models", work / "models")
    return {"base": base, "py": py, "netdsl": venv / "bin" / "netdsl", "work": work, "env": env}


def test_front_end_and_every_target_from_the_wheel(wheel_venv):
    w = wheel_venv
    exe, work, env = str(w["netdsl"]), w["work"], w["env"]
    out = _run([exe, "--version"], cwd=work, env=env).stdout
    import netdsl
    assert out.strip() == f"netdsl {netdsl.__version__}"
    # the installed package, not the checkout
    where = _run([str(w["py"]), "-c", "import netdsl; print(netdsl.__file__)"], cwd=work, env=env).stdout
    assert str(ROOT) not in where and "site-packages" in where
    models = sorted(p.name for p in (work / "models").glob("*.net"))
    assert models
    _run([exe, "check", *[f"models/{m}" for m in models]], cwd=work, env=env)
    assert "Total params" in _run([exe, "summary", "models/keras_cnn.net"], cwd=work, env=env).stdout
    for target in TARGETS:
        for m in models:
            code = _run([exe, "compile", f"models/{m}", "--target", target], cwd=work, env=env).stdout
            compile(code, f"{m}:{target}", "exec")
    # no numba anywhere in this venv, so the commands above cannot have imported it
    r = subprocess.run([str(w["py"]), "-c", "import numba"], cwd=work, env=env, capture_output=True)
    assert r.returncode != 0


def test_short_native_run_from_the_wheel(wheel_venv):
    w = wheel_venv
    data = os.environ.get("NETDSL_DATA")
    if not data or not (Path(data) / "mnist").is_dir():
        pytest.skip("NETDSL_DATA with mnist/ is not set")
    _run([str(w["py"]), "-m", "pip", "install", "-q", "-c", str(PINS), "numba", "llvmlite", "tqdm"],
         cwd=w["base"], env=w["env"])
    env = dict(w["env"], NETDSL_DATA=data)
    if "NUMBA_CACHE_DIR" in os.environ:
        env["NUMBA_CACHE_DIR"] = os.environ["NUMBA_CACHE_DIR"]
    r = _run([str(w["netdsl"]), "run", "models/mlp_relu.net", "--data", "mnist", "--epochs", "1",
              "--limit-train", "2000"], cwd=w["work"], env=env, timeout=900)
    assert "accuracy" in (r.stdout + r.stderr).lower()
