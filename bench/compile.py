"""How long `netdsl compile` takes on a very deep model, per target, with the front end timed apart.

    .venvs/main/bin/python bench/compile.py [--layers 10000] [--repeat 3] [--targets pytorch,keras,...]
    .venvs/main/bin/python bench/compile.py --against /path/to/main [--rounds 3]  # a loaded machine's A/B

The model is a LayerStack of N Dense layers (plus a classifier), written to a
temporary .net file. Each repetition runs the front end (parse, lower, shape
passes) once and then each target's emitter (which includes rendering the
template and re-parsing the output with ast.parse). The best and median of the
repetitions are printed, in seconds: wall-clock time, and the process's CPU
time (which a loaded machine disturbs less). The same is measured at a tenth of
the layers, and the ratio of the best CPU times says how the time grows: 10.0
is linear (the target is <= 11 for 10x the layers).

With --against DIR the emitters of this checkout and of the one in DIR (say, a
checkout of main) are timed in fresh processes, alternating, `--rounds` times
each, and the ratio of the median CPU times is printed: on a machine others are
loading, a ratio is what can be trusted, not the seconds.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# the checkout whose netdsl is timed: this one, or --root's (how --against runs the other one)
_root = sys.argv[sys.argv.index("--root") + 1] if "--root" in sys.argv[:-1] else str(Path(__file__).resolve().parents[1])
sys.path.insert(0, _root)

from netdsl.emit.base import emit  # noqa: E402
from netdsl.frontend import load  # noqa: E402

SOURCE = """\
# {layers} Dense layers in one LayerStack: a compile-time stress test
model Deep{layers}

x = Input(32)
z = Sequential([
    LayerStack({layers}, lambda: Dense(32, activation=relu)),
    Dense(10),
])(x)
output z

train {{
    loss = cross_entropy_with_softmax
    optimizer = SGD(lr=0.01, momentum=0.9)
}}
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--targets", default="pytorch,keras,tf-estimator,gluon,cntk")
    p.add_argument("--against", metavar="DIR", help="also time the netdsl checkout in DIR, alternating; print ratios")
    p.add_argument("--rounds", type=int, default=3, help="with --against: processes per checkout")
    p.add_argument("--root", help=argparse.SUPPRESS)  # read above, before netdsl is imported
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one process of --against
    args = p.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    if args.against:
        return against(args, targets)
    if args.json:
        cpu = measure(args.layers, targets, args.repeat)[1]
        print(json.dumps({k: min(v) for k, v in cpu.items()}))
        return 0
    small = measure(max(args.layers // 10, 1), targets, args.repeat)[1]
    times, cpu, sizes, graph = measure(args.layers, targets, args.repeat)
    print(f"{args.layers + 1} layers ({len(graph.nodes)} nodes), best / median of {args.repeat}, wall (cpu), "
          f"and cpu(N) / cpu(N/10):")
    for what, ts in times.items():
        extra = f"  ({sizes[what][0]:,} lines, {sizes[what][1]:,} bytes)" if what in sizes else ""
        ratio = min(cpu[what]) / max(min(small[what]), 1e-9)
        print(f"  {what:<12} {min(ts):6.3f} s ({min(cpu[what]):.3f})  / {statistics.median(ts):6.3f} s "
              f"({statistics.median(cpu[what]):.3f})  x{ratio:5.1f}{extra}")
    return 0


def against(args, targets: list) -> int:
    here = str(Path(__file__).resolve().parents[1])
    runs = {here: [], args.against: []}
    for r in range(args.rounds):
        for root in (here, args.against) if r % 2 == 0 else (args.against, here):
            cmd = [sys.executable, __file__, "--json", "--root", root, "--layers", str(args.layers),
                   "--repeat", str(args.repeat), "--targets", ",".join(targets)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=tempfile.gettempdir())
            runs[root].append(json.loads(out.stdout))
    print(f"{args.layers + 1} layers, CPU time, median of {args.rounds} processes (each the best of {args.repeat}): "
          f"this checkout / {args.against}")
    for what in runs[here][0]:
        mine, theirs = (statistics.median(run[what] for run in runs[root]) for root in (here, args.against))
        print(f"  {what:<12} {mine:6.3f} / {theirs:6.3f} = {mine / theirs:5.3f}")
    return 0


def measure(layers: int, targets: list, repeat: int) -> tuple:
    times = {"front end": []} | {t: [] for t in targets}
    cpu = {k: [] for k in times}
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"deep{layers}.net"
        path.write_text(SOURCE.format(layers=layers))
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            graph = load(str(path))
            times["front end"].append(time.perf_counter() - t0)
            cpu["front end"].append(time.process_time() - c0)
            for target in targets:
                t0, c0 = time.perf_counter(), time.process_time()
                code = emit(graph, target)
                times[target].append(time.perf_counter() - t0)
                cpu[target].append(time.process_time() - c0)
                sizes[target] = (len(code.splitlines()), len(code))
    return times, cpu, sizes, graph


if __name__ == "__main__":
    sys.exit(main())
