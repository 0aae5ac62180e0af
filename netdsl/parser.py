"""Source text -> syntax tree (netdsl.syntax), with a Span on every node.

Lark supplies the grammar's LALR tables and its contextual lexer's scanners; the loop that drives
them is here, and builds each syntax node the moment its rule is reduced, with the positions Lark's
propagate_positions would give it. No Lark tree is made and nothing recurses, so the cost is linear
in the file (a Lark tree plus a transformer pass cost ~3x more, and rescanning repetitions made a
10k-statement file quadratic). Later stages recurse on the tree, so bracket nesting is bounded
before parsing and tree depth while the tree is built (an operator chain like 1+1+1+... nests
without brackets, and a 100k-term chain must stop at term 400, not after parsing all of it).
Literals are checked here, at their token: numbers must be finite and within +-2**62 (as every
result of arithmetic is), strings must be valid Python-style literals.
"""
from __future__ import annotations

import ast
import gc
import math
import re
import warnings
from importlib import resources

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.parsers.lalr_analysis import Shift

from . import syntax as S
from .errors import Diagnostic, NetdslError, Span
from .limits import LIMITS
from .prescan import check_nesting

# Package data: read through importlib.resources so a wheel install finds it too.
GRAMMAR = resources.files("netdsl") / "grammars" / "netdsl.lark"

# Readable names for the terminals Lark reports in "expected ..." messages.
_TOKEN_NAMES = {
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'", "RBRACE": "'}'",
    "COMMA": "','", "EQUAL": "'='", "COLON": "':'", "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'",
    "SLASH": "'/'", "PERCENT": "'%'", "NAME": "a name", "NUMBER": "a number", "STRING": "a string",
    "__ANON_0": "'>>'", "$END": "end of file",
}


