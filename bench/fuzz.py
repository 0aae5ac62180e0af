"""Fuzz the netdsl front end: every input must end in success or a clean NetdslError.

The contract (docs/security.md): `netdsl.frontend.load_text(text, file)` either
returns a Graph or raises NetdslError whose diagnostics all carry a code
E\\d{3} and a line/col inside the file they name (line 1 col 1 for whole-file
errors). Any other exception, a RecursionError, a hang or a memory blow-up is
a failure.

The generators below are plain functions of a random.Random, so the same code
drives the bounded hypothesis tests (tests/test_fuzz.py feeds them
hypothesis-controlled randoms) and this long campaign:

    .venvs/main/bin/python bench/fuzz.py -n 100000 --jobs 2

Each input i is generated from random.Random(f"{seed}:{i}"), so a failure is
reproduced exactly with `--replay i` (and the same --seed). Failures are
written to --out (default /tmp/netdsl-fuzz) as <i>.net plus a traceback.
"""
from __future__ import annotations

import argparse
import os
import random
import re
import signal
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODELS_DIR = ROOT / "models"
SEEDS = [p.read_text(encoding="utf-8") for p in sorted(MODELS_DIR.glob("*.net"))]
SEED_NAMES = [p.name for p in sorted(MODELS_DIR.glob("*.net"))]
CODE_RE = re.compile(r"^E\d{3}$")

# ----------------------------------------------------------------- tokens
TOKEN_RE = re.compile(r"""
   (?P<comment>\#[^\n]*)
  |(?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  |(?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  |(?P<name>[^\W\d]\w*)
  |(?P<op>>>|//|\*\*|[-+*/%=(),:\[\]{}.])
  |(?P<ws>\s+)
  |(?P<other>.)
""", re.X | re.S)
KEYWORDS = ("model", "import", "def", "with", "output", "train", "lambda", "True", "False", "None")
BUILTINS = ("Dense", "Convolution", "Convolution2D", "MaxPooling", "AveragePooling", "Dropout", "Embedding", "LSTM",
            "Recurrence", "BatchNormalization", "LayerNormalization", "Flatten", "Activation", "Sequential",
            "LayerStack", "For", "range", "Input", "SequenceInput", "splice", "select_last", "select_first",
            "cosine_distance", "default_options", "relu", "sigmoid", "tanh", "softmax", "glorot_uniform",
            "he_normal", "uniform", "normal", "zeros", "ones")
KWARGS = ("activation", "init", "pad", "strides", "bias", "init_bias", "shape", "filter_shape", "num_filters",
          "dropout_rate", "keep_prob", "go_backwards", "epsilon", "momentum", "vocab", "length", "scale", "mean",
          "std", "use_peepholes", "over", "lr", "beta1", "nesterov", "dataset", "loss", "optimizer", "batch_size",
          "epochs", "metrics")
TRAIN_VALUES = ("cross_entropy_with_softmax", "squared_error", "mse", "SGD", "Adam", "Adadelta", "accuracy")
PUNCT = ("(", ")", "[", "]", "{", "}", ",", "=", ":", "+", "-", "*", "/", "//", "%", "**", ">>", ".", "\n")
WEIRD_NUMBERS = (
    "0", "1", "2", "3", "7", "28", "00", "0.0", "1.5", ".5", "5.", "1e3", "1e-3", "1e308", "1e309", "1e999", "1e-999",
    "1E+400", "2147483648", "9223372036854775807", "9223372036854775808", "4611686018427387904",
    "99999999999999999999", "10" + "0" * 400, "1" * 4301, "1" * 5000, "0" * 50, "1" + "0" * 18, "100000000",
    "100000001",
)
WEIRD_STRINGS = (
    '""', '"mnist"', "'mnist'", '"\\N{nope}"', '"\\N{LATIN SMALL LETTER A}"', '"\\q"', '"\\x0"', '"\\u12"',
    '"\x00"', '"\\0"', '"a\\"', "'unterminated", '"unterminated', '"\\\n"', '"""x"""', '"mnist\\"); import os #"',
    '"../../etc/passwd"', '"/dev/zero.net"', '"x.net"', '"models/vgg9.net"', '"\\\\"', '"\u202e"', '"\ud800"',
    '"\\0.net"', '"\\ud800.net"', '"\\n.net"', '"a\\x1b[31m.net"',
)
WEIRD_CHARS = (
    "\x00", "\x01", "\x07", "\x08", "\t", "\x0b", "\x0c", "\r", "\r\n", "\x1b", "\x1b[31m", "\x7f", "\x85", "\xa0",
    "\u2028", "\u2029", "\ufeff", "\u200b", "\u202e", "\ud800", "\udfff", "\U0001f600", "\u0430", "\u0455", "\u03bf",
    "\u00e9", "e\u0301", "\uff08", "\uff09", "\u00b2", "\u0660", "\u2167", "\\", "`", "$", "@", "!", "?", ";", "&",
    "|", "^", "~", "<", ">", "\"", "'", "#", "_", "__", "__import__", "self", "torch", "os",
)


