"""Source text -> syntax tree (netdsl.syntax), with a Span on every node.

One module-level LALR parser; the transformer runs after parse() and does not
recurse (Transformer_NonRecursive). Later stages recurse on the tree, so bracket
nesting is bounded before parsing and tree depth while the tree is built (an
operator chain like 1+1+1+... nests without brackets, and a 100k-term chain
must stop at term 400, not after parsing all of it). Literals are checked here, at their token: numbers must
be finite and within +-2**62 (as every result of arithmetic is), strings must
be valid Python-style literals.
"""
from __future__ import annotations

import ast
import math
import re
import warnings
from importlib import resources

from lark import Lark, Token, Transformer_NonRecursive, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from . import syntax as S
from .errors import Diagnostic, NetdslError, Span
from .limits import LIMITS

# Package data: read through importlib.resources so a wheel install finds it too.
GRAMMAR = resources.files("netdsl") / "grammars" / "netdsl.lark"

# Readable names for the terminals Lark reports in "expected ..." messages.
_TOKEN_NAMES = {
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'", "RBRACE": "'}'",
    "COMMA": "','", "EQUAL": "'='", "COLON": "':'", "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'",
    "SLASH": "'/'", "PERCENT": "'%'", "NAME": "a name", "NUMBER": "a number", "STRING": "a string",
    "__ANON_0": "'>>'", "$END": "end of file",
}


class _ToAst(Transformer_NonRecursive):
    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _span(self, meta) -> Span:
        if getattr(meta, "empty", True):
            return Span(self.file, 1, 1, 1, 1)
        return Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tok(self, tok: Token) -> Span:
        return Span(self.file, tok.line, tok.column, tok.end_line, tok.end_column)

    # statements
    @v_args(meta=True)
    def start(self, meta, items):
        return S.Module(self._span(meta), tuple(items))

    @v_args(meta=True)
    def model_stmt(self, meta, items):
        return S.ModelStmt(self._tok(items[0]), str(items[0]))

    @v_args(meta=True)
    def import_stmt(self, meta, items):
        return S.Import(self._span(meta), _unquote(items[0], self._tok(items[0])))

    @v_args(meta=True)
    def def_stmt(self, meta, items):
        name, params, body = items
        return S.Def(self._tok(name), str(name), tuple(params or ()), body)

    def params(self, items):
        return tuple(p for p in items if p is not None)

    @v_args(meta=True)
    def param(self, meta, items):
        return S.Param(self._tok(items[0]), str(items[0]), items[1])

    @v_args(meta=True)
    def assign(self, meta, items):
        return S.Assign(self._tok(items[0]), str(items[0]), items[1])

    @v_args(meta=True)
    def with_stmt(self, meta, items):
        return S.With(self._span(meta), items[0], tuple(items[1:]))

    @v_args(meta=True)
    def output_stmt(self, meta, items):
        return S.Output(self._span(meta), tuple(S.Name(self._tok(t), str(t)) for t in items))

    @v_args(meta=True)
    def train_block(self, meta, items):
        return S.Train(self._span(meta), tuple(items))

    @v_args(meta=True)
    def train_entry(self, meta, items):
        return S.TrainEntry(self._tok(items[0]), str(items[0]), items[1])

    # expressions
    @v_args(meta=True)
    def lambda_(self, meta, items):
        param, body = items
        return S.Lambda(self._span(meta), None if param is None else str(param), body)

    def _bin(op):
        @v_args(meta=True)
        def f(self, meta, items):
            return S.BinOp(self._span(meta), op, items[0], items[1])
        return f

    compose = _bin(">>")
    add, sub, mul, div = _bin("+"), _bin("-"), _bin("*"), _bin("/")
    floordiv, mod, pow = _bin("//"), _bin("%"), _bin("**")

    @v_args(meta=True)
    def neg(self, meta, items):
        return S.UnaryOp(self._span(meta), "-", items[0])

    @v_args(meta=True)
    def pos(self, meta, items):
        return S.UnaryOp(self._span(meta), "+", items[0])

    @v_args(meta=True)
    def index(self, meta, items):
        return S.Index(self._span(meta), items[0], items[1])

    @v_args(meta=True)
    def call(self, meta, items):
        func, args = items
        pos, kw = [], []
        for a in args or ():
            (kw if isinstance(a, S.Kwarg) else pos).append(a)
        return S.Call(self._span(meta), func, tuple(pos), tuple(kw))

    def args(self, items):
        return [a for a in items if a is not None]

    @v_args(meta=True)
    def kwarg(self, meta, items):
        return S.Kwarg(self._tok(items[0]), str(items[0]), items[1])

    @v_args(meta=True)
    def number(self, meta, items):
        tok = items[0]
        return S.Number(self._tok(tok), _number(tok, self._tok(tok)))

    @v_args(meta=True)
    def string(self, meta, items):
        return S.String(self._tok(items[0]), _unquote(items[0], self._tok(items[0])))

    @v_args(meta=True)
    def name(self, meta, items):
        return S.Name(self._tok(items[0]), str(items[0]))

    @v_args(meta=True)
    def true(self, meta, items):
        return S.Const(self._span(meta), True)

    @v_args(meta=True)
    def false(self, meta, items):
        return S.Const(self._span(meta), False)

    @v_args(meta=True)
    def none(self, meta, items):
        return S.Const(self._span(meta), None)

    @v_args(meta=True)
    def tuple_(self, meta, items):
        return S.Tuple(self._span(meta), tuple(i for i in items if i is not None))

    @v_args(meta=True)
    def list_(self, meta, items):
        return S.List(self._span(meta), tuple(i for i in items if i is not None))


