"""Does generated PyTorch code cost anything? The generated keras_cnn module against a hand-written nn.Module.

    .venvs/main/bin/python bench/torch_overhead.py [--model models/keras_cnn.net] [--batch 64] [--iters 20]
                                                   [--rounds 15] [--threads 1]

Both models get the same weights (checked: same outputs), then take turns in
the same process: one round is `iters` forward+backward passes (cross-entropy,
batch of MNIST-sized random images) of the generated model, then of the
hand-written one, in alternating order. Reported: the median and best time per
pass of each, and generated / hand-written for both, in wall-clock time and in
the thread's CPU time (with one torch thread all the work runs on this thread,
and CPU time is far less disturbed by other processes on a busy machine).
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class HandWrittenCnn(nn.Module):
    """keras_cnn as a person writes it (cf. the seeds): conv-relu-pool twice, then a linear layer."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.fc = nn.Linear(64 * 5 * 5, 10)

    def forward(self, x):
        x = x / 255
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(torch.flatten(x, 1))


def generated_module(model_path: str):
    from netdsl.emit.base import emit
    from netdsl.frontend import load

    code = emit(load(model_path), "pytorch")
    with tempfile.TemporaryDirectory(prefix="netdsl-bench-") as d:  # the module is loaded, then the file goes
        path = Path(d) / "generated_keras_cnn.py"
        path.write_text(code)
        spec = importlib.util.spec_from_file_location("generated_keras_cnn", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def step(model, x, y):
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss


def time_round(model, x, y, iters: int) -> tuple:
    t0, c0 = time.perf_counter(), time.thread_time()
    for _ in range(iters):
        step(model, x, y)
    return (time.perf_counter() - t0) / iters, (time.thread_time() - c0) / iters


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "models" / "keras_cnn.net"))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    gen_mod = generated_module(args.model)
    generated = gen_mod.build_model()
    hand = HandWrittenCnn()
    with torch.no_grad():  # the same weights: the generated module's state, in the hand-written names
        state = generated.state_dict()
        hand.conv1.weight.copy_(state["cnn.0.weight"])
        hand.conv1.bias.copy_(state["cnn.0.bias"])
        hand.conv2.weight.copy_(state["cnn.3.weight"])
        hand.conv2.bias.copy_(state["cnn.3.bias"])
        hand.fc.weight.copy_(state["cnn.7.weight"])
        hand.fc.bias.copy_(state["cnn.7.bias"])
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.uniform(0, 255, (args.batch, 1, 28, 28)).astype(np.float32))
    y = torch.as_tensor(rng.integers(0, 10, args.batch))
    diff = (generated(x) - hand(x)).abs().max().item()
    assert diff == 0.0, f"the two models differ by {diff}"

    for model in (generated, hand):  # warm-up
        time_round(model, x, y, 3)
    times = {"generated": [], "hand-written": []}
    cpu = {"generated": [], "hand-written": []}
    for r in range(args.rounds):
        order = ("generated", "hand-written") if r % 2 == 0 else ("hand-written", "generated")
        for name in order:
            wall, thread = time_round(generated if name == "generated" else hand, x, y, args.iters)
            times[name].append(wall)
            cpu[name].append(thread)
    print(f"forward+backward, batch {args.batch}, {args.threads} thread(s), {args.rounds} rounds x {args.iters} passes")
    for label, data in (("wall", times), ("cpu", cpu)):
        med = {k: statistics.median(v) for k, v in data.items()}
        best = {k: min(v) for k, v in data.items()}
        for name in data:
            print(f"  {label:<4} {name:<13} median {med[name] * 1e3:7.2f} ms   best {best[name] * 1e3:7.2f} ms")
        print(f"  {label:<4} generated / hand-written: median {med['generated'] / med['hand-written']:.3f}, "
              f"best {best['generated'] / best['hand-written']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
