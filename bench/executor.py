"""Native executor vs PyTorch CPU: training throughput on the same model, batch
and initial weights, in one process, at 1 and 2 threads; plus the machine's
SGEMM GFLOPS and the share of it CNN training reaches.

    .venvs/main/bin/python bench/executor.py            # measure, print, update bench/RESULTS.md
    .venvs/main/bin/python bench/executor.py --no-write # measure and print only

Each (model, threads) cell alternates native and torch for --rounds rounds of
--seconds each and keeps each side's best round: the machine is shared, and
the best round is the one least disturbed by other processes. The load average
is recorded next to the figures.
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from netdsl import data as datamod  # noqa: E402
from netdsl.exec import runtime, train  # noqa: E402
from netdsl.exec.weights import init_params  # noqa: E402
from netdsl.frontend import load  # noqa: E402

MODELS = ("mlp_relu", "keras_cnn", "row_lstm")
TARGETS = {"mlp_relu": 1.5, "keras_cnn": 1.3, "row_lstm": 1.2}  # issue 16, at 1 and 2 threads
RESULTS = REPO / "bench" / "RESULTS.md"
START, END = "<!-- executor-bench:start -->", "<!-- executor-bench:end -->"


# ------------------------------------------------------------ torch models

def torch_model(name, p):
    """The same network written the usual PyTorch way, loaded from canonical weights."""
    nn = torch.nn
    t = {k: torch.tensor(v) for k, v in p.items()}

    def set_(mod, **kw):
        with torch.no_grad():
            for attr, v in kw.items():
                getattr(mod, attr).copy_(v)
        return mod

    if name == "mlp_relu":
        net = nn.Sequential(set_(nn.Linear(784, 200), weight=t["dense_1.W"], bias=t["dense_1.b"]), nn.ReLU(),
                            set_(nn.Linear(200, 10), weight=t["dense_2.W"], bias=t["dense_2.b"]))
        return lambda x: net(x * (1 / 255)), net
    if name == "keras_cnn":
        net = nn.Sequential(
            set_(nn.Conv2d(1, 32, 3), weight=t["convolution_1.W"], bias=t["convolution_1.b"]), nn.ReLU(),
            nn.MaxPool2d(2, 2),
            set_(nn.Conv2d(32, 64, 3), weight=t["convolution_2.W"], bias=t["convolution_2.b"]), nn.ReLU(),
            nn.MaxPool2d(2, 2), nn.Flatten(),
            set_(nn.Linear(1600, 10), weight=t["dense_1.W"], bias=t["dense_1.b"]))
        return lambda x: net(x * (1 / 255)), net
    if name == "row_lstm":
        lstm = set_(nn.LSTM(28, 128, batch_first=True), weight_ih_l0=t["lstm_1.W"], weight_hh_l0=t["lstm_1.H"],
                    bias_ih_l0=t["lstm_1.b"], bias_hh_l0=torch.zeros(512))
        fc = set_(nn.Linear(128, 10), weight=t["dense_1.W"], bias=t["dense_1.b"])
        net = nn.ModuleList([lstm, fc])
        return lambda x: fc(lstm(x * (1 / 255))[0][:, -1]), net
    raise KeyError(name)


# ------------------------------------------------------------------ FLOPs

def training_flops(graph, trainer) -> float:
    """GEMM FLOPs of one training sample: forward, weight gradient, and the
    input gradient only where the executor computes one."""
    total = 0.0
    for node in graph.nodes:
        layer = graph.layer(node.layer)
        if layer.kind not in ("Convolution", "Dense", "LSTM"):
            continue
        t_in, t_out = graph.value_type(node.inputs[0]), node.type
        if layer.kind == "Convolution":
            o, c, kh, kw = layer.param("W").shape
            fwd = 2.0 * o * c * kh * kw * t_out.shape[1] * t_out.shape[2]
        elif layer.kind == "Dense":
            fwd = 2.0 * math.prod(layer.param("W").shape) * (t_in.length or 1 if t_in.seq else 1)
        else:
            steps = t_in.length or 1
            fwd = 2.0 * steps * (math.prod(layer.param("W").shape) + math.prod(layer.param("H").shape))
        needs_dx = any(v in trainer.ex.needs_grad for v in node.inputs)
        total += fwd * (3 if needs_dx else 2)
    return total


def sgemm_gflops(threads, n=1024, reps=5) -> tuple[float, float]:
    """(GFLOPS per wall second, GFLOPS per CPU second of the process), best of reps."""
    runtime.set_threads(threads)
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = np.random.default_rng(1).random((n, n), dtype=np.float32)
    a @ b
    wall = cpu = math.inf
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        a @ b
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return 2 * n ** 3 / wall / 1e9, 2 * n ** 3 / cpu / 1e9


# ---------------------------------------------------------------- measure

def batch(graph, trainer, n, rng):
    x = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
    return trainer.feed.batch(x), rng.integers(0, 10, n)


def time_loop(step, seconds, min_steps=3) -> tuple[float, float]:
    """(steps per wall-clock second, steps per CPU second of this process)."""
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while True:
        step()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= seconds and n >= min_steps:
            return n / dt, n / max(time.process_time() - c0, 1e-9)


def bench_model(name, threads, seconds, rounds, data) -> dict:
    g = load(REPO / "models" / f"{name}.net")
    p0 = init_params(g, 0)
    tr = train.Trainer(g, {k: v.copy() for k, v in p0.items()}, data, train.Options(seed=0),
                       log=lambda s: None)
    bs = tr.batch_size
    x, y = batch(g, tr, bs, np.random.default_rng(0))
    rng = np.random.default_rng(0)

    fwd, net = torch_model(name, p0)
    opt = torch.optim.Adam(net.parameters(), lr=tr.optimizer.lr)
    tx, ty = torch.tensor(x), torch.tensor(y)

    def native():
        tr.train_step(x, y, rng)

    def pytorch():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(fwd(tx), ty)
        loss.backward()
        opt.step()

    runtime.set_threads(threads)
    torch.set_num_threads(threads)
    for _ in range(3):  # warm up: caches, allocators, numba dispatch
        native()
        pytorch()
    best = {"native": (0.0, 0.0), "torch": (0.0, 0.0), "sgemm": (0.0, 0.0)}
    for _ in range(rounds):  # alternate, so all three see the same disturbances
        for side, fn in (("native", native), ("torch", pytorch)):
            wall, cpu = time_loop(fn, seconds)
            best[side] = (max(best[side][0], wall), max(best[side][1], cpu))
        wall, cpu = sgemm_gflops(threads, reps=3)
        best["sgemm"] = (max(best["sgemm"][0], wall), max(best["sgemm"][1], cpu))
    return {"model": name, "threads": threads, "batch": bs, "native": best["native"][0] * bs,
            "torch": best["torch"][0] * bs, "ratio": best["native"][0] / best["torch"][0],
            "native_cpu": best["native"][1] * bs, "torch_cpu": best["torch"][1] * bs,
            "sgemm": best["sgemm"], "flops": training_flops(g, tr)}


def fake_dataset():
    z = np.zeros((64, 28, 28), np.uint8)
    return datamod.Dataset(z, np.zeros(64, np.uint8), z[:8], np.zeros(8, np.uint8))


# ----------------------------------------------------------------- report

def report(rows, seconds, rounds, load_before, load_after) -> str:
    cmd = "NETDSL_DATA=... .venvs/main/bin/python bench/executor.py" + (
        f" --seconds {seconds:g}" if seconds != 1.0 else "") + (f" --rounds {rounds}" if rounds != 5 else "")
    lines = [
        START,
        f"Measured {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} with `{cmd}`",
        f"on {_cpu_name()}, {os.cpu_count()} logical cores; numpy {np.__version__}, torch {torch.__version__}, "
        f"Python {platform.python_version()}. Load average before/after: "
        f"{load_before[0]:.2f} / {load_after[0]:.2f} (the machine is shared; each figure is the best of "
        f"{rounds} alternating native/PyTorch rounds of {seconds:g} s).",
        "",
        "SGEMM is numpy float32 1024x1024 @ 1024x1024, timed inside each row's rounds (best of them), so it "
        "saw the same machine as the row's training steps.",
        "",
        "| model | threads | batch | native samples/s | PyTorch samples/s | native / PyTorch | "
        "same, per CPU second | target | native GEMM GFLOPS | SGEMM GFLOPS | % of SGEMM | same, per CPU second |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        w, c = r["sgemm"]
        gf, gfc = r["flops"] * r["native"] / 1e9, r["flops"] * r["native_cpu"] / 1e9
        lines.append(
            f"| {r['model']} | {r['threads']} | {r['batch']} | {r['native']:.0f} | {r['torch']:.0f} | "
            f"**{r['ratio']:.2f}x** | {r['native_cpu'] / r['torch_cpu']:.2f}x | >= {TARGETS[r['model']]}x | "
            f"{gf:.1f} | {w:.1f} | {100 * gf / w:.0f}% | {100 * gfc / c:.0f}% |")
    lines += ["", "GEMM FLOPs count the forward, weight-gradient and (where computed) input-gradient matrix "
              "products of Dense/Convolution/LSTM layers; elementwise work is not counted. \"Per CPU second\" "
              "divides by the CPU time the process used instead of wall time (SGEMM likewise): at 1 thread it "
              "is immune to time stolen by other processes; at 2 threads it counts both threads.", END]
    return "\n".join(lines)


def _cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def write_results(block: str) -> None:
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    if START in text and END in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda m: block, text, flags=re.S)
    elif "## Executor" in text:
        head, _, tail = text.partition("## Executor")
        nl = tail.find("\n")
        text = head + "## Executor" + tail[:nl + 1] + "\n" + block + "\n" + tail[nl + 1:]
    else:
        text = text.rstrip("\n") + "\n\n## Executor\n\n" + block + "\n"
    RESULTS.write_text(text, encoding="utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    runtime.tune_malloc()  # as `netdsl run` does
    data = fake_dataset()
    rows = []
    for name in args.models:
        for t in args.threads:
            r = bench_model(name, t, args.seconds, args.rounds, data)
            gf, gfc = r["flops"] * r["native"] / 1e9, r["flops"] * r["native_cpu"] / 1e9
            print(f"{name:10s} threads={t} native {r['native']:8.0f}/s  torch {r['torch']:8.0f}/s  "
                  f"ratio {r['ratio']:.2f} (per CPU-s {r['native_cpu'] / r['torch_cpu']:.2f})  "
                  f"native {gf:.1f} GFLOPS = {100 * gf / r['sgemm'][0]:.0f}% of SGEMM {r['sgemm'][0]:.1f} "
                  f"({100 * gfc / r['sgemm'][1]:.0f}% per CPU-s)", flush=True)
            rows.append(r)
    block = report(rows, args.seconds, args.rounds, load_before, os.getloadavg())
    if not args.no_write:
        write_results(block)
        print(f"updated {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