def tokenize(text: str) -> list:
    """(class, text) pairs covering the whole text; never fails."""
    out = []
    for m in TOKEN_RE.finditer(text):
        cls = m.lastgroup
        tok = m.group()
        if cls == "name" and tok in KEYWORDS:
            cls = "keyword"
        elif cls == "op":
            cls = "open" if tok in "([{" else "close" if tok in ")]}" else "op"
        out.append((cls, tok))
    return out


def join(tokens) -> str:
    return "".join(t for _, t in tokens)


def random_token(rng: random.Random, seed_tokens=None) -> str:
    r = rng.random()
    if r < 0.25 and seed_tokens:
        return rng.choice(seed_tokens)[1]
    if r < 0.40:
        return rng.choice(PUNCT)
    if r < 0.50:
        return rng.choice(KEYWORDS)
    if r < 0.60:
        return rng.choice(BUILTINS)
    if r < 0.65:
        return rng.choice(KWARGS)
    if r < 0.75:
        return rng.choice(WEIRD_NUMBERS)
    if r < 0.82:
        return rng.choice(WEIRD_STRINGS)
    if r < 0.92:
        return rng.choice(WEIRD_CHARS)
    return random_unicode(rng, rng.randint(1, 4))


def random_unicode(rng: random.Random, n: int) -> str:
    chars = []
    for _ in range(n):
        r = rng.random()
        if r < 0.4:
            chars.append(chr(rng.randint(0, 127)))
        elif r < 0.7:
            chars.append(chr(rng.randint(128, 0x2FFF)))
        elif r < 0.9:
            chars.append(chr(rng.randint(0x3000, 0x10FFFF)))
        else:
            chars.append(chr(rng.randint(0xD800, 0xDFFF)))  # lone surrogates: load_text takes any str
    return "".join(chars)


def seed_tokens(rng: random.Random):
    i = rng.randrange(len(SEEDS))
    return tokenize(SEEDS[i])


# ------------------------------------------------------------ mutations
def _significant(tokens):
    return [i for i, (c, _) in enumerate(tokens) if c != "ws"]


def mut_insert(rng, tokens, pool):
    for _ in range(rng.randint(1, 3)):
        pos = rng.randint(0, len(tokens))
        tok = random_token(rng, pool)
        tokens.insert(pos, ("other", tok))
        if rng.random() < 0.5:
            tokens.insert(pos, ("ws", " "))
    return tokens


def mut_delete(rng, tokens, pool):
    sig = _significant(tokens)
    for _ in range(rng.randint(1, 3)):
        if not sig:
            break
        i = rng.choice(sig)
        if i < len(tokens):
            del tokens[i]
        sig = _significant(tokens)
    return tokens


def mut_swap(rng, tokens, pool):
    sig = _significant(tokens)
    if len(sig) >= 2:
        a, b = rng.sample(sig, 2)
        if rng.random() < 0.5:  # swap neighbours most of the time: the nastier case
            j = sig.index(a)
            b = sig[j + 1] if j + 1 < len(sig) else sig[j - 1]
        tokens[a], tokens[b] = tokens[b], tokens[a]
    return tokens