MAX_INT = 2 ** 62  # the same bound lower.py puts on the result of arithmetic


class _LiteralError(Exception):
    def __init__(self, diagnostic: Diagnostic):
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


def _number(tok, span: Span):
    text = str(tok)
    if any(c in text for c in ".eE"):
        value = float(text)  # the NUMBER terminal is always a valid float literal
        if not math.isfinite(value):
            raise _LiteralError(Diagnostic("E501", f"number {_clip(text)} is out of range (too large for a float)", span))
        return value
    digits = text.lstrip("0") or "0"
    # compare the digit count first: int() of a 5000-digit literal is refused by Python itself
    if len(digits) > 19 or int(digits) > MAX_INT:
        raise _LiteralError(Diagnostic("E501", f"number {_clip(text)} is out of range (the limit is 2**62)", span))
    return int(digits)


def _unquote(tok, span: Span) -> str:
    # The STRING terminal only admits Python-style literals, so literal_eval is exact and safe.
    # Bad escapes ("\q", "\N{nope}", "\x0") and NUL characters are the user's mistake: say so at the string.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "\q" is only a warning in Python; here it is an error
            return ast.literal_eval(str(tok))
    except (SyntaxError, ValueError, Warning) as e:
        reason = getattr(e, "msg", None) or str(e)
        if "null" in reason:
            reason = "it contains a NUL character"
        reason = re.sub(r"^\(unicode error\) 'unicodeescape' codec can't decode bytes? in position [\d-]+: ", "", reason)
        raise _LiteralError(Diagnostic("E001", f"invalid string literal: {reason}", span,
                                       r"strings use Python escapes: \\ \" \' \n \t \xhh \uhhhh")) from None


def _clip(text: str, n: int = 24) -> str:
    """A long token shortened for a message: 1111...1111 (5000 characters)."""
    return text if len(text) <= n else f"{text[:10]}...{text[-10:]} ({len(text)} characters)"


# Names become identifiers (at most 64 characters, checked where they do: E106), but any name may
# appear in a message ("name '...' is not defined"); 256 keeps every message readable.
MAX_NAME = 256


class _LongName(Exception):
    def __init__(self, token):
        super().__init__("name too long")
        self.token = token


class _TooDeep(Exception):
    def __init__(self, where):
        super().__init__("tree too deep")
        self.where = where  # the tree or token where the bound was crossed


