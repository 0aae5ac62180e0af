"""Differential fuzzing across the six columns: drawn models, the same weights and batch, native as the oracle.

Draws N distinct models with weights to train from the random-model strategy of
tests/test_properties.py (hypothesis, seeded), runs them all through `netdsl conformance` (inference and
one plain-SGD step on pytorch, keras/torch, keras/tensorflow, tf-estimator, gluon and cntk) and reports
every cell that fails. A cell a target refuses at compile time (E8xx) is counted as refused, not failed.
Each failing model is then shrunk: statements are deleted one at a time (and a deleted value's readers
re-pointed at its input) as long as the model stays valid and still fails on the same column; the
minimal model is printed.

Run:  python bench/difffuzz.py -n 300 --seed 1 [--columns pytorch,gluon] [--workdir DIR] [--no-shrink]
Exit 1 if any cell failed.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from netdsl import conformance as conf
from netdsl.errors import NetdslError
from netdsl.frontend import load_text


def draw(n: int, seed: int) -> list:
    import test_properties as props  # the strategy lives with its own properties

    return [m["text"] for m in props.drawn_models(n, seed)]


def failing(cells: dict, path: str, columns) -> list:
    out = []
    for col in columns:
        cell = cells[(path, col.name)]
        if cell.status == "FAIL" or (cell.status == "pass" and cell.step_status not in ("pass", "n/a")):
            out.append((col, cell))
    return out


def run_one(text: str, col, work: Path, k: int) -> bool:
    """Does this model still fail on this column?"""
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"shrink_{k}.net"
    path.write_text(text)
    cells = conf.run([str(path)], [col], workdir=str(work / f"shrink_{k}"), log=lambda m: None)
    return bool(failing(cells, str(path), [col]))


def candidates(text: str):
    """The model with one statement removed, its value's readers reading the removed statement's input."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(\w+) = .*\((\w+)\)$", line)
        if not m or line.startswith("x = "):
            continue
        name, source = m.groups()
        rest = [re.sub(rf"\b{name}\b", source, other) for other in lines[i + 1:]]
        yield "\n".join(lines[:i] + rest) + "\n"


def shrink(text: str, col, work: Path, budget: int = 40) -> str:
    k = 0
    improved = True
    while improved and k < budget:
        improved = False
        for cand in candidates(text):
            try:
                g = load_text(cand, "shrink.net")
            except NetdslError:
                continue
            if not any(p.trainable for p in g.params()):
                continue
            k += 1
            if run_one(cand, col, work, k):
                text, improved = cand, True
                break
            if k >= budget:
                break
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=30, help="models to draw")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--columns", help="comma-separated, default all six: " + ",".join(c.name for c in conf.COLUMNS))
    p.add_argument("--workdir", help="keep models, generated code and arrays here")
    p.add_argument("--no-shrink", action="store_true")
    args = p.parse_args(argv)
    columns = conf.COLUMNS
    if args.columns:
        wanted = [c.strip() for c in args.columns.split(",")]
        columns = [c for c in conf.COLUMNS if c.name in wanted]
        if len(columns) != len(wanted):
            p.error(f"unknown column in {args.columns}")
    with tempfile.TemporaryDirectory(prefix="difffuzz-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        texts = draw(args.n, args.seed)
        paths = []
        for k, text in enumerate(texts):
            path = work / f"drawn_{k:04d}.net"
            path.write_text(text)
            paths.append(str(path))
        cells = conf.run(paths, columns, workdir=str(work / "run"), log=lambda m: print(m, file=sys.stderr))
        counts = {"pass": 0, "refused": 0, "not run": 0, "failed": 0}
        failures = []
        for path, text in zip(paths, texts):
            bad = failing(cells, path, columns)
            failures += [(path, text, col, cell) for col, cell in bad]
            for col in columns:
                cell = cells[(path, col.name)]
                counts["failed" if any(c is col for c, _ in bad) else {"unsupported": "refused", "not run": "not run"}
                       .get(cell.status, "pass")] += 1
        print(f"difffuzz: seed {args.seed}: {len(texts)} models, {len(texts) * len(columns)} cells: "
              + ", ".join(f"{v} {k}" for k, v in counts.items()))
        for path, text, col, cell in failures:
            print(f"\nFAIL {Path(path).name} on {col.name}: {cell.short()}: {cell.reason}\n{text}", end="")
            if not args.no_shrink:
                small = shrink(text, col, work / "shrink")
                print(f"-- shrunk to:\n{small}", end="")
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