def mut_duplicate(rng, tokens, pool):
    if tokens:
        a = rng.randrange(len(tokens))
        b = min(len(tokens), a + rng.randint(1, 40))
        times = rng.choice((1, 1, 2, 5, 50))
        tokens[b:b] = tokens[a:b] * times
    return tokens


def mut_replace_number(rng, tokens, pool):
    nums = [i for i, (c, _) in enumerate(tokens) if c == "number"]
    for _ in range(rng.randint(1, 2)):
        if not nums:
            break
        i = rng.choice(nums)
        r = rng.random()
        if r < 0.6:
            new = rng.choice(WEIRD_NUMBERS)
        elif r < 0.8:
            new = rng.choice(("10**400", "2**62", "2**63", "10**18", "1e999 - 1e999", "-1", "(0 - 5)", "1/0",
                              "2**64", "(2**31)", "0.5", "True", "None", '"3"', "[3]", "(3, 3)", "relu", "x"))
        else:
            new = str(rng.choice((0, 1, 2, 3, 4, 5, 8, 16, 27, 28, 29, 56, 99, 100, 1000, 65536, 10 ** 8, 10 ** 9)))
        tokens[i] = ("other", new)
    return tokens


def mut_replace_name(rng, tokens, pool):
    """Swap names for other names: the file still parses, so evaluation and shapes get the input."""
    names = [i for i, (c, _) in enumerate(tokens) if c == "name"]
    seed_names = sorted({t for c, t in pool if c == "name"})
    for _ in range(rng.randint(1, 3)):
        if not names:
            break
        i = rng.choice(names)
        r = rng.random()
        new = (rng.choice(seed_names) if r < 0.4 and seed_names else rng.choice(BUILTINS) if r < 0.7
               else rng.choice(KWARGS + TRAIN_VALUES) if r < 0.85
               else rng.choice(("torch", "self", "__import__", "_x", "match", "a\u0430", "x" * 70, "Model")))
        tokens[i] = ("name", new)
    return tokens


def mut_replace_atom(rng, tokens, pool):
    """Replace a name, number or string with a small random expression of any type."""
    atoms = [i for i, (c, _) in enumerate(tokens) if c in ("name", "number", "string")]
    g = ProgramGen(rng)
    g.vars = sorted({t for c, t in pool if c == "name"}) or ["x"]
    for _ in range(rng.randint(1, 2)):
        if not atoms:
            break
        i = rng.choice(atoms)
        tokens[i] = ("other", g.expr(depth=rng.randint(1, 3)))
    return tokens


TRUNC_CLASSES = ("name", "keyword", "number", "string", "open", "close", "op", "ws", "comment", "mid")


def mut_truncate(rng, tokens, pool):
    cls = rng.choice(TRUNC_CLASSES)
    if cls == "mid":
        multi = [i for i, (_, t) in enumerate(tokens) if len(t) > 1]
        if not multi:
            return tokens[: rng.randint(0, len(tokens))]
        i = rng.choice(multi)
        c, t = tokens[i]
        return tokens[:i] + [("other", t[: rng.randint(1, len(t) - 1)])]
    where = [i for i, (c, _) in enumerate(tokens) if c == cls]
    if not where:
        return tokens[: rng.randint(0, len(tokens))]
    i = rng.choice(where)
    return tokens[: i + 1] if rng.random() < 0.7 else tokens[:i]


def mut_bytes(rng, tokens, pool):
    text = join(tokens)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randint(0, len(text))
        if rng.random() < 0.5:
            ins = rng.choice(WEIRD_CHARS)
        else:
            ins = random_unicode(rng, rng.randint(1, 3))
        if rng.random() < 0.3 and pos < len(text):
            text = text[:pos] + ins + text[pos + 1:]  # overwrite one character
        else:
            text = text[:pos] + ins + text[pos:]
    return [("other", text)]


MUTATIONS = [mut_insert, mut_delete, mut_swap, mut_duplicate, mut_replace_number, mut_replace_name, mut_replace_atom,
             mut_truncate, mut_bytes]