class _Build:
    """The syntax node for each grammar rule, built the moment the LALR parser reduces it.

    `pos` is what Lark's propagate_positions would give the rule's tree as meta (None when empty);
    `items` are the rule's children after Lark's child filter (anonymous tokens dropped, "_x" rules
    spliced in, None for a missing [optional] part).
    """

    def __init__(self, file: str):
        self.file = file
        self.literal_error = None  # the first malformed literal: reported only if the file parses

    def _span(self, pos) -> Span:
        if pos is None:
            return Span(self.file, 1, 1, 1, 1)
        return Span(self.file, *pos)

    def _tok(self, tok: Token) -> Span:
        return Span(self.file, tok.line, tok.column, tok.end_line, tok.end_column)

    def _literal(self, convert, tok, span, placeholder):
        try:
            return convert(tok, span)
        except _LiteralError as e:
            if self.literal_error is None:
                self.literal_error = e
            return placeholder

    # statements
    def start(self, pos, items):
        return S.Module(self._span(pos), tuple(items))

    def model_stmt(self, pos, items):
        return S.ModelStmt(self._tok(items[0]), str(items[0]))

    def import_stmt(self, pos, items):
        return S.Import(self._span(pos), self._literal(_unquote, items[0], self._tok(items[0]), ""))

    def def_stmt(self, pos, items):
        name, params, body = items
        return S.Def(self._tok(name), str(name), tuple(params or ()), body)

    def params(self, pos, items):
        return tuple(p for p in items if p is not None)

    def param(self, pos, items):
        return S.Param(self._tok(items[0]), str(items[0]), items[1])

    def assign(self, pos, items):
        return S.Assign(self._tok(items[0]), str(items[0]), items[1])

    def model_assign(self, pos, items):
        # `model = ...` (seed code's usual name) beside the `model Name` statement
        line, col = pos[0], pos[1]
        return S.Assign(Span(self.file, line, col, line, col + len("model")), "model", items[0])

    def with_stmt(self, pos, items):
        return S.With(self._span(pos), items[0], tuple(items[1:]))

    def output_stmt(self, pos, items):
        return S.Output(self._span(pos), tuple(S.Name(self._tok(t), str(t)) for t in items))

    def train_block(self, pos, items):
        return S.Train(self._span(pos), tuple(items))

    def train_entry(self, pos, items):
        return S.TrainEntry(self._tok(items[0]), str(items[0]), items[1])

    # expressions
    def lambda_(self, pos, items):
        param, body = items
        return S.Lambda(self._span(pos), None if param is None else str(param), body)

    def _bin(op):
        def f(self, pos, items):
            return S.BinOp(self._span(pos), op, items[0], items[1])
        return f

    compose = _bin(">>")
    add, sub, mul, div = _bin("+"), _bin("-"), _bin("*"), _bin("/")
    floordiv, mod, pow = _bin("//"), _bin("%"), _bin("**")

    def neg(self, pos, items):
        return S.UnaryOp(self._span(pos), "-", items[0])

    def pos(self, pos, items):
        return S.UnaryOp(self._span(pos), "+", items[0])

    def index(self, pos, items):
        return S.Index(self._span(pos), items[0], items[1])

    def call(self, pos, items):
        func, args = items
        positional, kw = [], []
        for a in args or ():
            (kw if isinstance(a, S.Kwarg) else positional).append(a)
        return S.Call(self._span(pos), func, tuple(positional), tuple(kw))

    def args(self, pos, items):
        return [a for a in items if a is not None]

    def kwarg(self, pos, items):
        return S.Kwarg(self._tok(items[0]), str(items[0]), items[1])

    def number(self, pos, items):
        span = self._tok(items[0])
        return S.Number(span, self._literal(_number, items[0], span, 0))

    def string(self, pos, items):
        span = self._tok(items[0])
        return S.String(span, self._literal(_unquote, items[0], span, ""))

    def name(self, pos, items):
        return S.Name(self._tok(items[0]), str(items[0]))

    def true(self, pos, items):
        return S.Const(self._span(pos), True)

    def false(self, pos, items):
        return S.Const(self._span(pos), False)

    def none(self, pos, items):
        return S.Const(self._span(pos), None)

    def tuple_(self, pos, items):
        return S.Tuple(self._span(pos), tuple(i for i in items if i is not None))

    def list_(self, pos, items):
        return S.List(self._span(pos), tuple(i for i in items if i is not None))


MAX_INT = 2 ** 62  # the same bound lower.py puts on the result of arithmetic


class _LiteralError(Exception):
    def __init__(self, diagnostic: Diagnostic):
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


def _number(tok, span: Span):
    text = str(tok)
    if "." in text or "e" in text or "E" in text:
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


_PARSER = Lark(GRAMMAR.read_text(encoding="utf-8"), parser="lalr", maybe_placeholders=True)

# How each grammar rule is reduced, precomputed from Lark's rules exactly as Lark's parse-tree builder
# (ChildFilterLALR, ExpandSingleChild, PropagatePositions) would build it, but into syntax nodes
# directly: a Lark tree costs a node, a meta and a second (transformer) pass per rule.
_UNIT, _KEEP1, _SPLICE, _BUILD = range(4)


