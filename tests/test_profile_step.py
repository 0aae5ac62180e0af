"""bench/profile_step.py runs on a tiny batch: every step part gets its row, the LSTM's time splits into
the instrumented categories, and the kernel modules are left as they were."""
import importlib.util
import math
import re
from pathlib import Path

import numpy as np

from netdsl.exec.kernels import lstm

ROOT = Path(__file__).resolve().parent.parent


def test_profile_step_row_lstm_tiny():
    spec = importlib.util.spec_from_file_location("netdsl_bench_profile_step", ROOT / "bench" / "profile_step.py")
    prof = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prof)
    gemm_fn = lstm.np.matmul
    text = prof.profile("row_lstm", 1, steps=2, top=3, batch_size=4)
    assert lstm.np is np and lstm.np.matmul is gemm_fn
    assert type(lstm._lstm_gates_cell).__name__ == "CPUDispatcher"
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line
            for line in text.splitlines() if line.startswith("| ") and line.count("|") == 12}  # the step table
    for part in ("rows_scaled", "lstm_1", "select_last_1", "dense_1"):
        assert (part, "forward") in rows and (part, "backward") in rows
    cells = [c.strip() for c in rows[("lstm_1", "forward")].strip("|").split("|")]
    total, gemm, numba_ms, elementwise = (float(cells[i]) for i in (2, 3, 6, 7))
    assert total > 0 and gemm > 0 and numba_ms > 0 and elementwise > 0
    assert gemm + numba_ms + elementwise <= total + 0.01
    # the recurrent GEMM (batch x units x 4 units) was recorded, once per step after the first
    assert re.search(r"\| lstm_1 \| forward \| 4 x 128 x 512 \(CC, 1\) \| 27 \|", text)
    torch_rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(torch_rows) == 3 and all(math.isfinite(float(r.split("|")[2])) for r in torch_rows)