def gen_mutation(rng: random.Random, ops=None) -> str:
    """One seed model with 1-4 stacked mutations."""
    tokens = seed_tokens(rng)
    pool = tokens
    for _ in range(rng.choice((1, 1, 1, 2, 3, 4))):
        op = rng.choice(ops or MUTATIONS)
        tokens = op(rng, list(tokens), pool)
    return join(tokens)


def _one(op):
    def gen(rng):
        return gen_mutation(rng, [op])
    gen.__name__ = "gen_" + op.__name__
    return gen


gen_insert = _one(mut_insert)
gen_delete = _one(mut_delete)
gen_swap = _one(mut_swap)
gen_duplicate = _one(mut_duplicate)
gen_numbers = _one(mut_replace_number)
gen_names = _one(mut_replace_name)
gen_atoms = _one(mut_replace_atom)
gen_truncate = _one(mut_truncate)
gen_bytes = _one(mut_bytes)


def gen_crossover(rng: random.Random) -> str:
    a, b = rng.choice(SEEDS).split("\n"), rng.choice(SEEDS).split("\n")
    return "\n".join(a[: rng.randint(0, len(a))] + b[rng.randint(0, len(b)):])


# --------------------------------------------------------- deep nesting
HEAD = "x = Input(4)\n"
TAIL = "z = Dense(2)(x)\noutput z\n"
DEPTHS = (10, 50, 99, 100, 101, 150, 199, 200, 201, 250, 399, 400, 401, 1000, 5000)


def deep_expression(rng: random.Random, n: int) -> str:
    kind = rng.randrange(16)
    if kind == 0:
        return "(" * n + "1" + ")" * n
    if kind == 1:
        return "[" * n + "1" + "]" * n
    if kind == 2:
        opens = [rng.choice("([") for _ in range(n)]
        return "".join(opens) + "1" + "".join(")" if o == "(" else "]" for o in reversed(opens))
    if kind == 3:
        return "-" * n + "1"
    if kind == 4:
        op = rng.choice(("+", "-", "*", "/", "//", "%", "**", " + ", "+-"))
        return op.join(["1"] * n)
    if kind == 5:
        return " >> ".join([rng.choice(("relu", "Dense(2)", "Dropout(0.1)"))] * n)
    if kind == 6:
        return "[" + "0, " * rng.randint(0, 3) + "1]" + "[0]" * n
    if kind == 7:
        return "relu" + "(x)" * n
    if kind == 8:
        return "lambda: " * n + "1"
    if kind == 9:
        return "Dense(2)(" * n + "x" + ")" * n
    if kind == 10:
        return "(" * n  # unbalanced
    if kind == 11:
        return "]" * n + "(" * n
    if kind == 12:
        return "(" + ", ".join(["1"] * n) + ")"  # wide, not deep
    if kind == 13:
        return "(lambda a: " * n + "x" + ")(1)" * n
    if kind == 14:
        return "1" + "**-1" * n
    return "Sequential([" * n + "relu" + "])" * n


def gen_deep(rng: random.Random) -> str:
    n = rng.choice(DEPTHS)
    r = rng.random()
    if r < 0.7:
        return HEAD + "a = " + deep_expression(rng, n) + "\n" + TAIL
    if r < 0.8:  # deep with-blocks
        return HEAD + "with default_options(activation=relu) {\n" * n + TAIL + "}\n" * n
    if r < 0.9:  # deep via statements: each line nests one more level
        kind = rng.randrange(4)
        lines = [HEAD, "v0 = relu\n" if kind in (0, 1) else "v0 = 1\n"]
        for i in range(n):
            lines.append((f"v{i + 1} = v{i} >> relu\n", f"v{i + 1} = Sequential([v{i}, v{i}])\n",
                          f"v{i + 1} = (v{i},)\n", f"v{i + 1} = [v{i}, 1]\n")[kind])
        tail = ("z = v%d(x)\noutput z\n" % n) if kind < 2 else (f"z = Dense(2)(x)\noutput z\ntrain {{ metrics = [v{n}[0]] loss = v{n} }}\n")
        return "".join(lines) + tail
    return HEAD + "b = " + "{" * n + "\n" + TAIL


