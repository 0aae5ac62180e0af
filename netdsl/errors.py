"""Diagnostics: every user mistake ends here, as `file:line:col: error: msg [code]`.

Likely mistakes in a valid model (netdsl/lint.py) are diagnostics too, with severity "warning"
and a W-code: `file:line:col: warning: msg [W001]`; they never change an exit status unless
`netdsl check --Werror` turns them into errors.

User errors are collected as Diagnostic values and raised together in one
NetdslError, so a file with five mistakes reports five lines, not one.
CODES is the one table of error codes, one meaning each; docs/errors.md is generated from it
(`python -m netdsl.errors --markdown > docs/errors.md`) and tests/test_error_codes.py checks that
every code used in netdsl/ is in it and that the committed page is current.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

# code -> its one meaning. A new code takes an unused number in its stage's range and a line here.
# E-codes are errors; W-codes are warnings (netdsl/lint.py), one rule each.
CODES = {
    # reading and parsing
    "E001": "syntax error: an unexpected token, an invalid string literal, an over-long name",
    "E002": "a character that is not allowed, or a file that is not valid UTF-8",
    "E003": "unexpected end of file",
    "E004": "the file is over the size limit (NETDSL_MAX_SOURCE_BYTES)",
    "E005": "nested too deep: brackets, expressions, evaluation, lists of layers or composites",
    "E006": "the file cannot be read: missing, unreadable, not a regular file, or an invalid path",
    "E007": "`netdsl ir --load`: the file is not a netdsl IR document",
    # evaluation
    "E101": "an unknown name, or a name used before it is defined (with a \"did you mean\")",
    "E102": "an unknown argument or option (with a \"did you mean\")",
    "E103": "an argument or value of the wrong type or out of range (the message names the value)",
    "E104": "a missing argument",
    "E105": "an argument given twice",
    "E106": "a name that cannot become an identifier in generated code",
    "E107": "an input defined twice",
    "E108": "calling or applying something that is not callable",
    "E109": "the wrong number of arguments or inputs",
    "E110": "recursion between blocks or lambdas",
    "E111": "an import that cannot be done",
    "E112": "`with` takes only default_options(...)",
    "E115": "a layer that reads the lengths of a padded sequence batch (a recurrence, select_last, Delay with T < 0) "
            "after a 1-D convolution or pooling that changed the sequence length",
    # shapes
    "E201": "a layer applied to an input of the wrong shape or type",
    "E202": "a window that does not fit: an output size of zero or less, or padding not smaller than the window",
    "E203": "a shared layer applied to inputs of different shapes",
    # the model's outputs and inputs
    "E301": "the model declares no output",
    "E302": "the model has no Input",
    "E304": "an output that is not a value computed from the inputs",
    # the train block
    "E401": "an unknown training setting",
    "E402": "an unknown loss",
    "E403": "an unknown metric or optimizer",
    "E404": "a second training block",
    # resource limits (docs/security.md)
    "E501": "a resource limit: layers, layer applications, evaluation steps, or a number out of range",
    "E502": "the model has more parameters than NETDSL_MAX_PARAMS",
    # weight files
    "E601": "a weight file that cannot be read or is not an .npz archive",
    "E602": "a weight file that lacks a parameter of the model",
    "E603": "a weight file that holds an array the model does not have",
    "E604": "a weight array of the wrong shape",
    "E605": "a weight array of the wrong dtype",
    "E606": "a weight file that holds pickled objects",
    "E607": "a weight array with NaN or Inf values",
    "E608": "an output file (weights, checkpoint) that cannot be written",
    "E609": "`netdsl run`: the estimated memory of a training step exceeds the --max-memory limit",
    # netdsl run
    "E701": "`netdsl run`: no dataset, or the dataset cannot feed the model's inputs and outputs",
    "E702": "`netdsl run`: training diverged (NaN or Inf in the loss or the parameters)",
    "E703": "`netdsl run`: a checkpoint that cannot be resumed",
    "E704": "`netdsl run`: the executor does not support the model's loss or optimizer",
    # targets
    "E801": "a target cannot express a layer kind",
    "E802": "a target cannot express a use of a layer kind (an activation, initialiser or setting)",
    # interchange (netdsl/onnx/)
    "E820": "`netdsl import`: the file is not a readable, valid ONNX model",
    "E821": "`netdsl import`: ONNX nodes the IR cannot hold (every one is listed, with node names and op types)",
    "E822": "`netdsl import`: a PyTorch or Keras source that cannot be loaded, exported or converted",
    # warnings (netdsl/lint.py): the model is valid but probably not what was meant
    "W001": "a softmax or sigmoid output layer under cross_entropy_with_softmax, which applies softmax itself (a double softmax)",
    "W002": "a pooling layer with the default stride 1 feeding a Dense layer, which multiplies its parameter count",
    "W003": "`loss = cross_entropy` (or categorical_crossentropy) is an alias for cross_entropy_with_softmax: the output must be logits",
    "W004": "a model with several outputs: the loss trains the first output only",
    "W005": "Dropout as the last layer of the trained output: the loss sees dropped-out values",
    "W006": "an Input that no output depends on",
    "W007": "a value listed twice in `output`",
}


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
    severity: str = "error"  # or "warning" (W-codes); `check --Werror` makes warnings errors

    def format(self, sources: dict[str, str] | None = None) -> str:
        s = self.span
        out = [f"{printable(str(s.file))}:{s.line}:{s.col}: {self.severity}: {printable(self.message)} [{self.code}]"]
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


def warning(code: str, message: str, span: Span, note: str | None = None) -> Diagnostic:
    return Diagnostic(code, message, span, note, "warning")


def markdown() -> str:
    """docs/errors.md: the tables of codes, generated from CODES."""
    out = ["# Error codes", "",
           "Generated from `CODES` in `netdsl/errors.py` by `python -m netdsl.errors --markdown`; do not edit.",
           "Every user error prints `file:line:col: error: message [CODE]`, the source line and a caret, and",
           "`netdsl` exits 1.", "", "| code | meaning |", "|---|---|"]
    out += [f"| {code} | {meaning} |" for code, meaning in CODES.items() if code.startswith("E")]
    out += ["", "## Warnings", "",
            "A warning prints `file:line:col: warning: message [W001]`, the source line and a caret, and does",
            "not change the exit status: `netdsl check`, `compile` and `run` print warnings to stderr and go on.",
            "`netdsl check --Werror` reports them as errors and exits 1. See docs/language.md, Warnings.", "",
            "| code | meaning |", "|---|---|"]
    out += [f"| {code} | {meaning} |" for code, meaning in CODES.items() if code.startswith("W")]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        print("usage: python -m netdsl.errors --markdown", file=sys.stderr)
        sys.exit(2)
    sys.stdout.write(markdown())