def parse(text: str, file: str = "<string>") -> S.Module:
    """Parse netdsl source text. Raises NetdslError for any user mistake."""
    sources = {file: text}
    if len(text) > LIMITS.max_source_bytes:
        raise NetdslError(Diagnostic(
            "E004", f"file is {len(text)} bytes, over the limit of {LIMITS.max_source_bytes}",
            Span(file, 1, 1, 1, 1), "raise NETDSL_MAX_SOURCE_BYTES to allow larger files"), sources)
    check_nesting(text, file, sources)
    build = _Build(file)
    # Parsing allocates objects and frees none; the cyclic collector would rescan them again and
    # again (the time grows faster than the file), so it is paused for the parse.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        module = _parse_bounded(text, build)
    except UnexpectedInput as e:
        raise NetdslError(_syntax_diagnostic(e, text, file), sources) from None
    except _LongName as e:
        t = e.token
        raise NetdslError(Diagnostic("E001", f"name '{str(t)[:20]}...' is {len(t)} characters long; the limit is {MAX_NAME}",
                                     Span(file, t.line, t.column, t.line, t.column + 1)), sources) from None
    except _TooManyTokens as e:
        t = e.token
        raise NetdslError(Diagnostic("E004", f"file has more than {LIMITS.max_tokens} tokens (names, numbers and symbols)",
                                     Span(file, t.line, t.column, t.line, t.column + 1),
                                     "the limit bounds the time a file takes to compile; "
                                     "raise NETDSL_MAX_TOKENS to allow more"), sources) from None
    except _NoIndent as e:
        t = e.token
        where = Span(file, t.line, t.column, t.line, t.column + max(1, len(t))) if t.type != "$END" else \
            Span(file, t.end_line or 1, t.end_column or 1, t.end_line or 1, (t.end_column or 1) + 1)
        raise NetdslError(Diagnostic("E001", "expected an indented block after 'with ...:'", where,
                                     "indent the statements the with applies to, or use braces: with ... { ... }"),
                          sources) from None
    except _TooDeep as e:
        raise NetdslError(Diagnostic("E005", f"expression nested more than {LIMITS.max_expr_depth} deep",
                                     Span(file, e.line, e.col, e.line, e.col + 1),
                                     "a long chain like 1 + 1 + ... nests one level per operator; "
                                     "raise NETDSL_MAX_EXPR_DEPTH to allow more"), sources) from None
    finally:
        if was_enabled:
            gc.enable()
    if build.literal_error is not None:  # after the whole parse: a syntax error anywhere comes first
        raise NetdslError(build.literal_error.diagnostic, sources)
    return module


def _rule_plan(rule):
    expansion = rule.expansion
    empty = rule.options.empty_indices
    if empty:  # [optional] parts that are missing become None, at these places (Lark's rule)
        bits = "".join(str(int(b)) for b in empty)
        nones = [len(ones) for ones in bits.split("0")]
    else:
        nones = [0] * (len(expansion) + 1)
    include, pending = [], 0
    for i, sym in enumerate(expansion):
        pending += nones[i]
        if not (sym.is_term and sym.filter_out):
            include.append((i, not sym.is_term and sym.name.startswith("_"), pending))
            pending = 0
    pending += nones[len(expansion)]
    name = str(rule.alias or rule.origin.name)
    expand1 = rule.options.expand1 and not rule.alias
    if expand1 and len(expansion) == 1 and len(include) == 1 and not include[0][1] and not include[0][2] and not pending:
        kind = _UNIT  # ?a: b  -- the value, its position and its height all stay as they are
    elif expand1:
        kind = _KEEP1  # ?atom: "(" expr ")" -- the child, with the parentheses as its container
    elif rule.origin.name.startswith("_"):
        kind = _SPLICE  # spliced into the parent
    else:
        kind = _BUILD
    return kind, name, len(expansion), tuple(include), pending


_TABLE = _PARSER.parser.parser.parser.parse_table
# Lark's action table with each reduce action's rule replaced by its plan (plus the rule's name for
# the goto), so the parser loop never hashes a Rule object (a Python-level __hash__).
# Lark's symbol names are Token objects, whose Python-level __eq__ every dict lookup would call.
_ACTIONS = {
    state: {str(term): (True, arg) if action is Shift else (False, _rule_plan(arg) + (str(arg.origin.name),))
            for term, (action, arg) in actions.items()}
    for state, actions in _TABLE.states.items()
}


class _TooManyTokens(Exception):
    def __init__(self, token):
        super().__init__("too many tokens")
        self.token = token


class _NoIndent(Exception):
    def __init__(self, token):
        super().__init__("no indented block")
        self.token = token