# ------------------------------------------------------------ recursion
RECURSION = (
    "f = lambda y: f(y)\nz = f(x)\noutput z\n",
    "w = lambda g: g(g)\nz = w(w)\n",
    "def a() = b()\ndef b() = a()\nz = a()\n",
    "def a(v) = a(v)\nz = a(x)\noutput z\n",
    "def a(v=a()) = v\nz = a()\n",
    "def a(v=b()) = v\ndef b(v=a()) = v\nz = a()\n",
    "f = lambda: LayerStack(2, lambda i: f())\nz = f()(x)\n",
    "y = lambda h: (lambda q: h(lambda v: q(q)(v)))(lambda q: h(lambda v: q(q)(v)))\n"
    "fact = y(lambda self2: lambda n: self2(n))\nz = fact(3)\n",
    "def s(n) = LayerStack(2, lambda i: s(n))\nz = s(1)(x)\n",
    "def b(f) = f(f)\nz = b(b)\n",
    "f = lambda i: For(range(2), f)\nz = f(0)(x)\n",
    "g = lambda k: k(k, k)\nz = g(g)\n",
    "s = Sequential([Dense(2)])\ns = Sequential([s, s])\n" * 3 + "z = s(x)\noutput z\n",
    "l = [1]\nl = [l, l]\n" * 5 + "train { metrics = l }\n",
)


