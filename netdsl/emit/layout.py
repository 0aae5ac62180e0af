"""One generated statement laid out as ruff format (and black) would keep it.

A statement stays on one line when it fits in 88 columns; otherwise its first
splittable bracket is exploded, one element per line with a magic trailing
comma, and each element is laid out the same way one level deeper. ruff keeps
a bracket with a magic trailing comma exploded, so the result is stable under
a user's `ruff format` whatever ruff would have chosen for a long line itself.
A trailing comment that makes a fitting statement too long moves to the line
above. Single-quoted plain strings become double-quoted, as ruff writes them.
Not handled (the emitters write none): a long operator expression at the top
level of a statement, which ruff would parenthesise and split at operators.

Only layout changes: the tokens are the input's, so no value is re-spelled.
"""
from __future__ import annotations

import io
import re
import tokenize

WIDTH = 88  # ruff format's (and black's) line length
_SKIP = {tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER, tokenize.ENCODING}


class _Bracket:
    def __init__(self, open_: str, call: bool):
        self.open, self.call = open_, call  # call: `f(` or `x[` (no space before), not a grouping/literal
        self.close, self.comment, self.comma, self.flat = "", None, False, None
        self.elems = []  # [items, comment]


def layout(code: str, indent: int, width: int = WIDTH) -> str:
    """`code` (one statement, or one entry of a literal) for a line indented by `indent` columns.

    The first line carries no indentation (the caller's template puts it);
    continuation lines carry their full indentation.
    """
    if "\n" not in code and "'" not in code and indent + len(code) <= width:
        return code  # the fast path: deep models emit thousands of short statements
    return _memoized(_layout, code, indent, width)


def element(code: str, indent: int, width: int = WIDTH):
    """`code` laid out as one element of an exploded bracket at `indent`, with its "," (exactly as
    layout() writes each element of a statement that holds it); None when `code` is not one element
    without comments. The first line carries no indentation, like layout()'s.
    """
    if "#" in code:
        return None
    return _memoized(_as_element, code, indent, width)


def _layout(code: str, indent: int, width: int) -> str:
    items, comment = _parse(code)
    return "\n".join(_lines(items, comment, indent, "", width))


def _as_element(code: str, indent: int, width: int):
    # inside a bracket, as the element after a "," or an opening bracket: neither makes a call of it
    root = _parse("[" + code + "]")[0]
    b = root[0][1] if len(root) == 1 else None
    if not isinstance(b, _Bracket) or len(b.elems) != 1 or b.elems[0][1] is not None or b.comment:
        return None
    return "\n".join(_lines(b.elems[0][0], None, indent, ",", width))


# One emit's layouts, by the statement with every ASCII digit made "0" (see _memoized); None outside
# an emit (base.emit sets it), so a layout is never kept from one emit to the next. An entry depends on
# its key alone, so even a memo shared by two threads' emits would give the right text.
_memo: dict | None = None
_ZERO = str.maketrans("123456789", "000000000")
_DIGIT = re.compile(r"[0-9]")


def _memoized(compute, code: str, indent: int, width: int):
    """compute(code, indent, width), computed once for all statements that differ only in their digits.

    A LayerStack of 10,000 Dense layers writes 10,000 statements that differ only in the
    digits of their names and sizes. A digit never decides a layout: the tokens (a digit is
    never a bracket, a comma, a quote, "lambda" or a token boundary of its own) and their
    lengths stay the same when every digit is "0", so the layout of the "0" statement is the
    layout of each of them, with their own digits put back in order. Order holds because
    layout only moves whitespace, except for a comment moved above its statement: statements
    with a comment (or a triple-quoted string, or a line continuation, which tokenize reads)
    are laid out on their own.
    """
    memo = _memo
    if memo is None or "#" in code or '"""' in code or "\'\'\'" in code or "\\\n" in code:
        return compute(code, indent, width)
    key = (compute, code.translate(_ZERO), indent, width)
    if key in memo:
        pieces = memo[key]
    else:
        out = compute(key[1], indent, width)
        pieces = memo[key] = None if out is None else out.split("0")
    if pieces is None:
        return None
    if len(pieces) == 1:
        return pieces[0]
    digits = _DIGIT.findall(code)
    if len(digits) != len(pieces) - 1:  # cannot happen (see above); if it did, the slow way is still right
        return compute(code, indent, width)
    return pieces[0] + "".join([d + p for d, p in zip(digits, pieces[1:])])


class memo_scope:
    """`with memo_scope():` around one emit, so that its identical layouts are computed once."""

    def __enter__(self):
        global _memo
        self.outer, _memo = _memo, {}

    def __exit__(self, *exc):
        global _memo
        _memo = self.outer


# the tokens generated statements are made of; anything else (triple quotes, a backslash line
# continuation, a character no pattern takes) goes to the standard tokenizer, which is 5-10x slower
_TOKEN = re.compile(r"""([ \t\n]*)(?:(\#[^\n]*)
    |([rRbBuUfF]{0,2}(?:"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'))
    |([^\W\d]\w*)
    |(\d[\w.]*(?:(?<=[eE])[+-]\d+)?j?|\.\d+(?:[eE][+-]?\d+)?)
    |(\*\*=?|//=?|>>=?|<<=?|->|:=|\.\.\.|[-+*/%@&|^=<>!]=|[-+*/%@&|^~<>=.,:;()\[\]{}]))""", re.X)