class _TooDeep(Exception):
    def __init__(self, line, col):
        super().__init__("tree too deep")
        self.line, self.col = line, col


# Every grammar rule has at most 7 symbols, so the LALR stack of a parse whose tree is at most
# max_expr_depth deep never holds more than 7 symbols per level of it: a longer stack means the
# file is too deep. Right-recursive chains (1 ** 1 ** ..., - - - 1, lambda: lambda: ...) are only
# reduced at their end, so this is what stops them early; left-recursive ones stop at the tree
# height check in _reduce (a 100k-term chain 1+1+... stops at term 400, not after the whole file).
_STACK_PER_LEVEL = 8


def _parse_bounded(text: str, build: _Build):
    """Lark's LALR parse of text (its contextual lexer's scanners and its tables, so the same tokens
    and the same errors), with syntax nodes built as rules are reduced, giving up as soon as the
    tree is too deep.

    Beside each value the parser keeps an info tuple: the value's container position (first line,
    column, last line, column: what Lark's propagate_positions computes, None when it has none),
    where the value starts for a "too deep" message, and its height as a Lark tree.
    """
    ip = _PARSER.parse_interactive(text)
    state = ip.parser_state
    states, end_state = _ACTIONS, _TABLE.end_states["start"]
    stack = state.state_stack  # the lexer reads the parser's position from it: change it in place
    values, infos = [], []
    limit = _STACK_PER_LEVEL * LIMITS.max_expr_depth
    max_depth = LIMITS.max_expr_depth
    units = _UNIT_CHAINS
    max_tokens = LIMITS.max_tokens
    try:
        for count, token in enumerate(_indented_blocks(_lex(text, stack, state))):
            typ = token.type
            if typ == "NAME" and len(token) > MAX_NAME:
                raise _LongName(token)
            if count >= max_tokens and typ != "$END":
                raise _TooManyTokens(token)
            while True:
                try:
                    shift, arg = states[stack[-1]][typ]
                except KeyError:
                    expected = {s for s in states[stack[-1]] if s.isupper()}
                    raise UnexpectedToken(token, expected, state=state, interactive_parser=None) from None
                if shift:
                    stack.append(arg)
                    values.append(token)
                    line, col = token.line, token.column
                    infos.append((line, col, token.end_line, token.end_column, line or 1, col or 1, 0))
                    break
                if arg[0] is _UNIT:  # ?a: b -- only the top state changes, so a chain of them
                    key = (stack[-2], stack[-1], typ)  # (expr <- compose <- ... <- atom) is cached
                    top = units.get(key)
                    if top is None:
                        top = _unit_chain(stack[-2], stack[-1], typ)
                        units[key] = top
                    stack[-1] = top
                    continue
                _reduce(arg, stack, values, infos, build, max_depth)
                stack.append(states[stack[-1]][arg[5]][1])
                if typ == "$END" and stack[-1] == end_state:
                    return values[-1]
            if len(stack) > limit:
                raise _TooDeep(token.line or 1, token.column or 1)
    except UnexpectedInput as e:
        e.interactive_parser = ip  # as Lark's own loop does: it computes what the parser accepts
        raise
    raise AssertionError("the parser did not reach its end state")  # a bug in netdsl, not the input


_UNIT_CHAINS: dict = {}
_BRACKETS = {"LPAR": 1, "LSQB": 1, "LBRACE": 1, "RPAR": -1, "RSQB": -1, "RBRACE": -1}


