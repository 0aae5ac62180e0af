"""Parse, lower and shape-infer generated N-layer models; check the time grows linearly.

Two shapes of model: N explicit statements (parser throughput) and one LayerStack of N layers
(the evaluator and passes). Run: .venvs/main/bin/python bench/parse.py
"""
import sys
import time

from netdsl.frontend import load_text


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


def best_of(text: str, n: int, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        g = load_text(text, "deep.net")
        times.append(time.perf_counter() - t0)
    assert len(g.layers) == n, len(g.layers)
    return min(times)


def main() -> int:
    load_text(statements(10), "warm.net")  # grammar tables and imports are not what we measure
    ok = True
    for label, make in (("explicit statements", statements), ("one LayerStack", stacked)):
        rows = [(n, best_of(make(n), n)) for n in (1_000, 10_000)]
        for n, t in rows:
            print(f"{label:>20}: {n:>6} layers {t * 1000:8.1f} ms  ({t / n * 1e6:.1f} us/layer)")
        ratio = rows[1][1] / rows[0][1]
        print(f"{label:>20}: 10k/1k time ratio {ratio:.2f} (10 is linear)")
        ok = ok and ratio < 13
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
