"""Diagnostics: every user mistake ends here, as `file:line:col: error: msg [code]`.

User errors are collected as Diagnostic values and raised together in one
NetdslError, so a file with five mistakes reports five lines, not one.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """A region of a source file; lines and columns are 1-based."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def to_json(self) -> list:
        return [self.file, self.line, self.col, self.end_line, self.end_col]

    @classmethod
    def from_json(cls, data: list) -> "Span":
        return cls(*data)


NO_SPAN = Span("<netdsl>", 1, 1, 1, 1)


@dataclass(frozen=True)
class Diagnostic:
    code: str
    message: str
    span: Span
    note: str | None = None

    def format(self, sources: dict[str, str] | None = None) -> str:
        s = self.span
        out = [f"{printable(str(s.file))}:{s.line}:{s.col}: error: {printable(self.message)} [{self.code}]"]
        text = (sources or {}).get(s.file)
        if text is not None:
            lines = text.split("\n")  # as the lexer counts lines: \r, \f, \u2028 ... do not end one
            if 1 <= s.line <= len(lines):
                src = printable(lines[s.line - 1].rstrip("\r"))
                out.append("    " + src)
                width = 1
                if s.end_line == s.line and s.end_col > s.col:
                    width = s.end_col - s.col
                width = max(1, min(width, len(src) - s.col + 1))
                out.append("    " + " " * (s.col - 1) + "^" + "~" * (width - 1))
        if self.note:
            out.append(f"note: {self.note}")
        return "\n".join(out)


def printable(line: str) -> str:
    """A source line safe to echo to a terminal, one column per character, as the lexer counts them.

    Tabs become one space; control, format and surrogate characters (escape sequences, bidi
    overrides, stray \r) become '?', so a file cannot drive the user's terminal through a diagnostic.
    """
    if line.isprintable():
        return line
    return "".join(" " if c == "\t" else c if c.isprintable() or c == " " else "?" for c in line)


class NetdslError(Exception):
    """One or more user errors. Never carries a traceback worth showing."""

    def __init__(self, diagnostics: list[Diagnostic] | Diagnostic, sources: dict[str, str] | None = None):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics = list(diagnostics)
        self.sources = dict(sources or {})
        super().__init__(self.format())

    def format(self) -> str:
        return "\n".join(d.format(self.sources) for d in self.diagnostics)


def error(code: str, message: str, span: Span, note: str | None = None) -> NetdslError:
    return NetdslError(Diagnostic(code, message, span, note))


def did_you_mean(word: str, choices) -> str:
    import difflib

    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