class _DepthTree(Tree):
    """A parse tree node that knows its height and refuses to exceed max_expr_depth.

    The LALR parser builds nodes bottom-up as it reduces, so the bound stops a long
    operator chain after max_expr_depth terms instead of after parsing the whole file.
    """

    def __init__(self, data, children, meta=None):
        super().__init__(data, children, meta)
        h = 0
        for c in children:
            if type(c) is _DepthTree and c.height > h:
                h = c.height
        self.height = h + 1
        if self.height > LIMITS.max_expr_depth:
            raise _TooDeep(self)


_PARSER = Lark(
    GRAMMAR.read_text(encoding="utf-8"),
    parser="lalr",
    propagate_positions=True,
    maybe_placeholders=True,
    tree_class=_DepthTree,
)


def parse(text: str, file: str = "<string>") -> S.Module:
    """Parse netdsl source text. Raises NetdslError for any user mistake."""
    sources = {file: text}
    if len(text) > LIMITS.max_source_bytes:
        raise NetdslError(Diagnostic(
            "E004", f"file is {len(text)} bytes, over the limit of {LIMITS.max_source_bytes}",
            Span(file, 1, 1, 1, 1), "raise NETDSL_MAX_SOURCE_BYTES to allow larger files"), sources)
    _check_nesting(text, file, sources)
    try:
        tree = _parse_bounded(text)
    except UnexpectedInput as e:
        raise NetdslError(_syntax_diagnostic(e, text, file), sources) from None
    except _LongName as e:
        t = e.token
        raise NetdslError(Diagnostic("E001", f"name '{str(t)[:20]}...' is {len(t)} characters long; the limit is {MAX_NAME}",
                                     Span(file, t.line, t.column, t.line, t.column + 1)), sources) from None
    except _TooDeep as e:
        line, col = _first_position(e.where)
        raise NetdslError(Diagnostic("E005", f"expression nested more than {LIMITS.max_expr_depth} deep",
                                     Span(file, line, col, line, col + 1),
                                     "a long chain like 1 + 1 + ... nests one level per operator; "
                                     "raise NETDSL_MAX_EXPR_DEPTH to allow more"), sources) from None
    try:
        module = _ToAst(file).transform(tree)
    except VisitError as e:  # a malformed literal; anything else is a bug in netdsl
        if isinstance(e.orig_exc, _LiteralError):
            raise NetdslError(e.orig_exc.diagnostic, sources) from None
        raise
    return module


# Every grammar rule has at most 7 symbols, so the LALR stack of a parse whose tree is at most
# max_expr_depth deep never holds more than 7 symbols per level of it: a longer stack means the
# file is too deep. Right-recursive chains (1 ** 1 ** ..., - - - 1, lambda: lambda: ...) are only
# reduced at their end, so this is what stops them early; left-recursive ones stop in _DepthTree.
_STACK_PER_LEVEL = 8


def _parse_bounded(text: str):
    """_PARSER.parse(text), but give up as soon as the parser stack shows the tree is too deep."""
    ip = _PARSER.parse_interactive(text)
    state = ip.parser_state
    limit = _STACK_PER_LEVEL * LIMITS.max_expr_depth
    token = None
    try:
        for token in state.lexer.lex(state):
            if token.type == "NAME" and len(token) > MAX_NAME:
                raise _LongName(token)
            state.feed_token(token)
            if len(state.state_stack) > limit:
                raise _TooDeep(token)
        end = Token.new_borrow_pos("$END", "", token) if token else Token("$END", "", 0, 1, 1)
        return state.feed_token(end, True)
    except UnexpectedInput as e:
        e.interactive_parser = ip  # as Lark's own loop does: it computes what the parser accepts
        raise


def _first_position(tree) -> tuple:
    """Line and column of the first token under a tree (walked iteratively: the tree is deep)."""
    node = tree
    if isinstance(node, Token):
        return node.line or 1, node.column or 1
    while True:
        meta = getattr(node, "_meta", None)
        if meta is not None and not getattr(meta, "empty", True):
            return meta.line, meta.column
        children = [c for c in getattr(node, "children", ()) if c is not None]
        if not children:
            return 1, 1
        node = children[0]
        if isinstance(node, Token):
            return node.line or 1, node.column or 1