_KINDS = (None, None, tokenize.COMMENT, tokenize.STRING, tokenize.NAME, tokenize.NUMBER, tokenize.OP)


def _tokens(code: str) -> list:
    """[(token type, text, whether space precedes it)] of the significant tokens of `code`."""
    if '"""' not in code and "\'\'\'" not in code and "\\\n" not in code:
        out, end = [], 0
        for m in _TOKEN.finditer(code):
            if m.start() != end:  # finditer skips what no pattern takes
                break
            k = m.lastindex
            out.append((_KINDS[k], m.group(k), m.end(1) > m.start()))
            end = m.end()
        else:
            if end == len(code.rstrip(" \t\n")):
                return out
    out, prev_end = [], None
    for t in tokenize.generate_tokens(io.StringIO(code).readline):
        if t.type not in _SKIP:
            out.append((t.type, t.string, prev_end is not None and t.start != prev_end))
            prev_end = t.end
    return out


def _parse(code: str):
    root: list = []
    stack = [(None, root)]
    comment, prev_kind, prev = None, None, None
    for i, (kind, text, spaced) in enumerate(_tokens(code)):
        sep = " " if spaced and i else ""
        bracket, items = stack[-1]
        if kind == tokenize.COMMENT:
            if bracket is None:
                comment = text
            elif not items and not bracket.elems:
                bracket.comment = text
            elif not items:
                bracket.elems[-1][1] = text
            else:
                items.append(("", _Comment(text)))
            continue
        if kind == tokenize.STRING and text[0] == "'" and not text.startswith("'''") \
                and '"' not in text and "\\" not in text:
            text = '"' + text[1:-1] + '"'
        if kind == tokenize.OP and text in "([{":
            after_name = prev is not None and (prev_kind in (tokenize.NAME, tokenize.STRING) or prev in (")", "]", "}"))
            new = _Bracket(text, text != "{" and sep == "" and after_name)
            items.append((sep, new))
            stack.append((new, []))
        elif kind == tokenize.OP and text in ")]}":
            bracket.close = text
            bracket.comma = prev == ","
            if items:
                bracket.elems.append(_element(items))
            stack.pop()
        elif text == "," and bracket is not None and not _open_lambda(items):
            bracket.elems.append(_element(items))
            stack[-1] = (bracket, [])
        else:
            items.append((sep, text))
        prev_kind, prev = kind, text
    return root, comment


class _Comment(str):
    """A comment in the middle of an element: it ends the element's line."""


def _element(items: list) -> list:
    comments = [p for _, p in items if isinstance(p, _Comment)]
    return [[(s, p) for s, p in items if not isinstance(p, _Comment)], comments[-1] if comments else None]


def _open_lambda(items: list) -> bool:
    """A comma between a lambda's parameters, not between elements."""
    return bool(items) and items[0][1] == "lambda" and not any(p == ":" for _, p in items)


def _flat(items: list) -> str:
    return "".join((sep if i else "") + (p if isinstance(p, str) else _flat_bracket(p)) for i, (sep, p) in
                   enumerate(items))


def _flat_bracket(b: _Bracket) -> str:
    if b.flat is None:  # kept: _lines asks again for every enclosing level
        inner = ", ".join(_flat(e) for e, _ in b.elems)
        if b.comma and _one_tuple(b):
            inner += ","
        b.flat = b.open + inner + b.close
    return b.flat


def _one_tuple(b: _Bracket) -> bool:
    return b.open == "(" and not b.call and len(b.elems) == 1


def _forced(items: list) -> bool:
    """A comment or a magic trailing comma inside: ruff would never join these lines."""
    for _, p in items:
        if isinstance(p, _Bracket):
            if p.comment or (p.comma and not _one_tuple(p) and not (p.open == "[" and p.call)):
                return True
            if any(c or _forced(e) for e, c in p.elems):
                return True
    return False


def _splittable(p) -> bool:
    # never a subscript (a trailing comma there makes a tuple index), never a lone parenthesised expression
    return isinstance(p, _Bracket) and bool(p.elems) and not (p.open == "[" and p.call) \
        and not (_one_tuple(p) and not p.comma)


def _lines(items: list, comment, indent: int, trailer: str, width: int) -> list:
    pad = " " * indent
    flat = _flat(items) + trailer
    if not _forced(items):
        if comment is None and indent + len(flat) <= width:
            return [flat]
        if comment is not None and indent + len(flat) + 2 + len(comment) <= width:
            return [f"{flat}  {comment}"]
        if comment is not None and indent + len(flat) <= width:
            return [comment, pad + flat]
    k = next((i for i, (_, p) in enumerate(items) if _splittable(p)), None)
    if k is None:  # nothing to split: as it is, like ruff
        return [flat + (f"  {comment}" if comment else "")]
    b = items[k][1]
    head = _flat(items[:k]) + (items[k][0] if k else "") + b.open
    out = [head + (f"  {b.comment}" if b.comment else "")]
    for elem, elem_comment in b.elems:
        sub = _lines(elem, elem_comment, indent + 4, ",", width)
        out.append(pad + "    " + sub[0])
        out += sub[1:]
    tail = b.close + "".join(sep + (p if isinstance(p, str) else _flat_bracket(p)) for sep, p in items[k + 1:])
    return out + [pad + tail + trailer + (f"  {comment}" if comment else "")]
