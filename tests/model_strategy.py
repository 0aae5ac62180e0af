"""A hypothesis strategy for random VALID .net models, tracking the shape each value must have.

Used by tests/test_properties.py (front end, native executor, generated PyTorch) and by
bench/difffuzz.py and the seeded six-column sample (differential fuzzing, issue 11).

The builder writes statements while tracking, by the documented formulas (docs/ir.md), the type of the
current value: ('image', (C, H, W)), ('vector', (F,)), ('seq', (F,)) with a sequence length T, or
('ids', ()) for token ids before their Embedding. It draws from the whole language:

- layers: Convolution and pooling with every pad form (pad=True at stride 2 and even kernels, int, pair,
  explicit, scope defaults) on odd and even sizes, Dense (on images it flattens), Dropout (compared in
  eval mode), BatchNormalization, LayerNormalization, Stabilizer, activations as layers, LSTM forward
  and backward, Embedding over SequenceInput(vocab=..);
- constructs: Sequential, default_options scopes, LayerStack with `lambda i`, a layer shared by two
  calls / inside one Sequential / by LayerStack(2, lambda: layer) / across two Sequentials, splice,
  elementwise + - *, Flatten, select_first, select_last;
- the end of the model: a logits, softmax or sigmoid head, several outputs (the loss trains the
  first; W004), and a train block with each loss (or none: the default).

Adding a construct: write one `c_<name>(kind, t, v)` method and list it in CONSTRUCTS. Adding a layer:
write one `<kind>_<name>(t, default_pad)` method (or `any_<name>` for a shape-keeping layer) and list
it in LAYERS.
"""
from __future__ import annotations

import math

from hypothesis import strategies as st

ACTS = ["relu", "sigmoid", "tanh"]
KINDS = ("image", "vector", "seq")
# construct: (weight, kinds it applies to)
CONSTRUCTS = {
    "layer": (3, KINDS),
    "sequential": (1, KINDS),
    "scope": (1, KINDS),
    "stack": (1, KINDS),
    "shared": (1, KINDS),
    "shared_across": (1, KINDS),
    "splice": (1, KINDS),
    "elementwise": (1, KINDS),
    "change": (1, ("image", "seq")),
    "embed": (1, ("ids",)),
}
# the layers a construct may draw for a value of each kind (repeats weigh)
LAYERS = {
    "image": ["conv", "conv", "pool", "bn", "ln", "dropout", "act", "activation", "stabilizer"],
    "vector": ["dense", "dense", "bn", "ln", "dropout", "act", "stabilizer"],
    "seq": ["lstm", "lstm", "dense", "ln", "dropout", "act", "stabilizer"],
}


