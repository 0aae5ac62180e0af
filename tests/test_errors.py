"""Every file in tests/errors/ fails with exactly its pinned diagnostics, and never a traceback.

Update the pins after an intended change with:
    NETDSL_UPDATE_GOLDEN=1 python -m pytest tests/test_errors.py
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CASES = sorted((HERE / "errors").glob("*.net"))
UPDATE = os.environ.get("NETDSL_UPDATE_GOLDEN") == "1"


def run_check(path: Path) -> subprocess.CompletedProcess:
    rel = path.relative_to(ROOT)
    return subprocess.run([sys.executable, "-m", "netdsl", "check", "-q", str(rel)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_there_are_at_least_30_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_error_is_pinned(path):
    proc = run_check(path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first.startswith(f"tests/errors/{path.name}:") and ": error: " in first and first.endswith("]")
    expected = path.with_suffix(".expected")
    if UPDATE or not expected.exists():
        expected.write_text(proc.stderr)
        if not UPDATE:
            pytest.fail(f"wrote missing pin {expected.name}; review it and commit")
    assert proc.stderr == expected.read_text(), (
        "diagnostic changed; if intended, run: NETDSL_UPDATE_GOLDEN=1 python -m pytest tests/test_errors.py")
