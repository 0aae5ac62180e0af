"""The pre-pass before parsing: bracket depth is bounded before any stage can recurse on it.

Both scans are linear in the file (hostile inputs included: docs/security.md).
"""
from __future__ import annotations

import re

from .errors import Diagnostic, NetdslError, Span
from .limits import LIMITS

_QUOTE_OR_HASH = re.compile(r"""[#"']""")
_RUNS = {'"': re.compile(r'"(?:[^"\\\n]|\\.)*'), "'": re.compile(r"'(?:[^'\\\n]|\\.)*")}
_BRACKET_OR_NEWLINE = re.compile(r"[()\[\]{}\n]")
_OPEN_CLOSE = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS = bytes(c for c in range(128) if chr(c) not in "()[]{}")


def blank_strings_and_comments(text: str) -> str:
    """text with every comment and string literal replaced by spaces (so positions still hold).

    Linear: a regex scan for strings restarts after each quote that opens no complete string and
    runs to the end of the line again, quadratic on a line of 60,000 quotes. Here an unclosed run
    is scanned once: a quote of the same kind inside it can only be the escaped half of a \\"
    pair, and a run started there ends at the same place, unclosed too, so it is skipped.
    """
    parts, kept, pos, end = [], 0, 0, len(text)
    dead = {'"': -1, "'": -1}  # a quote of this kind before this position opens no string
    search = _QUOTE_OR_HASH.search
    while True:
        m = search(text, pos)
        if m is None:
            break
        start = m.start()
        ch = text[start]
        if ch == "#":
            stop = text.find("\n", start)
            stop = end if stop < 0 else stop
        elif start < dead[ch]:
            pos = start + 1
            continue
        else:
            stop = _RUNS[ch].match(text, start).end()
            if stop < end and text[stop] == ch:
                stop += 1
            else:
                dead[ch] = stop
                pos = start + 1
                continue
        parts += (text[kept:start], " " * (stop - start))
        kept = pos = stop
    parts.append(text[kept:])
    return "".join(parts)


def _bracket_depth_over(bare: str, limit: int) -> bool:
    """Whether matched brackets in bare (text without strings and comments) nest deeper than limit,
    in a few C-speed passes with no per-bracket Python objects (a per-bracket loop takes seconds on
    a 1 MB file, ten times that under tracemalloc).

    Each pass deletes the innermost "()" pairs; the number of passes is the nesting depth. Unmatched
    brackets are left to the parser (which bounds its own stack and reports them).
    """
    b = bare.encode("ascii", "ignore").translate(_OPEN_CLOSE, _NOT_BRACKETS)
    for _ in range(limit + 1):
        if b"()" not in b:
            return False
        b = b.replace(b"()", b"")
    return b"()" in b


def check_nesting(text: str, file: str, sources: dict) -> None:
    """Bound bracket depth before parsing, so no later stage can recurse without limit."""
    depth, line, line_start = 0, 1, 0
    limit = LIMITS.max_nesting
    bare = blank_strings_and_comments(text)
    if not _bracket_depth_over(bare, limit):
        return
    for m in _BRACKET_OR_NEWLINE.finditer(bare):
        ch = m.group()
        if ch == "\n":
            line, line_start = line + 1, m.end()
        elif ch in ("(", "[", "{"):
            depth += 1
            if depth > limit:
                col = m.start() - line_start + 1
                raise NetdslError(Diagnostic(
                    "E005", f"brackets nested more than {limit} deep", Span(file, line, col, line, col + 1),
                    "raise NETDSL_MAX_NESTING to allow deeper nesting"), sources)
        else:
            depth = max(0, depth - 1)