def _indented_blocks(tokens):
    """The tokens, with _INDENT after the ':' of a Python-form `with ...:` and _DEDENT before the first
    token, outside brackets, of a line indented less than the block's first line (or at the end).

    Only such a block is indentation-sensitive: everywhere else newlines and indentation stay plain
    whitespace. The header's ':' is the first one outside brackets after `with` (a lambda's colon is
    inside the call's parentheses).
    """
    blocks = []  # indentation column of each open Python-form block
    depth = 0  # bracket depth
    header = None  # bracket depth at `with`, until its ':' or '{'
    with_col = 0  # column of the last `with`
    opening = False  # the next token starts the body of a block just opened
    line = 0
    for tok in tokens:
        typ = tok.type
        first_on_line = tok.line != line and typ != "$END"
        if opening:
            opening = False
            if typ == "$END" or tok.line == line or tok.column <= with_col:
                raise _NoIndent(tok)
            blocks.append(tok.column)
        elif blocks and depth == 0 and (first_on_line or typ == "$END"):
            while blocks and (typ == "$END" or tok.column < blocks[-1]):
                blocks.pop()
                yield Token.new_borrow_pos("_DEDENT", "", tok)
        if typ != "$END":
            line = tok.end_line
        if typ == "WITH":
            header, with_col = depth, tok.column
        elif typ in _BRACKETS:
            depth += _BRACKETS[typ]
            if typ == "LBRACE" and header == depth - 1:
                header = None
        elif typ == "COLON" and header == depth:
            header = None
            yield tok
            yield Token.new_borrow_pos("_INDENT", "", tok)
            opening = True
            continue
        yield tok


def _unit_chain(below, top, typ):
    """The top state after every unit reduction (?a: b) the parser makes in state top, over state
    below, with lookahead typ: each replaces only the top state, so the result depends on no more."""
    while True:
        action = _ACTIONS[top].get(typ)
        if action is None or action[0] or action[1][0] is not _UNIT:
            return top
        top = _ACTIONS[below][action[1][5]][1]


_CLEXER = _PARSER.parser.lexer  # Lark's contextual lexer: one scanner per parser state
_STATE_LEXERS: dict = {}


def _state_lexer(st):
    """The compiled patterns and token callbacks (a NAME that spells a keyword becomes that keyword)
    of Lark's lexer for parser state st, built on first use."""
    lexer = _CLEXER.lexers[st]
    scanner = lexer.scanner  # builds lexer.callback too
    entry = (tuple(scanner._mres), dict(lexer.callback))
    _STATE_LEXERS[st] = entry
    return entry


def _lex(text: str, stack: list, state):
    """Tokens of text as Lark's contextual lexer makes them (the scanner of the parser's current
    state, the same positions), then $END. Lark's lexer costs several Python calls per token; this
    loop is one. Where no terminal matches, Lark's own lexer is run at that point to raise the
    exact error it would (UnexpectedCharacters, or UnexpectedToken if another context accepts it)."""
    pos, line, line_start, end = 0, 1, 0, len(text)
    last = None
    lexers = _STATE_LEXERS
    skip = _IGNORED.match
    new_token = getattr(Token, "_future_new", Token)  # Token() without its keyword-argument shim
    while True:
        m = skip(text, pos)
        if m:  # whitespace and comments: every state's scanner ignores them, nothing else starts so
            gap = m.group(0)
            newlines = gap.count("\n")
            if newlines:
                line += newlines
                line_start = pos + gap.rindex("\n") + 1
            pos = m.end()
        if pos >= end:
            break
        mres, callback = lexers.get(stack[-1]) or _state_lexer(stack[-1])
        for mre in mres:
            m = mre.match(text, pos)
            if m:
                break
        else:
            _lark_lex_error(state, pos, line, line_start, last)
        value, typ = m.group(0), m.lastgroup
        start, col = pos, pos - line_start + 1
        pos += len(value)
        newlines = value.count("\n")  # a string with an escaped newline: none in this grammar
        if newlines:
            line_start_new = start + value.rindex("\n") + 1
            end_line = line + newlines
        else:
            line_start_new, end_line = line_start, line
        tok = new_token(typ, value, start, line, col, end_line, pos - line_start_new + 1, pos)
        if typ in callback:
            tok = callback[typ](tok)
        last = tok
        line, line_start = end_line, line_start_new
        yield tok
    yield Token.new_borrow_pos("$END", "", last) if last is not None else Token("$END", "", 0, 1, 1)