# What the nesting check looks at: brackets and newlines, skipping comments and strings
# exactly as the COMMENT and STRING terminals delimit them (a "(" in a comment nests nothing).
_NESTING_RE = re.compile(r"""#[^\n]*|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|[()\[\]{}\n]""")


_STRIP_RE = re.compile(r"""#[^\n]*|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'""")  # comments and strings
_OPEN_CLOSE = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS = bytes(c for c in range(128) if chr(c) not in "()[]{}")


def _bracket_depth_over(text: str, limit: int) -> bool:
    """Whether matched brackets nest deeper than limit, in a few C-speed passes with no per-bracket
    Python objects (a per-bracket loop takes seconds on a 1 MB file, ten times that under tracemalloc).

    Each pass deletes the innermost "()" pairs; the number of passes is the nesting depth. Unmatched
    brackets are left to the parser (which bounds its own stack and reports them).
    """
    b = _STRIP_RE.sub("", text).encode("ascii", "ignore").translate(_OPEN_CLOSE, _NOT_BRACKETS)
    for _ in range(limit + 1):
        if b"()" not in b:
            return False
        b = b.replace(b"()", b"")
    return b"()" in b


def _check_nesting(text: str, file: str, sources: dict) -> None:
    """Bound bracket depth before parsing, so no later stage can recurse without limit."""
    depth, line, line_start = 0, 1, 0
    limit = LIMITS.max_nesting
    if not _bracket_depth_over(text, limit):
        return
    for m in _NESTING_RE.finditer(text):
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
        elif ch in (")", "]", "}"):
            depth = max(0, depth - 1)


def _syntax_diagnostic(e: UnexpectedInput, text: str, file: str) -> Diagnostic:
    line, col = max(getattr(e, "line", 1) or 1, 1), max(getattr(e, "column", 1) or 1, 1)
    if isinstance(e, UnexpectedToken) and e.token.type == "$END":
        lines = text.rstrip("\r\n").split("\n")  # only "\n" ends a line, as for the lexer
        line, col = len(lines), len(lines[-1]) + 1
        return Diagnostic("E003", f"unexpected end of file; expected {_expected(e.expected)}",
                          Span(file, line, col, line, col + 1))
    if isinstance(e, UnexpectedEOF):
        return Diagnostic("E003", f"unexpected end of file; expected {_expected(e.expected)}", Span(file, line, col, line, col + 1))
    if isinstance(e, UnexpectedToken):
        tok = e.token
        width = max(1, len(str(tok)))
        return Diagnostic("E001", f"unexpected {_describe(tok)}; expected {_expected(e.accepts or e.expected)}",
                          Span(file, line, col, line, col + width))
    if isinstance(e, UnexpectedCharacters):
        ch = text[e.pos_in_stream] if e.pos_in_stream < len(text) else "?"
        return Diagnostic("E002", f"unexpected character {ch!r}", Span(file, line, col, line, col + 1))
    return Diagnostic("E001", "syntax error", Span(file, line, col, line, col + 1))


def _describe(tok: Token) -> str:
    if tok.type == "NAME":
        return f"name '{_clip(str(tok))}'"
    if tok.type == "NUMBER":
        return f"number {_clip(str(tok))}"
    if tok.type == "STRING":
        return "string"
    return f"'{_clip(str(tok))}'"


def _expected(names) -> str:
    words = set()
    for n in names:
        if n in _TOKEN_NAMES:
            words.add(_TOKEN_NAMES[n])
        elif n.isupper() and n.isalpha():
            words.add(f"'{n.lower()}'" if n not in ("TRUE", "FALSE", "NONE") else f"'{n.title()}'")
        else:
            words.add(n)
    ordered = sorted(words, key=lambda w: (w[1:2].isalpha(), w))  # punctuation first: usually the real answer
    if len(ordered) > 6:
        ordered = ordered[:6] + ["..."]
    return " or ".join(ordered) if ordered else "something else"
