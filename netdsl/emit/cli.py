"""`netdsl compile`: write a target's code, or check that a committed copy is current."""
from __future__ import annotations

import difflib
import os
import sys
import tempfile
from pathlib import Path

from ..lint import load_and_warn
from . import TARGETS
from .base import emit


def register(sub) -> None:
    p = sub.add_parser("compile", help="generate code for a framework")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--target", required=True, choices=sorted(TARGETS))
    p.add_argument("-o", "--output", metavar="OUT", help="write here (default: stdout)")
    p.add_argument("--check", metavar="OUT", help="exit 1, with a diff, if OUT is not what would be generated now")
    p.add_argument("--diff", action="store_true", help="with -o: print what would change and write nothing")
    p.set_defaults(func=cmd_compile)


def cmd_compile(args) -> int:
    if args.check and args.output:
        print("netdsl compile: error: use either -o OUT or --check OUT", file=sys.stderr)
        return 2
    if args.diff and not (args.output or args.check):
        print("netdsl compile: error: --diff needs -o OUT or --check OUT", file=sys.stderr)
        return 2
    code = emit(load_and_warn(args.file), args.target)  # warnings to stderr
    if args.check or args.diff:
        path = Path(args.check or args.output)
        try:
            old = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            old = ""
        except OSError as e:
            print(f"netdsl compile: error: cannot read {path}: {e.strerror}", file=sys.stderr)
            return 1
        if old == code:
            if args.check:
                print(f"{path} is up to date", file=sys.stderr)
            return 0
        sys.stdout.writelines(difflib.unified_diff(
            old.splitlines(keepends=True), code.splitlines(keepends=True),
            fromfile=f"{path} (committed)", tofile=f"{path} (generated now)"))
        if args.check:
            print(f"{path} is stale; regenerate with: netdsl compile {args.file} --target {args.target} -o {path}",
                  file=sys.stderr)
            return 1
        return 0
    if not args.output:
        sys.stdout.write(code)
        return 0
    write_atomic(Path(args.output), code)
    return 0


def write_atomic(path: Path, text: str) -> None:
    """Write only the path the user named, via a temp file beside it, so a crash never leaves half a file."""
    fd, tmp = tempfile.mkstemp(dir=str(path.parent or Path(".")), prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
