"""Differential fuzzing across the six columns: drawn models, the same weights and batch, native as the oracle.

Draws N distinct models with weights to train from the random-model strategy (tests/model_strategy.py,
hypothesis, seeded), runs them all through `netdsl conformance` (inference and one plain-SGD step on
pytorch, keras/torch, keras/tensorflow, tf-estimator, gluon and cntk; all models of a column in one
framework process) and reports every cell that fails. A cell a target refuses at compile time (E8xx) is
counted as refused, not failed.

Each failing (model, column) is then shrunk to a minimal model that still fails there: in rounds, every
one-step simplification of the model (delete a statement and re-point its readers at one of its
operands, drop an unused statement, an extra output or the train block, unwrap a default_options scope,
drop a Sequential member, inline a layer used once) that still loads and has weights to train is run
in one batch on that column, and the shortest that still fails is kept, until none does.

Run:  python bench/difffuzz.py -n 300 --seed 2 [--columns pytorch,gluon] [--workdir DIR] [--no-shrink]
Exit 1 if any cell failed.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from netdsl import conformance as conf  # noqa: E402
from netdsl.errors import NetdslError  # noqa: E402
from netdsl.frontend import load_text  # noqa: E402


def draw(n: int, seed: int) -> list:
    import test_properties as props  # the seeded sample of the test suite is drawn the same way

    return [m["text"] for m in props.drawn_models(n, seed)]


def failing(cells: dict, path: str, columns) -> list:
    out = []
    for col in columns:
        cell = cells[(path, col.name)]
        if cell.status == "FAIL" or (cell.status == "pass" and cell.step_status not in ("pass", "n/a")):
            out.append((col, cell))
    return out


# ------------------------------------------------------------------ shrinking
BIND = re.compile(r"^(\w+)\s*=\s*(.*)$", re.S)


def statements(text: str) -> list:
    """The model's statements, a `{ ... }` block (scope, train) as one; comments and blank lines dropped."""
    out, block, depth = [], [], 0
    for line in text.splitlines():
        if not block and (not line.strip() or line.lstrip().startswith("#")):
            continue
        block.append(line)
        depth += line.count("{") - line.count("}")
        if depth <= 0:
            out.append("\n".join(block))
            block, depth = [], 0
    if block:
        out.append("\n".join(block))
    return out


def joined(stmts: list) -> str:
    return "\n".join(stmts) + "\n"


def bound(stmt: str) -> str | None:
    m = BIND.match(stmt)
    return m.group(1) if m else None


def uses(name: str, stmts: list) -> int:
    return sum(len(re.findall(rf"\b{name}\b", s)) for s in stmts)


def split_top(text: str) -> list:
    """`a, f(b, c), [d]` -> ['a', 'f(b, c)', '[d]']: commas at bracket depth 0."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def closing(text: str, start: int) -> int:
    """Index of the bracket closing the one at text[start]."""
    depth = 0
    for i in range(start, len(text)):
        depth += text[i] in "([{"
        depth -= text[i] in ")]}"
        if depth == 0:
            return i
    return -1


def sequential_edits(stmt: str):
    """The statement with one Sequential member dropped, or a one-member Sequential([m]) replaced by m."""
    for m in re.finditer(r"Sequential\(\[", stmt):
        open_ = m.end() - 1
        close = closing(stmt, open_)
        if close < 0 or stmt[close + 1:close + 2] != ")":
            continue
        members = split_top(stmt[open_ + 1:close])
        if len(members) == 1:
            yield stmt[:m.start()] + members[0] + stmt[close + 2:]
            continue
        for k in range(len(members)):
            rest = members[:k] + members[k + 1:]
            yield stmt[:open_ + 1] + ", ".join(rest) + stmt[close:]


def candidates(text: str):
    """Every one-step simplification of the model (each strictly shorter), valid or not."""
    stmts = statements(text)
    names = [bound(s) for s in stmts]
    for i, stmt in enumerate(stmts):
        before, after, name = stmts[:i], stmts[i + 1:], names[i]
        if stmt.startswith("train"):
            yield joined(before + after)
        elif stmt.startswith("with "):
            inner = [line.strip() for line in stmt.splitlines()[1:-1] if line.strip()]
            yield joined(before + inner + after)
        elif stmt.startswith("output "):
            outs = split_top(stmt[len("output "):])
            for k in range(1, len(outs)):
                yield joined(before + ["output " + ", ".join(outs[:k] + outs[k + 1:])] + after)
        if name is None:
            continue
        if uses(name, after) == 0:
            yield joined(before + after)
            continue
        rhs = BIND.match(stmt).group(2)
        # delete the statement, its readers reading one of its operands instead
        for src in dict.fromkeys(re.findall(r"\b[A-Za-z_]\w*\b", rhs)):
            if src in names[:i]:
                yield joined(before + [re.sub(rf"\b{name}\b", src, s) for s in after])
        # a layer defined once and called once: call its constructor in place
        calls = [k for k, s in enumerate(after) if re.search(rf"\b{name}\(", s)]
        if uses(name, after) == 1 and len(calls) == 1 and "\n" not in rhs:
            k = calls[0]
            inlined = re.sub(rf"\b{name}\(", lambda _: rhs + "(", after[k], count=1)
            yield joined(before + after[:k] + [inlined] + after[k + 1:])
        for edit in sequential_edits(stmt):
            yield joined(before + [edit] + after)


def trainable_model(text: str) -> bool:
    """Loads, and has a weight to train (what the one-step comparison needs)."""
    try:
        g = load_text(text, "shrink.net")
    except NetdslError:
        return False
    return any(p.trainable for p in g.params())


def shrink(text: str, fails, valid=trainable_model, max_rounds: int = 60) -> str:
    """The smallest model reached from `text` by one-step simplifications that stay valid and still fail.

    `fails(texts)` judges a batch of candidates at once (one framework process per round) and returns
    one bool per text. Each round keeps the shortest candidate that still fails."""
    for _ in range(max_rounds):
        cands = [c for c in dict.fromkeys(candidates(text)) if len(c) < len(text) and valid(c)]
        if not cands:
            break
        bad = [c for c, verdict in zip(cands, fails(cands)) if verdict]
        if not bad:
            break
        text = min(bad, key=len)
    return text


def column_judge(col, work: Path):
    """fails(texts) for one column: every text through `netdsl conformance` in one batch."""
    rounds = [0]

    def fails(texts: list) -> list:
        rounds[0] += 1
        d = work / f"round_{rounds[0]:03d}"
        d.mkdir(parents=True, exist_ok=True)
        paths = []
        for k, text in enumerate(texts):
            path = d / f"cand_{k:03d}.net"
            path.write_text(text)
            paths.append(str(path))
        cells = conf.run(paths, [col], workdir=str(d / "run"), log=lambda m: None)
        return [bool(failing(cells, p, [col])) for p in paths]

    return fails


# ------------------------------------------------------------------ the campaign
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
    t0 = time.time()
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
              + ", ".join(f"{v} {k}" for k, v in counts.items()) + f" ({time.time() - t0:.0f} s)")
        for (path, col), cell in sorted(cells.items()):
            if cell.status == "unsupported":
                print(f"refused {Path(path).name} on {col}: {cell.reason}")
        for path, text, col, cell in failures:
            print(f"\nFAIL {Path(path).name} on {col.name}: {cell.short()}: {cell.reason}\n{text}", end="")
            if not args.no_shrink:
                small = shrink(text, column_judge(col, work / "shrink" / f"{Path(path).stem}_{col.name.replace('/', '_')}"))
                print(f"-- shrunk to:\n{small}", end="")
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
