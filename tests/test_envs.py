"""The side environments (made by scripts/envs.sh) exist and hold the expected
frameworks.

scripts/test.sh exports
  NETDSL_LEGACY_PYTHON     .venvs/legacy/bin/python   (tensorflow 2.15.1 + mxnet 1.9.1)
  NETDSL_CNTK_PYTHON       .venvs/cntk/bin/python-cntk (cntk 2.7), or empty, and then
  NETDSL_CNTK_UNAVAILABLE  why CNTK could not be set up on this machine.

Each test runs the framework in a subprocess of its own venv.  A missing venv
is never a silent pass: the test is SKIPPED with a loud reason
("CNTK NOT EXECUTED: ..." / "LEGACY NOT EXECUTED: ...").
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / ".venvs" / "envs.json"


def _run(python, code, timeout=300):
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("KERAS_HOME", str(ROOT / ".venvs" / "keras-home"))
    proc = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, timeout=timeout, env=env
    )
    assert proc.returncode == 0, (
        f"{python} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    )
    # The last line is our JSON; frameworks may print banners before it.
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _legacy_python():
    py = os.environ.get("NETDSL_LEGACY_PYTHON", "")
    if not py:
        pytest.skip("LEGACY NOT EXECUTED: NETDSL_LEGACY_PYTHON is not set "
                    "(run the suite through scripts/test.sh, which builds .venvs/legacy)")
    assert os.access(py, os.X_OK), f"NETDSL_LEGACY_PYTHON={py} is not executable"
    return py


def _cntk_python():
    py = os.environ.get("NETDSL_CNTK_PYTHON", "")
    if not py:
        reason = os.environ.get("NETDSL_CNTK_UNAVAILABLE") or (
            "NETDSL_CNTK_PYTHON is not set (run the suite through scripts/test.sh)")
        pytest.skip(f"CNTK NOT EXECUTED: {reason}")
    assert os.access(py, os.X_OK), f"NETDSL_CNTK_PYTHON={py} is not executable"
    return py


def test_legacy_tensorflow_estimator_version():
    out = _run(_legacy_python(), (
        "import json, tensorflow as tf, numpy as np;"
        "from importlib.metadata import version;"
        "assert hasattr(tf.estimator, 'Estimator');"
        "print(json.dumps({'tf': tf.__version__, 'est': version('tensorflow-estimator'),"
        " 'np': np.__version__}))"
    ))
    assert out["tf"] == "2.15.1"
    assert out["est"].startswith("2.15")
    assert out["np"] == "1.23.5"


def test_legacy_mxnet_version():
    out = _run(_legacy_python(), (
        "import json, mxnet as mx;"
        "from mxnet import gluon, nd;"
        "net = gluon.nn.HybridSequential(); net.add(gluon.nn.Dense(2)); net.initialize();"
        "y = net(nd.ones((1, 3)));"
        "print(json.dumps({'mx': mx.__version__, 'shape': list(y.shape)}))"
    ))
    assert out["mx"] == "1.9.1"
    assert out["shape"] == [1, 2]


def test_cntk_version():
    out = _run(_cntk_python(), (
        "import json, sys, cntk as C, numpy as np;"
        "x = C.input_variable(3); m = C.layers.Dense(2)(x);"
        "r = m.eval({x: np.ones((1, 3), dtype=np.float32)});"
        "print(json.dumps({'cntk': C.__version__, 'py': list(sys.version_info[:2]),"
        " 'shape': list(np.asarray(r).shape)}))"
    ))
    assert out["cntk"] == "2.7"
    assert out["py"] == [3, 6]
    assert out["shape"][-1] == 2


def test_manifest_lists_the_venvs():
    """envs.json (written by scripts/envs.sh) says where each python is."""
    if not MANIFEST.exists():
        pytest.skip(f"ENVS NOT BUILT: {MANIFEST} missing (run scripts/setup.sh)")
    m = json.loads(MANIFEST.read_text())
    assert set(m) >= {"main", "legacy", "cntk"}
    assert m["main"]["ready"], "main venv not marked ready"
    assert Path(m["main"]["python"]).exists()
    if os.environ.get("NETDSL_LEGACY_PYTHON"):
        assert Path(m["legacy"]["python"]) == Path(os.environ["NETDSL_LEGACY_PYTHON"])
        assert m["legacy"]["installed"].get("tensorflow-cpu") == "2.15.1"
    if os.environ.get("NETDSL_CNTK_PYTHON"):
        assert Path(m["cntk"]["python"]) == Path(os.environ["NETDSL_CNTK_PYTHON"])
    if not m["cntk"]["ready"]:
        # An unavailable CNTK must be recorded with a reason, not be silently absent.
        assert m["cntk"].get("unavailable"), "CNTK venv neither ready nor recorded as unavailable"


def test_main_venv_is_this_interpreter_when_run_by_test_sh():
    main_py = os.environ.get("NETDSL_MAIN_PYTHON")
    if not main_py:
        pytest.skip("MAIN VENV CHECK NOT EXECUTED: NETDSL_MAIN_PYTHON not set (not run by scripts/test.sh)")
    assert Path(sys.prefix).resolve() == Path(main_py).parent.parent.resolve()
    import numba
    import numpy
    import torch

    assert torch.__version__.startswith("2.13.0")
    assert torch.version.cuda is None
    assert tuple(int(p) for p in numpy.__version__.split(".")[:2]) >= (2, 0)
    assert numba.__version__
