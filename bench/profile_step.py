"""Where one training step's time goes: the native executor, layer by layer, against
PyTorch under torch.profiler, for the models of bench/executor.py.

    .venvs/main/bin/python bench/profile_step.py                        # all three models, 1 and 2 threads
    .venvs/main/bin/python bench/profile_step.py --models row_lstm --threads 1

Native side: every executor step's kernel forward and backward is timed (wall
clock), and inside the LSTM and convolution kernels (exec/kernels/lstm.py,
conv.py) every numpy call and numba pass is timed by category while the step
runs: GEMM (np.matmul), numba passes, numpy elementwise (exp, add, maximum, ...),
copies and transposes (ascontiguousarray), allocation (empty, zeros, ...). What
is left of a kernel is "Python and untimed numpy": the interpreter, slicing,
and numpy calls outside those names. Each GEMM's shape is recorded and the same
shapes are then timed alone (same operand layouts, best of several), next to
the 1024^3 SGEMM, so a slow GEMM shows as either slow at that size or slow in
the step. The instrumentation itself costs a few microseconds per timed call:
the profiled step is compared with the same step unprofiled.

PyTorch side: the same network, batch and weights as bench/executor.py, one
step at a time under torch.profiler (CPU), its ops by self time.

Figures are medians over --steps steps after warm-up. The markdown printed is
meant to be pasted into bench/RESULTS.md; on a loaded machine it shows where
the time goes, not how fast anything is.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import math
import os
import statistics
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

BENCH = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("netdsl_bench_executor", BENCH / "executor.py")
bx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bx)  # puts the repository on sys.path

import numba
import numpy as np
import torch

from netdsl.exec import runtime, train
from netdsl.exec.kernels import conv, lstm
from netdsl.exec.weights import init_params
from netdsl.frontend import load

# numpy names timed inside the instrumented kernels, by category (the table's columns)
CATEGORIES = {
    "matmul": "gemm",
    "exp": "elementwise", "add": "elementwise", "multiply": "elementwise", "maximum": "elementwise",
    "greater": "elementwise", "sum": "elementwise",
    "ascontiguousarray": "copy",
    "empty": "alloc", "empty_like": "alloc", "zeros": "alloc", "full": "alloc",
}
COLUMNS = ("gemm", "numba", "elementwise", "copy", "alloc")
INSTRUMENTED = (lstm, conv)  # the kernel modules whose inner calls are timed


class Clock:
    """Seconds per (row, pass, category) for the current step, and GEMM shapes."""

    def __init__(self):
        self.where = None  # (row, pass) while a kernel runs
        self.t = defaultdict(float)
        self.gemms = defaultdict(lambda: [0, 0.0])  # (row, pass, shape key) -> [calls, seconds]
        self.threaded = set()  # (row, pass) whose timed calls ran on other threads too
        self.main = threading.get_ident()

    def timed(self, category, fn):
        def run(*args, **kwargs):
            if self.where is None:
                return fn(*args, **kwargs)
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            dt = time.perf_counter() - t0
            self.t[self.where + (category,)] += dt
            if threading.get_ident() != self.main:
                self.threaded.add(self.where)
            if category == "gemm":
                g = self.gemms[self.where + (_gemm_key(args[0], args[1]),)]
                g[0] += 1
                g[1] += dt
            return out
        return run


def _gemm_key(a, b):
    """(m, k, n, layout of a, layout of b, BLAS threads): 'C' row-major, 'F' a transposed view."""
    def lay(x):
        return "C" if x.flags.c_contiguous else "F" if x.flags.f_contiguous else "S"
    return (a.shape[0], a.shape[1], b.shape[1], lay(a), lay(b), runtime.blas_threads())


class _TimedNumpy:
    """numpy, with the names of CATEGORIES timed; stands in for a kernel module's `np`."""

    def __init__(self, clock):
        self._clock = clock

    def __getattr__(self, name):
        value = getattr(np, name)
        if name in CATEGORIES:
            value = self._clock.timed(CATEGORIES[name], value)
        setattr(self, name, value)  # looked up once
        return value


class _TimedKernel:
    def __init__(self, kernel, row, clock):
        self.kernel, self.row, self.clock = kernel, row, clock

    def _run(self, phase, fn, args):
        self.clock.where = (self.row, phase)
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.clock.t[(self.row, phase, "total")] += time.perf_counter() - t0
            self.clock.where = None

    def forward(self, *args):
        return self._run("forward", self.kernel.forward, args)

    def backward(self, *args):
        return self._run("backward", self.kernel.backward, args)


