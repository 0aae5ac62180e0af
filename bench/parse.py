"""Front-end speed: parse + lower + passes of generated models, and of hostile files.

Reports, in CPU time (time.process_time: the machine may be shared, and CPU time is what the
front end itself costs; re-measure on a quiet machine for published figures):
  - N explicit statements (parser throughput) and one LayerStack of N layers (evaluator and passes),
    for N = 1,000 and 10,000, and the 10k/1k time ratio (10 is linear; the target is <= 11);
  - the hostile cases of issue 16: an unclosed string of 60,000 quotes, 40,000 lines of `a = 1`;
  - the slowest of several 1 MB shapes (one token per character or two, rescanned quotes).
Targets (issue 16): 10,000 statements < 1 s, ratio <= 11, any 1 MB file < 3 s. Exit 1 if missed.

Run: python bench/parse.py [--repeats 3]
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netdsl.errors import NetdslError  # noqa: E402
from netdsl.frontend import load_text  # noqa: E402


def statements(n: int) -> str:
    lines = ["model Deep", "x0 = Input(32)"]
    kinds = ["Dense(32, activation=relu)", "Dense(32)", "Dropout(0.1)", "LayerNormalization()"]
    for i in range(n):
        lines.append(f"x{i + 1} = {kinds[i % len(kinds)]}(x{i})")
    lines.append(f"output x{n}")
    return "\n".join(lines) + "\n"


def stacked(n: int) -> str:
    return (f"model Deep\nfeats = Input(32)\n"
            f"net = LayerStack({n // 2}, lambda i: [Dense(32, activation=relu), LayerNormalization()])\n"
            "z = net(feats)\noutput z\n")


MB = 1_000_000
HOSTILE = {
    "unclosed string of 60,000 quotes": '"' + '\\"' * 30_000,
    "40,000 lines of a = 1": "a = 1\n" * 40_000,
}
ONE_MB = {
    "a = 1 lines": "a = 1\n" * (MB // 6),
    "tuple of 1,": "t = (" + "1," * (MB // 2 - 10) + ")\n",
    "output names": "x = Input(4)\noutput " + ",".join(["x"] * (MB // 2 - 20)) + "\n",
    "escaped quotes": '"' + '\\"' * (MB // 2 - 1),
    "quotes per line": ("\"'" * 500 + "\n") * (MB // 1001),
    "brackets": "a = " + "(" * 100 + "()" * (MB // 2 - 200) + ")" * 100,
}


def cpu(text: str, repeats: int, layers: int | None = None) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        try:
            g = load_text(text, "bench.net")
        except NetdslError:
            g = None
        times.append(time.process_time() - t0)
    if layers is not None:
        assert g is not None and len(g.layers) == layers
    return min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs (default 3)")
    args = ap.parse_args(argv)
    load_text(statements(10), "warm.net")  # grammar tables and imports are not what we measure
    ok = True
    print("CPU time (process_time), best of", args.repeats)
    for label, make in (("explicit statements", statements), ("one LayerStack", stacked)):
        rows = [(n, cpu(make(n), args.repeats, n)) for n in (1_000, 10_000)]
        for n, t in rows:
            print(f"{label:>20}: {n:>6} layers {t * 1000:8.1f} ms  ({t / n * 1e6:.1f} us/layer)")
        ratio = rows[1][1] / rows[0][1]
        print(f"{label:>20}: 10k/1k time ratio {ratio:.2f} (10 is linear; target <= 11)")
        ok = ok and ratio <= 11 and rows[1][1] < 1.0
    for label, text in HOSTILE.items():
        t = cpu(text, 1)
        print(f"{label:>36}: {t * 1000:8.1f} ms")
    worst = max((cpu(text[:MB], 1), label) for label, text in ONE_MB.items())
    print(f"{'slowest 1 MB file':>36}: {worst[0] * 1000:8.1f} ms ({worst[1]}; target < 3 s)")
    ok = ok and worst[0] < 3.0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
