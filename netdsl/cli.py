"""The `netdsl` command. User errors exit 1 with diagnostics; bad usage exits 2."""
from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import stat
import sys
from dataclasses import replace

from . import __version__, ir
from .errors import Diagnostic, NetdslError, Span
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


class StdoutError(Exception):
    """Standard output cannot be written (a full disk, a closed terminal); str() is the message."""


def write_stdout(text: str) -> None:
    """Write and flush, so a full disk is reported here, as an error, not at interpreter exit."""
    try:
        sys.stdout.write(text)
    except BrokenPipeError:
        raise  # the reader went away (| head): not an error, see main()
    except OSError as e:
        raise StdoutError(f"cannot write to standard output: {e.strerror or e}") from None
    _flush_stdout()


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        raise StdoutError(f"cannot write to standard output: {e.strerror or e}") from None


def cmd_summary(args) -> int:
    g = load(args.file)
    write_stdout(summary_table(g) + "\n")
    return 0


# An IR document of a 100k-layer model is tens of MB; anything far bigger is not one.
MAX_IR_BYTES = 1 << 28


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number netdsl writes")


def load_ir(path: str) -> ir.Graph:
    """An IR JSON document, or a NetdslError [E007] saying why it is not one."""
    def bad(why: str) -> NetdslError:
        return NetdslError(Diagnostic("E007", f"not a netdsl IR document: {why}", Span(path, 1, 1, 1, 1)))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
        with open(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise bad("not a regular file")
            if st.st_size > MAX_IR_BYTES:
                raise bad(f"{st.st_size} bytes, over the limit of {MAX_IR_BYTES}")
            data = f.read()
    except OSError as e:
        raise bad(f"cannot read it: {e.strerror or e}") from None
    except ValueError as e:  # a NUL in the path
        raise bad(str(e)) from None
    try:
        # NaN and Infinity are not JSON, and to_json would refuse them on the way out
        return ir.from_json_value(json.loads(data.decode("utf-8"), parse_constant=_refuse_constant))
    except UnicodeDecodeError:
        raise bad("it is not UTF-8 text") from None
    except RecursionError:
        raise bad("it is nested too deeply") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise bad(f"{type(e).__name__}: {e}") from None


def cmd_ir(args) -> int:
    g = load_ir(args.file) if args.load else load(args.file)
    write_stdout(ir.to_json(g))
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
        rc = args.func(args) or 0
        _flush_stdout()  # what any command printed: a full disk is an error here, not at exit
        return rc
    except NetdslError as e:
        print(e.format(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except StdoutError as e:
        _silence_stdout()
        print(f"netdsl: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        # A full disk met by a write the command did not route through write_stdout (progress
        # printed while training, a file): not the user's mistake, not a bug either.
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        _silence_stdout()
        print(f"netdsl: error: cannot write: {e.strerror}", file=sys.stderr)
        return 1


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null, so the flush at interpreter exit does not raise the same error again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
