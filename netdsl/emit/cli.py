"""`netdsl compile`: write a target's code, or check that a committed copy is current."""
from __future__ import annotations

import difflib
import os
import stat
import sys
from pathlib import Path

from ..cli import write_stdout
from ..fsutil import OutputPathError, atomic_write, check_output
from ..lint import load_and_warn
from . import TARGETS
from .base import emit


def register(sub) -> None:
    p = sub.add_parser("compile", help="generate code for a framework")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--target", required=True, choices=sorted(TARGETS))
    p.add_argument("-o", "--output", metavar="OUT", help="write here (default, or '-': stdout)")
    p.add_argument("--check", metavar="OUT", help="exit 1, with a diff, if OUT is not what would be generated now")
    p.add_argument("--diff", action="store_true", help="with -o: print what would change and write nothing")
    p.set_defaults(func=cmd_compile)


def _error(message: str) -> int:
    print(f"netdsl compile: error: {message}", file=sys.stderr)
    return 1


def cmd_compile(args) -> int:
    if args.output == "-":  # the Unix spelling of stdout, not a file named '-'
        args.output = None
    if args.check and args.output:
        print("netdsl compile: error: use either -o OUT or --check OUT", file=sys.stderr)
        return 2
    if args.diff and not (args.output or args.check):
        print("netdsl compile: error: --diff needs -o OUT or --check OUT", file=sys.stderr)
        return 2
    writing = args.output and not args.diff
    if writing:
        try:  # before any work: a bad output path is reported at once, not after compiling
            check_output(args.output, inputs=[args.file])
        except OutputPathError as e:
            return _error(str(e))
    graph, inputs = load_and_warn(args.file)  # warnings to stderr
    if writing:
        try:  # now the imports are known: none of them may be overwritten either
            check_output(args.output, inputs=inputs)
        except OutputPathError as e:
            return _error(str(e))
    code = emit(graph, args.target)
    if args.check or args.diff:
        return _compare(Path(args.check or args.output), code, args)
    if not args.output:
        write_stdout(code)
        return 0
    try:
        atomic_write(args.output, code)
    except OSError as e:
        return _error(f"cannot write {os.fsdecode(args.output)!r}: {e.strerror or e}")
    return 0


def _compare(path: Path, code: str, args) -> int:
    shown = repr(os.fsdecode(path))
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # reading a FIFO would block
            return _error(f"cannot read {shown}: not a regular file")
        old = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        old = ""
    except OSError as e:
        return _error(f"cannot read {shown}: {e.strerror or e}")
    except UnicodeDecodeError:
        return _error(f"{shown} is not UTF-8 text, so it is not generated code")
    except ValueError as e:  # a NUL character in the path
        return _error(f"cannot read {shown}: {e}")
    if old == code:
        if args.check:
            print(f"{path} is up to date", file=sys.stderr)
        return 0
    write_stdout("".join(difflib.unified_diff(
        old.splitlines(keepends=True), code.splitlines(keepends=True),
        fromfile=f"{path} (committed)", tofile=f"{path} (generated now)")))
    if args.check:
        print(f"{path} is stale; regenerate with: netdsl compile {args.file} --target {args.target} -o {path}",
              file=sys.stderr)
        return 1
    return 0
