"""The `netdsl` command. User errors exit 1 with diagnostics; bad usage exits 2."""
from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import replace

from . import __version__, ir
from .errors import NetdslError
from .frontend import load, load_with_warnings
from .lint import format_warnings

# Commands that live with their own stage register themselves here.
PLUGINS = ("netdsl.emit.cli", "netdsl.exec.cli", "netdsl.conformance", "netdsl.onnx.cli", "netdsl.predict")


def cmd_check(args) -> int:
    failed = warned = 0
    for path in args.files:
        try:
            _graph, warnings, sources = load_with_warnings(path)
        except NetdslError as e:
            print(e.format(), file=sys.stderr)
            failed += 1
            continue
        if warnings and args.Werror:
            warnings = [replace(w, severity="error") for w in warnings]
            failed += 1
        if warnings:
            print(format_warnings(warnings, sources), file=sys.stderr)
            warned += len(warnings)
    if not args.quiet:
        n = len(args.files)
        extra = f", {warned} warning{'s' if warned != 1 else ''}" if warned and not args.Werror else ""
        print(f"{'error' if failed else 'ok'}: {n - failed} of {n} file{'s' if n != 1 else ''} passed{extra}",
              file=sys.stderr)
    return 1 if failed else 0


def cmd_summary(args) -> int:
    g = load(args.file)
    print(summary_table(g))
    return 0


def cmd_ir(args) -> int:
    if args.load:
        try:
            with open(args.file, encoding="utf-8") as f:
                g = ir.from_json(f.read())
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"{args.file}:1:1: error: not a netdsl IR document: {e} [E007]", file=sys.stderr)
            return 1
    else:
        g = load(args.file)
    sys.stdout.write(ir.to_json(g))
    return 0


def summary_table(g: ir.Graph) -> str:
    layers = {l.name: l for l in g.layers}
    rows = [(f"{i.name} (Input)", i.type.describe(), "0") for i in g.inputs]
    seen = set()
    for n in g.nodes:
        layer = layers[n.layer]
        count = sum(p.size for p in layer.params)
        label = f"{n.name} ({layer.kind})" if n.name == layer.name else f"{n.name} ({layer.kind} {layer.name})"
        if layer.name in seen and layer.params:
            rows.append((label, n.type.describe(), "0 (shared)"))
        else:
            rows.append((label, n.type.describe(), f"{count:,}"))
        seen.add(layer.name)
    trainable = sum(p.size for p in g.params() if p.trainable)
    frozen = sum(p.size for p in g.params() if not p.trainable)
    w0 = max(28, max(len(r[0]) for r in rows) + 2)
    w1 = max(20, max(len(r[1]) for r in rows) + 2)
    w2 = max(12, max(len(r[2]) for r in rows))
    line = "=" * (w0 + w1 + w2)
    out = [f'Model: "{g.name}"', line, f"{'Layer (kind)':<{w0}}{'Output shape':<{w1}}{'Params':>{w2}}", line]
    out += [f"{a:<{w0}}{b:<{w1}}{c:>{w2}}" for a, b, c in rows]
    out += [line, f"Total params: {trainable + frozen:,}", f"Trainable params: {trainable:,}",
            f"Non-trainable params: {frozen:,}", f"Outputs: {', '.join(g.outputs)}"]
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="netdsl", description="Compile and run .net layer descriptions.")
    p.add_argument("--version", action="version", version=f"netdsl {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    c = sub.add_parser("check", help="parse and validate .net files")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("-q", "--quiet", action="store_true")
    c.add_argument("--Werror", action="store_true", help="treat warnings as errors (exit 1)")
    c.set_defaults(func=cmd_check)
    s = sub.add_parser("summary", help="print a layer table with output shapes and parameter counts")
    s.add_argument("file", metavar="FILE")
    s.set_defaults(func=cmd_summary)
    i = sub.add_parser("ir", help="print the IR as JSON")
    i.add_argument("file", metavar="FILE")
    i.add_argument("--load", action="store_true", help="FILE is IR JSON: load it and print it again")
    i.set_defaults(func=cmd_ir)
    for name in PLUGINS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        mod.register(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except NetdslError as e:
        print(e.format(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
