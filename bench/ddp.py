"""Data-parallel training of the generated PyTorch script: torchrun with 2 gloo ranks against one process.

    .venvs/main/bin/python bench/ddp.py [--model models/keras_cnn.net] [--steps 100] [--ranks 2]
                                        [--samples 6400] [--rounds 3]

The generated script trains the same `steps` global batches (the training block's batch size, split
across the ranks under torchrun) from the same --init weights on MNIST-shaped random data (seeded,
written to a temporary .npz; nothing is downloaded), once as
`python -m torch.distributed.run --standalone --nproc_per_node=RANKS script.py ... --max-steps STEPS`
and once as `python script.py ... --max-steps STEPS`. Each is also run for 1 step, so that start-up
(imports, reading the data, the process group) can be told apart from training:
per step = (T(steps) - T(1)) / (steps - 1). Reported: the median wall time of each, per step, and the
speed-up of the ranks over one process, plus the largest weight difference between the two runs.
torchrun gives every rank OMP_NUM_THREADS=1; the one process gets the same (--threads, default 1) so
that the comparison is of parallel ranks, not of thread counts; say --threads 2 for torch's default
on a 2-core machine. Run it on a quiet machine: the figures are wall-clock.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def prepare(model_path: str, work: Path, samples: int):
    from netdsl.emit.base import emit
    from netdsl.exec.weights import init_params, save_weights
    from netdsl.frontend import load

    graph = load(model_path)
    script = work / "generated.py"
    script.write_text(emit(graph, "pytorch"))
    shape = [28 if d is None else d for d in graph.inputs[0].type.batch_shape(1)[1:]]
    classes = graph.value_type(graph.outputs[0]).batch_shape(1)[-1]
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, [samples, *shape]).astype(np.float32)
    y = rng.integers(0, classes, samples).astype(np.int64)
    np.savez(work / "data.npz", x_train=x, y_train=y, x_test=x[:64], y_test=y[:64])
    save_weights(work / "init.npz", init_params(graph, 0))
    return graph, script


def timed(cmd, work: Path, threads: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=work, env=env, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{proc.stderr[-3000:]}")
    return seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(ROOT / "models" / "keras_cnn.net"))
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--samples", type=int, default=6400)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the one process")
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error("--steps must be at least 2")
    with tempfile.TemporaryDirectory(prefix="netdsl-bench-") as d:
        work = Path(d)
        graph, script = prepare(args.model, work, args.samples)
        common = ["--data", f"npz:{work / 'data.npz'}", "--init", work / "init.npz", "--epochs", "1000"]
        runs = {
            "one process": [sys.executable, script],
            f"torchrun {args.ranks} ranks": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                             f"--nproc_per_node={args.ranks}", script],
        }
        times = {name: {1: [], args.steps: []} for name in runs}
        for r in range(args.rounds):
            for name, cmd in runs.items():
                for steps in (1, args.steps):
                    out = work / f"out-{len(name)}-{steps}"
                    t = timed([*cmd, *common, "--max-steps", steps, "--out-dir", out], work, 1 if "torchrun" in name
                              else args.threads)
                    times[name][steps].append(t)
                    print(f"round {r + 1}/{args.rounds} {name}, {steps} step(s): {t:.2f} s", flush=True)
        finals = [np.load(work / f"out-{len(name)}-{args.steps}" / f"{graph.name}.npz") for name in runs]
        diff = max(float(np.abs(finals[0][k] - finals[1][k]).max()) for k in finals[0].files)
    print(f"model {Path(args.model).name}, {args.steps} steps of global batch {graph.training.batch_size}")
    per_step = {}
    for name in runs:
        whole = statistics.median(times[name][args.steps])
        start = statistics.median(times[name][1])
        per_step[name] = (whole - start) / (args.steps - 1)
        print(f"  {name:20s} {whole:.2f} s in all, {start:.2f} s for 1 step, {per_step[name] * 1000:.1f} ms/step")
    one, ddp = per_step.values()
    print(f"  speed-up per step: {one / ddp:.2f}x; largest weight difference {diff:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