def gen_recursion(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.6:
        body = rng.choice(RECURSION)
    elif r < 0.65:  # exponential blow-up without depth (seconds each: the step budget is 1M)
        n = rng.choice((10, 20, 30, 40, 60))
        body = "def b0(v) = v\n" + "".join(f"def b{i + 1}(v) = b{i}(v) + b{i}(v)\n" for i in range(n)) + f"a = b{n}(1)\n"
    else:
        n = rng.choice((10, 30, 49, 50, 51, 100, 500))
        body = "".join(f"def b{i}(v) = b{i + 1}(v)\n" for i in range(n)) + f"def b{n}(v) = Dense(2)(v)\nz = b0(x)\noutput z\n"
        if rng.random() < 0.5 and n <= 100:  # make every level deep as well (500 x 390 terms: 20 s to parse)
            chain = " + 0" * rng.choice((10, 100, 390))
            body = "".join(f"def b{i}(v) = b{i + 1}(v){chain}\n" for i in range(n)) + f"def b{n}(v) = v\nq = b0(1)\n" + TAIL
    return HEAD + body


# ------------------------------------------------------- random programs
class ProgramGen:
    """Random but syntactically plausible programs over the real builtins and argument names."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.vars = ["x"]

    def name(self):
        r = self.rng.random()
        if r < 0.45:
            return self.rng.choice(self.vars)
        if r < 0.8:
            return self.rng.choice(BUILTINS)
        if r < 0.9:
            return self.rng.choice(TRAIN_VALUES + KEYWORDS[-3:])
        return self.rng.choice(("y", "i", "n", "foo", "_x", "__import__", "self", "torch", "Model", "a\u0430"))

    def atom(self):
        r = self.rng.random()
        if r < 0.3:
            return self.rng.choice(("1", "2", "3", "0", "-1", "0.5", "28", "1e999", "10**400", "2**62"))
        if r < 0.4:
            return self.rng.choice(WEIRD_STRINGS)
        if r < 0.5:
            return self.rng.choice(("True", "False", "None"))
        return self.name()

    def expr(self, depth=0):
        rng = self.rng
        if depth > 3 or rng.random() < 0.3:
            return self.atom()
        r = rng.random()
        if r < 0.35:
            f = rng.choice(BUILTINS) if rng.random() < 0.8 else self.expr(depth + 1)
            args = [self.expr(depth + 1) for _ in range(rng.choice((0, 1, 1, 2, 3)))]
            args += [f"{rng.choice(KWARGS)}={self.expr(depth + 1)}" for _ in range(rng.choice((0, 0, 1, 2)))]
            if rng.random() < 0.1:
                args += ["*", "x=1", "1"]  # keyword then positional, junk
            return f"{f}({', '.join(args)})"
        if r < 0.5:
            return f"{self.expr(depth + 1)}({self.rng.choice(self.vars)})"
        if r < 0.6:
            op = rng.choice(("+", "-", "*", "/", "//", "%", "**", ">>"))
            return f"{self.expr(depth + 1)} {op} {self.expr(depth + 1)}"
        if r < 0.7:
            items = ", ".join(self.expr(depth + 1) for _ in range(rng.randint(0, 3)))
            return rng.choice((f"[{items}]", f"({items})", f"({items},)"))
        if r < 0.8:
            return f"{self.expr(depth + 1)}[{self.expr(depth + 1)}]"
        if r < 0.9:
            p = rng.choice(("", "i", "x"))
            return f"lambda {p}: {self.expr(depth + 1)}"
        return f"-{self.expr(depth + 1)}"

    def stmt(self, depth=0):
        rng = self.rng
        r = rng.random()
        if r < 0.45:
            v = rng.choice(("h", "z", "s", "net", "y1", "y2", "i", "layer", "Dense", "x", "C", "model", "a\u0430"))
            self.vars.append(v)
            return f"{v} = {self.expr()}\n"
        if r < 0.55:
            ps = ", ".join(rng.choice(("v", "n", "v=1", "n=x", "i")) for _ in range(rng.randint(0, 2)))
            name = rng.choice(("blk", "b", "f", "__init__", "Dense"))
            self.vars.append(name)
            return f"def {name}({ps}) = {self.expr()}\n"
        if r < 0.62 and depth < 3:
            kws = ", ".join(f"{rng.choice(('activation', 'init', 'pad', 'bias', 'init_bias', 'strides'))}={self.expr(2)}"
                            for _ in range(rng.randint(0, 2)))
            body = "".join(self.stmt(depth + 1) for _ in range(rng.randint(0, 3)))
            return f"with default_options({kws}) {{\n{body}}}\n"
        if r < 0.72:
            return "output " + ", ".join(rng.choice(self.vars) for _ in range(rng.randint(1, 2))) + "\n"
        if r < 0.82:
            entries = "".join(f"    {rng.choice(KWARGS[-6:] + ('lr', 'foo'))} = {self.expr(2)}\n" for _ in range(rng.randint(0, 4)))
            return "train {\n" + entries + "}\n"
        if r < 0.87:
            return f"model {rng.choice(('M', 'torch', 'x', 'Model', 'a_b', '__x'))}\n"
        if r < 0.9:
            return f"import {rng.choice(WEIRD_STRINGS)}\n"
        return "".join(rng.choice(SEEDS).split("\n")[rng.randrange(5, 12)] + "\n" for _ in range(1))


def gen_program(rng: random.Random) -> str:
    g = ProgramGen(rng)
    head = rng.choice(("x = Input(4)\n", "x = Input((1, 8, 8))\n", "x = SequenceInput(5)\n",
                       "x = SequenceInput(vocab=10)\n", ""))
    return head + "".join(g.stmt() for _ in range(rng.randint(1, 8)))


def gen_token_stream(rng: random.Random) -> str:
    """Random streams of the grammar's terminals (and some junk)."""
    n = rng.choice((1, 2, 3, 5, 10, 20, 60))
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.35:
            out.append(rng.choice(PUNCT))
        elif r < 0.55:
            out.append(rng.choice(KEYWORDS))
        elif r < 0.75:
            out.append(rng.choice(BUILTINS + ("x", "y", "z")))
        elif r < 0.85:
            out.append(rng.choice(WEIRD_NUMBERS[:20]))
        elif r < 0.92:
            out.append(rng.choice(WEIRD_STRINGS))
        else:
            out.append(random_token(rng))
        out.append(rng.choice((" ", " ", "", "\n")))
    return "".join(out)


GENERATORS = [gen_insert, gen_delete, gen_swap, gen_duplicate, gen_numbers, gen_names, gen_atoms, gen_truncate,
              gen_bytes, gen_crossover, gen_deep, gen_recursion, gen_program, gen_token_stream]


# --------------------------------------------------------------- oracle
class Hang(BaseException):
    """Raised by the alarm; a BaseException so no `except Exception` in the front end swallows it."""


def _alarm(signum, frame):
    raise Hang()


def check(text: str, file: str = "fuzz.net", timeout: float | None = None, outcome: list | None = None) -> str | None:
    """None if the front end honoured the contract on `text`, else a description of the failure.
    `outcome`, if given, gets "ok" or the first diagnostic's code appended (how deep the input got)."""
    from netdsl.errors import NetdslError
    from netdsl.frontend import load_text

    old = None
    if timeout:
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        try:
            load_text(text, file)
            if outcome is not None:
                outcome.append("ok")
            return None
        except NetdslError as e:
            if outcome is not None and e.diagnostics:
                outcome.append(str(e.diagnostics[0].code))
            return check_error(e, text, file)
        except Hang:
            return f"hang: no answer within {timeout} s"
        except RecursionError:
            return "RecursionError:\n" + traceback.format_exc(limit=-12)
        except BaseException as e:  # noqa: BLE001 - the whole point
            return f"{type(e).__name__}: {e}\n" + traceback.format_exc(limit=-12)
    finally:
        if timeout:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


def line_lengths(text: str) -> list:
    """Lines as the parser counts them: only '\\n' ends a line."""
    return [len(s) for s in text.split("\n")]


def check_error(e, text: str, file: str) -> str | None:
    if not e.diagnostics:
        return "NetdslError with no diagnostics"
    try:
        formatted = e.format()
    except BaseException as ex:  # noqa: BLE001
        return f"NetdslError.format() raised {type(ex).__name__}: {ex}"
    sources = dict(e.sources)
    sources.setdefault(file, text)
    for d in e.diagnostics:
        if not CODE_RE.match(d.code or ""):
            return f"bad diagnostic code {d.code!r}: {d.message}"
        s = d.span
        if s is None:
            return f"diagnostic without a span: {d.message}"
        src = sources.get(s.file)
        if src is None:
            return f"diagnostic names a file it has no source for: {s.file!r}: {d.message}"
        lengths = line_lengths(src)
        if not (1 <= s.line <= len(lengths) and 1 <= s.col <= lengths[s.line - 1] + 1):
            return f"span {s.line}:{s.col} outside {s.file} ({len(lengths)} lines): [{d.code}] {d.message}"
        if not isinstance(d.message, str) or not d.message or len(d.message) > 2000:
            return f"bad message ({len(d.message or '')} chars) [{d.code}]"
    head = formatted.split("\n", 1)[0]
    if not re.match(r"^.*:\d+:\d+: error: .+ \[E\d{3}\]$", head):
        return f"badly formatted diagnostic: {head[:200]!r}"
    return None


# ------------------------------------------------------------- campaign
def generate(seed: str, i: int):
    rng = random.Random(f"{seed}:{i}")
    gen = GENERATORS[i % len(GENERATORS)]
    return gen.__name__, gen(rng)


def _worker_init(mem_mb: int):
    import gc
    import resource

    if mem_mb:
        limit = mem_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    gc.collect()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_chunk(job):
    seed, start, stop, timeout, outdir = job
    stats, failures, slow = {}, [], []
    outcomes: dict = {}
    for i in range(start, stop):
        name, text = generate(seed, i)
        t0 = time.perf_counter()
        got: list = []
        problem = check(text, timeout=timeout, outcome=got)
        key = OUTCOME_CLASSES.get(got[0][:2] if got and got[0] != "ok" else "ok", "other") if got else "failure"
        outcomes[key] = outcomes.get(key, 0) + 1
        dt = time.perf_counter() - t0
        n, f, t = stats.get(name, (0, 0, 0.0))
        stats[name] = (n + 1, f + (problem is not None), t + dt)
        if dt > 2.0:
            slow.append((i, name, round(dt, 2)))
        if problem is not None:
            failures.append((i, name, problem.split("\n", 1)[0][:300]))
            if outdir:
                d = Path(outdir)
                d.mkdir(parents=True, exist_ok=True)
                (d / f"{i}.net").write_text(text, encoding="utf-8", errors="surrogatepass")
                (d / f"{i}.txt").write_text(f"{name}\n{problem}\n", encoding="utf-8", errors="replace")
    return stats, failures, slow, outcomes


# how far an input got: the stage of its first diagnostic
OUTCOME_CLASSES = {"ok": "accepted", "E0": "E0xx syntax/file", "E1": "E1xx names/arguments",
                   "E2": "E2xx shapes", "E3": "E3xx model structure", "E4": "E4xx training block",
                   "E5": "E5xx limits"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=100_000, help="number of inputs")
    p.add_argument("--seed", default="netdsl-fuzz-1")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--chunk", type=int, default=500)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before one input counts as a hang")
    p.add_argument("--mem-mb", type=int, default=3000, help="address-space limit per worker (0: none)")
    p.add_argument("--out", default="/tmp/netdsl-fuzz", help="where failing inputs are written")
    p.add_argument("--replay", type=int, metavar="I", help="regenerate input I, print it and check it")
    args = p.parse_args(argv)

    if args.replay is not None:
        name, text = generate(args.seed, args.replay)
        print(f"# {name}\n{text!r}\n")
        print(check(text, timeout=args.timeout) or "ok: success or a clean NetdslError")
        return 0

    jobs = [(args.seed, s, min(s + args.chunk, args.start + args.n), args.timeout, args.out)
            for s in range(args.start, args.start + args.n, args.chunk)]
    t0 = time.time()
    totals, failures, slow, outcomes = {}, [], [], {}
    done = 0
    if args.jobs > 1:
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        with ctx.Pool(args.jobs, initializer=_worker_init, initargs=(args.mem_mb,), maxtasksperchild=20) as pool:
            results = pool.imap_unordered(_run_chunk, jobs)
            for stats, fails, sl, oc in results:
                done = _merge(totals, failures, slow, stats, fails, sl, done, t0)
                for k, v in oc.items():
                    outcomes[k] = outcomes.get(k, 0) + v
    else:
        _worker_init(args.mem_mb)
        for job in jobs:
            stats, fails, sl, oc = _run_chunk(job)
            done = _merge(totals, failures, slow, stats, fails, sl, done, t0)
            for k, v in oc.items():
                outcomes[k] = outcomes.get(k, 0) + v
    elapsed = time.time() - t0
    print(f"\ninputs: {done}  failures: {len(failures)}  time: {elapsed:.1f} s  "
          f"({done / max(elapsed, 1e-9):.0f} inputs/s, {args.jobs} processes)")
    print(f"{'generator':<24}{'inputs':>9}{'failures':>10}{'cpu s':>9}{'ms/input':>10}")
    for name in sorted(totals):
        n, f, t = totals[name]
        print(f"{name:<24}{n:>9}{f:>10}{t:>9.0f}{1000 * t / max(n, 1):>10.1f}")
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items(), key=lambda kv: -kv[1])))
    if slow:
        slow.sort(key=lambda s: -s[2])
        print(f"slowest inputs (> 2 s): {len(slow)}; worst: " + ", ".join(f"#{i} {n} {t}s" for i, n, t in slow[:5]))
    for i, name, msg in sorted(failures)[:40]:
        print(f"FAIL #{i} {name}: {msg}")
    if failures:
        print(f"failing inputs written to {args.out}; reproduce one with --replay I --seed {args.seed}")
    return 1 if failures else 0


def _merge(totals, failures, slow, stats, fails, sl, done, t0):
    for k, (n, f, t) in stats.items():
        a, b, c = totals.get(k, (0, 0, 0.0))
        totals[k] = (a + n, b + f, c + t)
        done += n
    failures.extend(fails)
    slow.extend(sl)
    nfail = len(failures)
    print(f"\r{done} inputs, {nfail} failures, {time.time() - t0:.0f} s", end="", file=sys.stderr, flush=True)
    return done


if __name__ == "__main__":
    sys.exit(main())