def ceil_div(a, b):
    return -(-a // b)


class Builder:
    def __init__(self, draw):
        self.draw = draw
        self.lines: list = []
        self.k = 0
        self.features: set = set()
        self.values: list = []  # (name, kind, shape) of the values computed, candidates for extra outputs

    def fresh(self, base="v"):
        self.k += 1
        return f"{base}{self.k}"

    def emit(self, line):
        self.lines.append(line)

    # ---------------------------------------------------------- padding
    def pad_choice(self, size_hw, window, strides):
        """(text for pad=..., or None for the default False; output H, W); always a valid choice."""
        d = self.draw
        kind = d(st.sampled_from(["default", "false", "true", "int", "pair", "explicit"]))
        (h, w), (kh, kw), (sh, sw) = size_hw, window, strides

        def out(n, k, s, before, after):
            return (n + before + after - k) // s + 1 if n + before + after >= k else 0

        if kind == "true":
            self.features.add(f"pad=True s={sh}{sw} k={kh}{kw}")
            return "True", (ceil_div(h, sh), ceil_div(w, sw))
        if kind in ("default", "false"):
            pads = ((0, 0), (0, 0))
            text = None if kind == "default" else "False"
        elif kind == "int":
            p = d(st.integers(0, min(kh, kw) - 1))
            pads, text = ((p, p), (p, p)), str(p)
        elif kind == "pair":
            ph, pw = d(st.integers(0, kh - 1)), d(st.integers(0, kw - 1))
            pads, text = ((ph, ph), (pw, pw)), f"({ph}, {pw})"
        else:
            t, b = d(st.integers(0, kh - 1)), d(st.integers(0, kh - 1))
            l, r = d(st.integers(0, kw - 1)), d(st.integers(0, kw - 1))
            pads, text = ((t, b), (l, r)), f"(({t}, {b}), ({l}, {r}))"
        ho, wo = out(h, kh, sh, *pads[0]), out(w, kw, sw, *pads[1])
        if ho < 1 or wo < 1:
            return "True", (ceil_div(h, sh), ceil_div(w, sw))  # that window does not fit: fall back to "same"
        self.features.add(f"pad={kind}")
        if h % 2 or w % 2:
            self.features.add(f"pad={kind} odd")
        return text, (ho, wo)

    def pad_choice_fixed(self, pad, hw, k, s):
        """The output H, W under a scope's default pad (text None), or an explicit override where it cannot fit."""
        (h, w), (kh, kw), (sh, sw) = hw, k, s
        if pad == "True":
            return None, (ceil_div(h, sh), ceil_div(w, sw))
        p = int(pad)
        ho, wo = (h + 2 * p - kh) // sh + 1, (w + 2 * p - kw) // sw + 1
        if h + 2 * p < kh or w + 2 * p < kw or ho < 1 or wo < 1 or p >= kh or p >= kw:
            return "True", (ceil_div(h, sh), ceil_div(w, sw))
        self.features.add("pad=scope")
        return None, (ho, wo)

    def window(self):
        d = self.draw
        if d(st.booleans()):
            k = d(st.integers(1, 5))
            return (k, k), str(k) if d(st.booleans()) else f"({k}, {k})"
        kh, kw = d(st.integers(1, 4)), d(st.integers(1, 4))
        return (kh, kw), f"({kh}, {kw})"

    def strides(self):
        d = self.draw
        s = d(st.sampled_from([1, 2, (1, 2), (2, 1)]))
        pair = (s, s) if isinstance(s, int) else s
        if pair == (1, 1) and d(st.booleans()):
            return pair, None
        return pair, str(s)

    def windowed(self, t, default_pad):
        """Window, strides and pad of a convolution or pooling: (argument texts after the window, H, W)."""
        _, h, w = t
        (kh, kw), ktext = self.window()
        (sh, sw), stext = self.strides()
        pad_text, (ho, wo) = self.pad_choice((h, w), (kh, kw), (sh, sw))
        if pad_text is None and default_pad is not None:  # the scope's pad applies
            pad_text, (ho, wo) = self.pad_choice_fixed(default_pad, (h, w), (kh, kw), (sh, sw))
        args = ([f"pad={pad_text}"] if pad_text is not None else []) + ([f"strides={stext}"] if stext else [])
        return ktext, args, ho, wo

    # ---------------------------------------------------------- layers: (constructor text, output shape)
    def layer(self, kind, t, default_pad=None):
        what = self.draw(st.sampled_from(LAYERS[kind]))
        self.features.add(f"{kind}-{what}")
        make = getattr(self, f"{kind}_{what}", None) or getattr(self, f"any_{what}")
        return make(t, default_pad)

    def image_conv(self, t, default_pad):
        d = self.draw
        ktext, args, ho, wo = self.windowed(t, default_pad)
        filters = d(st.integers(1, 6))
        if d(st.booleans()):
            args.append(f"activation={d(st.sampled_from(ACTS + ['None']))}")
        return f"Convolution({', '.join([ktext, str(filters)] + args)})", (filters, ho, wo)

    def image_pool(self, t, default_pad):
        kind = self.draw(st.sampled_from(["MaxPooling", "AveragePooling"]))
        self.features.add(kind)
        ktext, args, ho, wo = self.windowed(t, default_pad)
        return f"{kind}({', '.join([ktext] + args)})", (t[0], ho, wo)

    def vector_dense(self, t, default_pad):
        d = self.draw
        units = d(st.integers(1, 8))
        act = d(st.sampled_from([None] + ACTS + ["softmax"]))
        return f"Dense({units}" + (f", activation={act})" if act else ")"), (units,)

    def seq_dense(self, t, default_pad):
        units = self.draw(st.integers(1, 6))
        return f"Dense({units})", (units,)

    def seq_lstm(self, t, default_pad):
        units = self.draw(st.integers(1, 6))
        back = self.draw(st.booleans())
        self.features.add("lstm-backward" if back else "lstm-forward")
        return f"Recurrence(LSTM({units})" + (", go_backwards=True)" if back else ")"), (units,)

    def any_bn(self, t, default_pad):
        return "BatchNormalization()", t

    def any_ln(self, t, default_pad):
        return "LayerNormalization()", t

    def any_dropout(self, t, default_pad):
        return f"Dropout({self.draw(st.sampled_from([0.1, 0.25, 0.5]))})", t

    def any_act(self, t, default_pad):
        return self.draw(st.sampled_from(ACTS)), t

    def any_activation(self, t, default_pad):
        return f"Activation({self.draw(st.sampled_from(ACTS))})", t

    def any_stabilizer(self, t, default_pad):
        return ("Stabilizer()" if self.draw(st.booleans()) else "Stabilizer(steepness=2.5)"), t

    def same_shape(self, kind, t):
        """A layer with weights whose output has the input's shape (for sharing and residuals)."""
        return f"Convolution((3, 3), {t[0]}, pad=True)" if kind == "image" else f"Dense({t[0]})"

    # ---------------------------------------------------------- constructs: (kind, shape, value name)
    def step(self, kind, t, v):
        names = [n for n, (w, kinds) in CONSTRUCTS.items() if kind in kinds for _ in range(w)]
        construct = self.draw(st.sampled_from(names))
        self.features.add(construct)
        kind, t, out = getattr(self, f"c_{construct}")(kind, t, v)
        self.values.append((out, kind, t))
        return kind, t, out

    def c_layer(self, kind, t, v):
        text, nt = self.layer(kind, t)
        out = self.fresh()
        self.emit(f"{out} = {text}({v})")
        return kind, nt, out

    def c_sequential(self, kind, t, v, scope=None, default_pad=None):
        members, cur = [], t
        for _ in range(self.draw(st.integers(1, 3))):
            text, cur = self.layer(kind, cur, default_pad)
            members.append(text)
        g, out = self.fresh("group"), self.fresh()
        stmt = f"{g} = Sequential([{', '.join(members)}])"
        self.emit(f"with default_options({scope}) {{\n    {stmt}\n}}" if scope is not None else stmt)
        self.emit(f"{out} = {g}({v})")
        return kind, cur, out

    def c_scope(self, kind, t, v):
        d = self.draw
        opts, default_pad = [], None
        if kind == "image" and d(st.booleans()):
            default_pad = d(st.sampled_from(["True", "0", "1"]))
            opts.append(f"pad={default_pad}")
        if d(st.booleans()):
            opts.append(f"activation={d(st.sampled_from(ACTS))}")
        if d(st.booleans()):
            opts.append("init=he_normal()")
        return self.c_sequential(kind, t, v, scope=", ".join(opts), default_pad=default_pad)

    def c_stack(self, kind, t, v):
        d = self.draw
        n = d(st.integers(1, 3))
        if kind == "image":
            sizes = [d(st.integers(1, 5)) for _ in range(3)]
            body = f"Convolution((3, 3), {sizes}[i], pad=True, activation=relu)"
        else:
            sizes = [d(st.integers(1, 6)) for _ in range(3)]
            body = f"[Dense({sizes}[i]), relu]" if d(st.booleans()) else f"Dense({sizes}[i], activation=tanh)"
        out = self.fresh()
        self.emit(f"{out} = LayerStack({n}, lambda i: {body})({v})")
        return kind, (sizes[n - 1],) + tuple(t[1:]), out

    def c_shared(self, kind, t, v):
        """One layer applied twice: as two calls, listed twice in one Sequential, or by LayerStack(2, lambda: layer)."""
        name, out = self.fresh("shared"), self.fresh()
        self.emit(f"{name} = {self.same_shape(kind, t)}")
        how = self.draw(st.sampled_from(["calls", "sequential", "stack"]))
        self.features.add(f"shared-{how}")
        self.emit(f"{out} = " + {"calls": f"{name}({name}({v}))", "sequential": f"Sequential([{name}, {name}])({v})",
                                 "stack": f"LayerStack(2, lambda: {name})({v})"}[how])
        return kind, t, out

    def c_shared_across(self, kind, t, v):
        """One layer inside two different Sequentials (or one Sequential and a direct call)."""
        d = self.draw
        name, g1, out = self.fresh("shared"), self.fresh("group"), self.fresh()
        self.emit(f"{name} = {self.same_shape(kind, t)}")
        self.emit(f"{g1} = Sequential([{name}, {d(st.sampled_from(ACTS))}])")
        if d(st.booleans()):
            g2 = self.fresh("group")
            self.emit(f"{g2} = Sequential([{d(st.sampled_from(ACTS))}, {name}])")
            self.emit(f"{out} = {g2}({g1}({v}))")
        else:
            self.emit(f"{out} = {name}({g1}({v}))")
        return kind, t, out

    def c_splice(self, kind, t, v):
        d = self.draw
        a, b, out = self.fresh("a"), self.fresh("b"), self.fresh()
        f1, f2 = d(st.integers(1, 4)), d(st.integers(1, 4))
        if kind == "image":
            self.emit(f"{a} = Convolution((3, 3), {f1}, pad=True)({v})")
            self.emit(f"{b} = Convolution((1, 1), {f2})({v})")
        else:
            self.emit(f"{a} = Dense({f1})({v})")
            self.emit(f"{b} = Dense({f2}, activation=tanh)({v})")
        self.emit(f"{out} = splice([{a}, {b}])" if d(st.booleans()) else f"{out} = splice({a}, {b})")
        self.features.add(f"splice-{kind}")
        return kind, (f1 + f2,) + tuple(t[1:]), out

    def c_elementwise(self, kind, t, v):
        """A residual-style `op(layer(v), v)` with + - *, in either operand order."""
        d = self.draw
        a, out = self.fresh("a"), self.fresh()
        op = d(st.sampled_from(["+", "-", "*"]))
        self.emit(f"{a} = {self.same_shape(kind, t)}({v})")
        self.emit(f"{out} = {a} {op} {v}" if d(st.booleans()) else f"{out} = {v} {op} {a}")
        self.features.add(f"elementwise{op}")
        return kind, t, out

    def c_change(self, kind, t, v):
        d = self.draw
        out = self.fresh()
        if kind == "image":
            if d(st.booleans()):
                self.emit(f"{out} = Flatten()({v})")
                self.features.add("flatten")
                return "vector", (math.prod(t),), out
            units = d(st.integers(1, 8))
            self.emit(f"{out} = Dense({units})({v})")  # Dense flattens an image in C, H, W order
            self.features.add("dense-on-image")
            return "vector", (units,), out
        fn = d(st.sampled_from(["select_last", "select_first"]))
        self.emit(f"{out} = {fn}({v})")
        self.features.add(fn)
        return "vector", t, out

    def c_embed(self, kind, t, v):
        """Token ids into vectors: Embedding alone, or first in a Sequential of sequence layers."""
        d = self.draw
        units = d(st.integers(1, 5))
        out = self.fresh()
        if d(st.booleans()):
            self.emit(f"{out} = Embedding({units})({v})")
            return "seq", (units,), out
        members, cur = [f"Embedding({units})"], (units,)
        for _ in range(d(st.integers(1, 2))):
            text, cur = self.layer("seq", cur)
            members.append(text)
        g = self.fresh("group")
        self.emit(f"{g} = Sequential([{', '.join(members)}])")
        self.emit(f"{out} = {g}({v})")
        self.features.add("embed-sequential")
        return "seq", cur, out

    # ---------------------------------------------------------- the end of the model
    def head(self, kind, t, v):
        """Optionally a Dense head: logits, softmax or sigmoid (the W001 double softmax under cross-entropy)."""
        act = self.draw(st.sampled_from([None, None, "None", "softmax", "sigmoid"]))
        if act is None:
            return kind, t, v
        units, out = self.draw(st.integers(1, 5)), self.fresh("head")
        self.emit(f"{out} = Dense({units}, activation={act})({v})")
        self.features.add(f"head-{act}")
        return ("seq" if kind == "seq" else "vector"), (units,), out

    def extra_outputs(self, v):
        """Earlier values as further outputs (the loss trains the first only, W004)."""
        cands = [val for val in self.values if val[0] != v]
        if not cands or self.draw(st.integers(0, 3)) != 0:
            return []
        extra = self.draw(st.lists(st.sampled_from(cands), min_size=1, max_size=2, unique_by=lambda val: val[0]))
        self.features.add(f"outputs-{1 + len(extra)}")
        return extra

    def train_block(self):
        loss = self.draw(st.sampled_from([None, "cross_entropy_with_softmax", "squared_error", "cross_entropy"]))
        self.features.add(f"loss-{loss}")
        if loss is not None:
            self.emit(f"train {{\n    loss = {loss}\n}}")


@st.composite
def models(draw):
    """{"text", "outputs": [(name, kind, shape)], "kind", "shape" (of the first output), "T", "features"}."""
    b = Builder(draw)
    kind = draw(st.sampled_from(["image", "image", "vector", "seq", "ids"]))
    T = None
    if kind == "image":
        t = (draw(st.integers(1, 3)), draw(st.integers(3, 11)), draw(st.integers(3, 11)))
        b.emit(f"x = Input({t})")
    elif kind == "vector":
        t = (draw(st.integers(1, 12)),)
        b.emit(f"x = Input({t[0]})" if draw(st.booleans()) else f"x = Input(({t[0]},))")
    elif kind == "seq":
        t = (draw(st.integers(1, 6)),)
        T = draw(st.integers(1, 5))
        b.emit(f"x = SequenceInput({t[0]}, length={T})" if draw(st.booleans()) else f"x = SequenceInput({t[0]})")
    else:
        t = ()
        b.emit(f"x = SequenceInput(vocab={draw(st.integers(2, 9))})")
    v = "x"
    for _ in range(draw(st.integers(1, 6))):
        kind, t, v = b.step(kind, t, v)
    kind, t, v = b.head(kind, t, v)
    outputs = [(v, kind, t)] + b.extra_outputs(v)
    b.emit("output " + ", ".join(name for name, _, _ in outputs))
    b.train_block()
    return {"text": "\n".join(b.lines) + "\n", "outputs": outputs, "kind": kind, "shape": t,
            "T": T if T is not None else 3, "features": b.features}