# The grammar's ignored terminals (WS and COMMENT), any number of them in a row.
_IGNORED = re.compile(r"(?:[ \t\f\r\n]+|#[^\n]*)+")
assert {t.name: t.pattern.to_regexp() for t in _PARSER.terminals if t.name in ("WS", "COMMENT")} == \
    {"WS": "(?:[ \t\x0c\r\n])+", "COMMENT": "#[^\n]*"}, "_IGNORED must match the grammar's WS and COMMENT"


def _lark_lex_error(state, pos, line, line_start, last):
    lexer_state = state.lexer.state
    counter = lexer_state.line_ctr
    counter.char_pos, counter.line, counter.line_start_pos = pos, line, line_start
    counter.column = pos - line_start + 1
    lexer_state.last_token = last
    for _ in state.lexer.lex(state):
        break
    raise AssertionError(f"Lark's lexer accepts what netdsl's did not, at {pos}")


def _reduce(plan, stack, values, infos, build, max_depth):
    """Replace the rule's symbols on the stacks by its value (stack loses them; the caller pushes
    the goto state). Positions follow Lark's PropagatePositions, heights Lark's tree heights."""
    kind, name, size, include, pending, _ = plan
    if size:
        raw, raw_info = values[-size:], infos[-size:]
        del stack[-size:], values[-size:], infos[-size:]
        first, last = raw_info[0], raw_info[-1]
        if first[0] is None:  # a child without a position (rare): Lark looks further
            first = next((i for i in raw_info if i[0] is not None), None)
        if last[0] is None:
            last = next((i for i in reversed(raw_info) if i[0] is not None), None)
        pos = None if first is None else (first[0], first[1], last[2], last[3])
    else:
        raw, raw_info, pos = (), (), None
    items, item_info = [], []
    for i, splice, nones in include:
        if nones:
            items += [None] * nones
        if splice:
            # a "_x" child: its value is a list, spliced here; a left-recursive repetition reuses
            # its list, so a 10k-statement file appends 10k times instead of copying 10k lists
            if items:
                items += raw[i]
            else:
                items = raw[i]
            info = raw_info[i]
            item_info.append((info[4], info[5], info[6] - 1))
        else:
            items.append(raw[i])
            item_info.append(raw_info[i][4:])
    if pending:
        items += [None] * pending
    if kind is _KEEP1 and len(items) == 1:
        values.append(items[0])
        child = raw_info[include[0][0]] if include else None
        if child is None or isinstance(items[0], Token):
            # a placeholder None, or a token: Lark gives neither a container
            infos.append(child or (None, None, None, None, 1, 1, 0))
        else:
            infos.append((pos or (None, None, None, None)) + child[4:])
        return
    # A tree is made here (a syntax node, or a "_x" list): its height, and where it starts
    # (its first child's start: Lark's meta is not set yet when the height check raises).
    height = 0
    for x in item_info:
        if x[2] > height:
            height = x[2]
    height += 1
    fpos = item_info[0][:2] if item_info else None
    if height > max_depth:
        line, col = fpos if fpos is not None else (1, 1)
        raise _TooDeep(line, col)
    if kind is _SPLICE:
        value = items
        own = fpos  # a list is never a child itself: its elements are
    else:
        value = getattr(build, name)(pos, items)  # the _Build method named after the rule
        own = fpos if pos is None else (pos[0], pos[1])
    if own is None:
        own = (1, 1)
    infos.append((pos or (None, None, None, None)) + own + (height,))
    values.append(value)


# The nesting check looks at brackets and newlines, skipping comments and strings exactly as the
# COMMENT and STRING terminals delimit them (a "(" in a comment nests nothing), and as a leftmost
# regex scan for them would: a quote that opens no complete string is skipped as one character.
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