@contextlib.contextmanager
def instrumented(tr, clock):
    """Times the trainer's kernels, optimizer and the kernel modules' inner calls; undone on exit."""
    saved_steps = tr.ex.steps
    saved_step = tr.optimizer.step
    saved_mod = []
    try:
        tr.ex.steps = [st._replace(kernel=_TimedKernel(st.kernel, _row(st), clock)) for st in saved_steps]

        def opt_step(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return saved_step(*args, **kwargs)
            finally:
                clock.t[("optimizer", "", "total")] += time.perf_counter() - t0
        tr.optimizer.step = opt_step
        for mod in INSTRUMENTED:
            saved = dict(vars(mod))
            saved_mod.append((mod, saved))
            mod.np = _TimedNumpy(clock)
            for name, v in saved.items():
                if isinstance(v, numba.core.registry.CPUDispatcher):
                    setattr(mod, name, clock.timed("numba", v))
        yield
    finally:
        tr.ex.steps = saved_steps
        tr.optimizer.step = saved_step
        if "step" in vars(tr.optimizer):
            del tr.optimizer.step
        for mod, saved in saved_mod:
            for name, v in saved.items():
                setattr(mod, name, v)


def _row(st):
    return st.layer.name if st.fused is None else f"{st.layer.name} + {st.fused.name}"


# ------------------------------------------------------------------ measure

def setup(name, batch_size=None):
    g = load(bx.REPO / "models" / f"{name}.net")
    p0 = init_params(g, 0)
    tr = train.Trainer(g, {k: v.copy() for k, v in p0.items()}, bx.fake_dataset(),
                       train.Options(seed=0, batch_size=batch_size), log=lambda s: None)
    x, y = bx.batch(g, tr, tr.batch_size, np.random.default_rng(0))
    return g, p0, tr, x, y


def profile_native(tr, x, y, steps):
    """(per-step medians {(row, pass, category): s}, GEMM records, the step order of rows,
    unprofiled step median s, the (row, pass) that ran on several threads)."""
    rng = np.random.default_rng(0)
    plain = []
    for _ in range(steps):
        t0 = time.perf_counter()
        tr.train_step(x, y, rng)
        plain.append(time.perf_counter() - t0)
    per_step = defaultdict(list)
    gemms = defaultdict(list)  # key -> [(calls, s) per step]
    clock = Clock()
    with instrumented(tr, clock):
        tr.train_step(x, y, rng)  # the wrappers' own first call
        for _ in range(steps):
            clock.t.clear()
            clock.gemms.clear()
            t0 = time.perf_counter()
            tr.train_step(x, y, rng)
            step = clock.t[("step", "", "total")] = time.perf_counter() - t0
            inside = sum(v for (_, phase, c), v in clock.t.items() if phase in ("forward", "backward")
                         and c == "total")
            clock.t[("glue", "", "total")] = step - inside - clock.t[("optimizer", "", "total")]
            for k, v in clock.t.items():
                per_step[k].append(v)
            for k, (c, s) in clock.gemms.items():
                gemms[k].append((c, s))
    med = {k: statistics.median(v + [0.0] * (steps - len(v))) for k, v in per_step.items()}
    gemms = {k: (v[0][0], statistics.median(s for _, s in v)) for k, v in gemms.items()}
    rows = [_row(st) for st in tr.ex.steps]
    return med, gemms, rows, statistics.median(plain), clock.threaded


@functools.cache
def gemm_alone(key, reps=10):
    """Seconds of one np.matmul of this shape and operand layout, alone (best of reps), at the
    current BLAS thread count (measured once per shape and count: profile() clears the cache)."""
    m, k, n, la, lb, threads = key
    before = runtime.blas_threads()
    if threads is not None:
        runtime.set_blas_threads(threads)
    rng = np.random.default_rng(0)
    a = rng.random((m, k), dtype=np.float32) if la != "F" else np.asfortranarray(rng.random((m, k), dtype=np.float32))
    b = rng.random((k, n), dtype=np.float32) if lb != "F" else np.asfortranarray(rng.random((k, n), dtype=np.float32))
    out = np.empty((m, n), np.float32)
    np.matmul(a, b, out=out)
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    if before is not None:
        runtime.set_blas_threads(before)
    return best


def profile_torch(name, p0, x, y, steps, top):
    """(median step s unprofiled, [(op, self ms per step, share)], total self ms per step)."""
    fwd, net = bx.torch_model(name, p0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)  # the rate does not change the time
    tx, ty = torch.tensor(x), torch.tensor(y)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(fwd(tx), ty)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    plain = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        plain.append(time.perf_counter() - t0)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    ops = [(e.key, e.self_cpu_time_total / 1e3 / steps) for e in prof.key_averages()]
    total = sum(ms for _, ms in ops)
    ops.sort(key=lambda o: -o[1])
    return statistics.median(plain), [(k, ms, ms / total) for k, ms in ops[:top]], total


# ------------------------------------------------------------------- report

def _ms(s):
    return f"{1e3 * s:.2f}"


def native_table(med, gemms, rows, plain, sgemm, threaded=()):
    flops = defaultdict(float)
    alone = defaultdict(float)
    for (row, phase, key), (calls, s) in gemms.items():
        m, k, n = key[:3]
        flops[(row, phase)] += 2.0 * m * k * n * calls
        alone[(row, phase)] += gemm_alone(key) * calls
    lines = [("| step part | pass | ms | GEMM ms | GEMM GFLOPS | same GEMMs alone, GFLOPS | numba ms | "
              "numpy elementwise ms | copies/transposes ms | alloc ms | Python and untimed numpy ms |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for phase in ("forward", "backward"):
            total = med.get((row, phase, "total"), 0.0)
            parts = [med.get((row, phase, c), 0.0) for c in COLUMNS]
            if not any(parts):  # a kernel whose inside is not instrumented
                lines.append(f"| {row} | {phase} | {_ms(total)} |" + " - |" * 8)
                continue
            g = med.get((row, phase, "gemm"), 0.0)
            gf = flops[(row, phase)] / g / 1e9 if g else 0.0
            ga = flops[(row, phase)] / alone[(row, phase)] / 1e9 if alone[(row, phase)] else 0.0
            rest = total - sum(parts)
            # concurrent groups of samples (lstm.MIN_ROWS) add up every thread's time: no rest then
            rest_text = "- (threads)" if (row, phase) in threaded or rest < 0 else _ms(rest)
            lines.append(f"| {row} | {phase} | {_ms(total)} | {_ms(g)} | {gf:.1f} | {ga:.1f} | "
                         + " | ".join(_ms(p) for p in parts[1:]) + f" | {rest_text} |")
    step = med[("step", "", "total")]
    opt = med.get(("optimizer", "", "total"), 0.0)
    lines.append(f"| optimizer | | {_ms(opt)} |" + " - |" * 8)
    lines.append(f"| loss, executor glue | | {_ms(med[('glue', '', 'total')])} |" + " - |" * 8)
    lines.append(f"| **whole step** (profiled; unprofiled {_ms(plain)}) | | **{_ms(step)}** |" + " - |" * 8)
    lines.append("")
    lines.append(f"SGEMM 1024^3 in the same process: {sgemm:.1f} GFLOPS. Times are wall clock; where a kernel "
                 "runs groups of samples on several threads (the LSTM at 2 threads), its GEMM, numba and numpy "
                 "columns add up the time of every thread, and the timing wrappers (Python, under the GIL) "
                 "slow the groups down: compare the profiled step with the unprofiled one.")
    return lines


def gemm_table(gemms):
    lines = ["| step part | pass | m x k x n (layouts, BLAS threads) | calls | ms | GFLOPS in the step | alone |",
             "|---|---|---|---|---|---|---|"]
    if not gemms:
        lines.append("| (no instrumented kernel) | | | | | | |")
    for (row, phase, key), (calls, s) in sorted(gemms.items(), key=lambda kv: -kv[1][1]):
        m, k, n, la, lb, threads = key
        f = 2.0 * m * k * n * calls
        lines.append(f"| {row} | {phase} | {m} x {k} x {n} ({la}{lb}, {threads}) | {calls} | {_ms(s)} | "
                     f"{f / s / 1e9:.1f} | {f / gemm_alone(key) / calls / 1e9:.1f} |")
    return lines


def torch_table(plain, ops, total):
    lines = ["| PyTorch op | self ms per step | share |", "|---|---|---|"]
    for k, ms, share in ops:
        lines.append(f"| `{k}` | {ms:.2f} | {100 * share:.0f}% |")
    lines.append(f"| all ops (profiled; unprofiled step {_ms(plain)} ms) | {total:.2f} | 100% |")
    return lines


def profile(name, threads, steps, top, batch_size=None) -> str:
    runtime.set_threads(threads)
    torch.set_num_threads(threads)
    _, p0, tr, x, y = setup(name, batch_size)
    rng = np.random.default_rng(0)
    for _ in range(3):  # warm up: numba dispatch, allocator
        tr.train_step(x, y, rng)
    med, gemms, rows, plain, threaded = profile_native(tr, x, y, steps)
    gemm_alone.cache_clear()
    sgemm = bx.sgemm_gflops(threads, reps=3)[0]
    runtime.set_threads(threads)
    tplain, ops, ttotal = profile_torch(name, p0, x, y, steps, top)
    title = (f"#### {name}, {threads} thread{'s' if threads > 1 else ''}, batch {tr.batch_size}: "
             f"native {_ms(plain)} ms, PyTorch {_ms(tplain)} ms per step (medians of {steps}; "
             f"load average {os.getloadavg()[0]:.2f})")
    out = [title, ""]
    out += native_table(med, gemms, rows, plain, sgemm, threaded)
    out += ["", *gemm_table(gemms), "", *torch_table(tplain, ops, ttotal), ""]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(bx.MODELS), choices=bx.MODELS)
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--steps", type=int, default=20, help="profiled steps per side (medians)")
    ap.add_argument("--top", type=int, default=8, help="PyTorch ops listed")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: the model's)")
    args = ap.parse_args(argv)
    runtime.tune_malloc()  # as `netdsl run` does
    print(f"Load average before: {os.getloadavg()[0]:.2f}\n", flush=True)
    for name in args.models:
        for t in args.threads:
            print(profile(name, t, args.steps, args.top, args.batch), flush=True)
    print(f"Load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
