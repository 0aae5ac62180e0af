"""Helpers shared by every emitter: graph lookups, Python-safe naming, code
fragments built from checked pieces, a topological walk that assigns local
variables, and the conversion tables that do not depend on one framework.

Nothing here imports a framework: the compiler must run where only netdsl is
installed. Everything that reaches generated code is either an identifier
checked by base.ident, a literal made by base.pyrepr, or code text built here
from those two (the Code type marks such text).
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field, replace

from .. import ir
from ..errors import Diagnostic
from ..layers.common import split_activation
from .base import EmitBug, header_source, ident, pyrepr
from .layout import layout  # noqa: F401  (emitters use C.layout)
from .names import BUILTINS, PY_KEYWORDS, Names, auto_named, class_name  # noqa: F401  (emitters use C.Names)

# ------------------------------------------------------------------ code text


class Code(str):
    """Python source built by netdsl from checked pieces; inserted verbatim, never through repr."""


_PLAIN_STR = re.compile(r"[A-Za-z0-9_./ :-]*\Z")


def lit(value) -> str:
    """A value as Python source: Code passes through, anything else becomes a literal (base.pyrepr).

    Ints, plain strings and tuples of ints take a fast path that gives exactly
    pyrepr's text: weight tables of deep models have tens of thousands of rows.
    """
    kind = type(value)
    if kind is Code:
        return str(value)
    if kind is int:
        return str(value)
    if kind is str and _PLAIN_STR.match(value):
        return f'"{value}"'
    if kind is tuple and value and all(type(d) is int for d in value):
        return f"({value[0]},)" if len(value) == 1 else "(" + ", ".join(map(str, value)) + ")"
    return pyrepr(value)


def dotted(name: str) -> str:
    """A dotted reference such as nn.Conv2d or self.cnn: every part must be an identifier."""
    for part in name.split("."):
        ident(part)
    return name


def call(func: str, *args, **kwargs) -> Code:
    """`func(args..., key=value...)` with every argument made by lit(); keywords keep their order."""
    try:
        return _call(func, args, tuple(kwargs.items()))
    except TypeError:  # an unhashable argument (a list): no caching
        return _call.__wrapped__(func, args, tuple(kwargs.items()))


@functools.lru_cache(maxsize=4096)
def _call(func: str, args: tuple, kwargs: tuple) -> Code:
    # deep models repeat the same few constructor calls thousands of times
    parts = [lit(a) for a in args]
    parts += [f"{ident(k)}={lit(v)}" for k, v in kwargs]
    return Code(f"{dotted(func)}({', '.join(parts)})")


WIDTH = 88  # ruff format's (and black's) line length: a user's formatter leaves the generated code alone


def wrap_call(code: str, indent: int, width: int = WIDTH) -> list:
    """Split one long line `lhs = f(a, b, c)tail` into one argument per line when it exceeds width.

    Splits at the top-level commas of the first call on the line; what
    follows its closing parenthesis (e.g. `(x)` when a layer is built and
    applied at once) stays on the last line.
    """
    if indent + len(code) <= width or "(" not in code:
        return [code]
    open_at = code.index("(")
    args, depth, start, quote, close_at = [], 0, open_at + 1, None, None
    for i in range(open_at, len(code)):
        ch = code[i]
        if quote:
            if ch == quote and code[i - 1] != "\\":
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                close_at = i
                break
        elif ch == "," and depth == 1:
            args.append(code[start:i].strip())
            start = i + 1
    if close_at is None:
        return [code]
    args.append(code[start:close_at].strip())
    return [code[:open_at + 1]] + [f"    {a}," for a in args if a] + [")" + code[close_at + 1:]]


def number(value) -> str:
    """A float literal, or `1 / n` when the value is exactly the reciprocal of an integer with a long decimal."""
    if isinstance(value, float) and 0 < value < 1 and len(repr(value)) > 8:
        n = round(1 / value)
        if 1 < n <= 1_000_000 and 1 / n == value:
            return f"1 / {n}"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return repr(value)
    return pyrepr(value)


def table_row(key: str, *values) -> str:
    """`"key": (v1, v2, ...),` for a constant table, an entry indented by 4 (exploded when too long)."""
    return layout(f"{lit(key)}: ({', '.join(map(lit, values))}),", 4)


def const_dict(name: str, items: dict, width: int = WIDTH) -> list:
    """`NAME = {...}` on one line, or one entry per line when that is too long."""
    one = f"{name} = {pyrepr(items)}"
    if len(one) <= width:
        return [one]
    return [f"{name} = {{"] + [f"    {pyrepr(k)}: {pyrepr(v)}," for k, v in items.items()] + ["}"]


def shape_tables(idx: GraphIndex) -> list:
    """The INPUTS and OUTPUTS constants of the contract: canonical batch shapes by name."""
    graph = idx.graph
    return (const_dict("INPUTS", {i.name: batch_shape(i.type) for i in graph.inputs})
            + const_dict("OUTPUTS", {o: batch_shape(idx.types[o]) for o in graph.outputs}))


def int_or_pair(pair) -> object:
    """(3, 3) -> 3; (3, 5) stays a pair: how people write square kernels and strides."""
    pair = tuple(pair)
    return pair[0] if len(set(pair)) == 1 else pair


# ---------------------------------------------------------------- graph index
@dataclass
class GraphIndex:
    """Dictionary lookups over a Graph (its own lookups scan lists)."""

    graph: ir.Graph
    layers: dict = field(default_factory=dict)  # name -> Layer
    types: dict = field(default_factory=dict)  # value name -> TensorType
    producer: dict = field(default_factory=dict)  # value name -> Node (inputs have none)
    applications: dict = field(default_factory=dict)  # layer name -> [Node]
    consumers: dict = field(default_factory=dict)  # value name -> [Node], once per use
    groups: dict = field(default_factory=dict)  # name -> Group
    outputs: frozenset = frozenset()
    inputs: tuple = ()  # input names

    @classmethod
    def build(cls, graph: ir.Graph) -> "GraphIndex":
        g = cls(graph)
        g.layers = {layer.name: layer for layer in graph.layers}
        g.inputs = tuple(i.name for i in graph.inputs)
        for i in graph.inputs:
            g.types[i.name] = i.type
            g.consumers[i.name] = []
        for n in graph.nodes:
            g.types[n.name] = n.type
            g.producer[n.name] = n
            g.consumers.setdefault(n.name, [])
            g.applications.setdefault(n.layer, []).append(n)
            for v in n.inputs:
                g.consumers.setdefault(v, []).append(n)
        g.groups = {gr.name: gr for gr in graph.groups}
        g.outputs = frozenset(graph.outputs)
        return g

    def input_types(self, node: ir.Node) -> list:
        return [self.types[v] for v in node.inputs]

    def first_input_type(self, layer: ir.Layer) -> ir.TensorType | None:
        apps = self.applications.get(layer.name)
        return self.types[apps[0].inputs[0]] if apps and apps[0].inputs else None

    def shared(self, layer_name: str) -> bool:
        return len(self.applications.get(layer_name, ())) > 1

    def group_layers(self, name: str) -> list:
        """The layer names of a group, nested groups expanded, in order."""
        out = []
        for m in self.groups[name].members:
            out.extend(self.group_layers(m) if m in self.groups else [m])
        return out


# ---------------------------------------------------------------- type helpers
def is_image(t: ir.TensorType) -> bool:
    """An image sample (C, H, W): the only values whose layout differs between NCHW and NHWC targets."""
    return not t.seq and t.vocab is None and len(t.shape) == 3


def is_ids(t: ir.TensorType) -> bool:
    return t.vocab is not None


def batch_shape(t: ir.TensorType) -> tuple:
    """The canonical batch shape, None for the batch and for unknown sequence lengths."""
    return t.batch_shape(None)


def feature_axis(t: ir.TensorType) -> int:
    """The canonical axis that splice joins and softmax normalises: channels of images, else the features."""
    if is_image(t):
        return 1
    return -1 if len(t.shape) == 1 else (2 if t.seq else 1)


def sample_size(t: ir.TensorType) -> int:
    return math.prod(t.shape)


# ---------------------------------------------------------------------- pads
@dataclass(frozen=True)
class Pads:
    """Explicit ((top, bottom), (left, right)) pads, with the forms frameworks want."""

    top: int
    bottom: int
    left: int
    right: int

    @classmethod
    def of(cls, pads) -> "Pads":
        (t, b), (l, r) = pads
        return cls(t, b, l, r)

    @property
    def zero(self) -> bool:
        return not (self.top or self.bottom or self.left or self.right)

    @property
    def symmetric(self) -> bool:
        return self.top == self.bottom and self.left == self.right

    @property
    def pair(self):
        """(pad_h, pad_w) when symmetric, a single int when all four agree (PyTorch's padding=)."""
        return int_or_pair((self.top, self.left))

    @property
    def ltrb(self) -> tuple:
        """(left, right, top, bottom): torch.nn.functional.pad's order for the last two axes."""
        return (self.left, self.right, self.top, self.bottom)

    @property
    def keras(self):
        """ZeroPadding2D's argument: an int, (sym_h, sym_w), or ((top, bottom), (left, right))."""
        if self.symmetric:
            return int_or_pair((self.top, self.left))
        return ((self.top, self.bottom), (self.left, self.right))


def same_is_exact(pads: Pads, window, strides) -> bool:
    """True when a framework's padding="same" is exactly these pads: stride 1, odd window, (k-1)/2 each side.

    (TF/Keras "same" agrees with netdsl in more cases, but this is the one
    every backend implements the same way, so it is the only one we rely on.)
    """
    kh, kw = window
    return (tuple(strides) == (1, 1) and kh % 2 == 1 and kw % 2 == 1
            and (pads.top, pads.bottom, pads.left, pads.right) == ((kh - 1) // 2, (kh - 1) // 2, (kw - 1) // 2, (kw - 1) // 2))


# ---------------------------------------------------------------- initialisers
_INIT = re.compile(r"^(glorot_uniform|glorot_normal|he_uniform|he_normal|zeros|ones)$|^(uniform|normal|constant)\((.+)\)$")


@functools.lru_cache(maxsize=None)
def parse_init(init: str) -> tuple:
    """'uniform(0.1)' -> ('uniform', 0.1); 'constant(0.0)' -> ('zeros', None); 'he_normal' -> ('he_normal', None)."""
    m = _INIT.match(init)
    if not m:
        raise EmitBug(f"unknown initialiser {init!r}")
    if m.group(1):
        return m.group(1), None
    kind, arg = m.group(2), float(m.group(3))
    if kind == "constant" and arg == 0.0:
        return "zeros", None
    if kind == "constant" and arg == 1.0:
        return "ones", None
    return kind, arg


def check_inits(graph: ir.Graph, target: str) -> list:
    out = []
    for layer in graph.layers:
        for p in layer.params:
            try:
                parse_init(p.init)
            except EmitBug:
                out.append(Diagnostic("E802", f"target '{target}' has no initialiser {p.init!r} (parameter {p.name})",
                                      layer.span or graph.span))
    return out


# ------------------------------------------------------------------- training
def training_dict(graph: ir.Graph) -> dict:
    """The training block as a flat dict: loss, optimizer and its attributes, batch size, ..."""
    t = graph.training or ir.Training()
    out = {"dataset": t.dataset, "loss": t.loss, "optimizer": t.optimizer}
    out.update(sorted(t.optimizer_attrs))
    out.update({"batch_size": t.batch_size, "epochs": t.epochs, "metrics": list(t.metrics),
                "seed": 0 if t.seed is None else t.seed})
    # issue 18's settings, each only when the block uses it (common/training.py.j2 reads them with .get)
    if dict(t.loss_attrs).get("reduction", "mean") != "mean":
        out["reduction"] = dict(t.loss_attrs)["reduction"]
    if t.schedule is not None:
        out["lr_schedule"] = t.schedule
        out.update((f"lr_schedule_{k}", v) for k, v in sorted(t.schedule_attrs))
    if t.lr_unit != "minibatch":
        out["lr_unit"] = t.lr_unit
    if t.weight_decay:
        out[f"{t.weight_decay_mode}_weight_decay"] = t.weight_decay  # l2_weight_decay, decoupled_weight_decay
    for key in ("clip_norm", "clip_value", "log_every", "early_stopping"):
        if getattr(t, key) is not None:
            out[key] = getattr(t, key)
    if t.validation_split:
        out["validation_split"] = t.validation_split
    return out


def loss_doc(graph: ir.Graph) -> str:
    """train_step()'s docstring paragraph: which loss, on what, reduced how."""
    loss = (graph.training or ir.Training()).loss
    if loss == "squared_error":
        text = ("The loss is the squared error against float targets of the output's shape, the mean over all "
                "elements.")
    else:
        text = ("The loss is cross-entropy with softmax against integer labels, the mean over samples (and time "
                "steps).")
    if len(graph.outputs) > 1:
        text += f" It is on the first output, {ident(graph.outputs[0])}, as in netdsl's own training."
    return docstring(text, 4, width=116)  # a paragraph of its own: no quotes on its lines


# the losses whose targets are float arrays of the output's shape: main() one-hot encodes its int labels
ONE_HOT_LOSSES = ("squared_error", "l2", "binary_cross_entropy_with_logits")


def dataset_plan(idx: GraphIndex) -> dict:
    """How main() feeds a dataset: {'ok': bool, 'reason': str, 'reshape': tuple, 'one_hot': bool, 'classes': int}.

    main() reads any numeric dataset (--data, common/data.py.j2) into a model with one
    input that is not token ids and one output of class scores; the samples are shaped
    for the input at run time. A model whose input takes token ids trains on token
    datasets (conll, tsv: train_tokens() in common/data.py.j2) when its output is class
    scores per sample or per time step. A model that cannot train so still compiles; its main()
    exits with the reason.
    """
    graph = idx.graph
    t = graph.training
    plan = {"ok": False, "reason": "", "reshape": (-1,), "one_hot": False, "classes": 10}
    if t is None:
        plan["reason"] = "the model has no training block (train it with train_step() in a loop of your own)"
        return plan
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        plan["reason"] = "main() can only train a model with one input and one output"
        return plan
    inp = graph.inputs[0].type
    out = idx.types[graph.outputs[0]]
    if inp.vocab is not None and len(out.shape) == 1:  # a tagger or a text classifier: token datasets
        plan.update(ok=True, one_hot=t.loss in ONE_HOT_LOSSES, classes=out.shape[0])
        return plan
    if inp.vocab is not None:
        plan["reason"] = f"main() feeds token sequences to class scores; the output {graph.outputs[0]} is {out.describe()}"
        return plan
    if out.seq or len(out.shape) != 1:
        plan["reason"] = f"main() trains classifiers; the output {graph.outputs[0]} is {out.describe()}"
        return plan
    plan.update(ok=True, reshape=(-1, *inp.shape), one_hot=t.loss in ONE_HOT_LOSSES, classes=out.shape[0])
    return plan


# ---------------------------------------------------------- the forward walk
@dataclass
class Step:
    """One statement of a forward pass: a node, or a chain of nodes a target emits as one call.

    `inputs` are value names; `output` is the value it defines; `nodes` the IR
    nodes it stands for (the last one defines the output).
    """

    nodes: tuple
    inputs: tuple
    output: str
    alias: bool = False  # the output is the input itself (e.g. Flatten of a vector): no statement

    @property
    def node(self) -> ir.Node:
        return self.nodes[-1]


def node_steps(graph: ir.Graph) -> list:
    """The nodes in topological order, one Step each (the IR keeps nodes in source order, a topological order)."""
    seen = {i.name for i in graph.inputs}
    steps = []
    for n in graph.nodes:
        missing = [v for v in n.inputs if v not in seen]
        if missing:
            raise EmitBug(f"node {n.name} reads {missing} before they are defined")
        seen.add(n.name)
        steps.append(Step((n,), tuple(n.inputs), n.name))
    return steps


def collapse_chains(graph: ir.Graph, steps: list, chains: list) -> list:
    """Replace each chain (a list of consecutive node names) by one Step with the chain's input and output.

    Chains come from group_chains(); a chain's nodes must be consecutive in the
    walk so that the merged step is still in topological order.
    """
    first = {c[0]: c for c in chains}
    members = {name for c in chains for name in c}
    out, i = [], 0
    by_output = {s.output: s for s in steps}
    while i < len(steps):
        s = steps[i]
        if s.output in first:
            chain = first[s.output]
            nodes = tuple(by_output[name].node for name in chain)
            out.append(Step(nodes, s.inputs, chain[-1]))
            i += len(chain)
            continue
        if s.output in members:
            raise EmitBug(f"chain member {s.output} out of order")
        out.append(s)
        i += 1
    return out


def group_chains(idx: GraphIndex, chainable) -> dict:
    """The groups a target can emit as one sequential container, with the node chains that apply them.

    Walks groups from the top: a group qualifies when every application of it
    is a straight chain of single-input nodes over exactly its layers (in
    order), whose intermediate values nobody else reads, its layers are used
    nowhere else, and chainable(node) accepts every node. A group that does
    not qualify is split into its member groups. Returns {group name: [chain
    of node names per application]}.
    """
    graph = idx.graph
    result = {}
    pos = {n.name: i for i, n in enumerate(graph.nodes)}

    def calls_of(layer_names):
        """node chains, one per application, or None."""
        # only the applications of these layers, in graph order: linear in the group's size, not the graph's
        apps = sorted({n.name: n for lname in set(layer_names) for n in idx.applications.get(lname, ())}.values(),
                      key=lambda n: pos[n.name])
        by_call: dict = {}
        for n in apps:
            by_call.setdefault(n.call, []).append(n)
        chains = []
        for call_id, nodes in by_call.items():
            if call_id is None or [n.layer for n in nodes] != list(layer_names):
                return None
            for a, b in zip(nodes, nodes[1:]):
                if b.inputs != (a.name,) or len(idx.consumers[a.name]) != 1 or a.name in idx.outputs:
                    return None
            if len(nodes[0].inputs) != 1 or not all(chainable(n) for n in nodes):
                return None
            chains.append([n.name for n in nodes])
        return chains or None

    def visit(name):
        layer_names = idx.group_layers(name)
        # a layer listed twice (Sequential([l, l]), LayerStack(2, lambda: l)) is one layer applied twice: a
        # container would build it twice, so its applications are emitted one by one
        if len(set(layer_names)) != len(layer_names):
            return
        chains = calls_of(layer_names) if layer_names else None
        if chains is not None and all(pos[c[-1]] - pos[c[0]] == len(c) - 1 for c in chains):
            result[name] = chains
            return
        for m in idx.groups[name].members:
            if m in idx.groups:
                visit(m)

    for gr in graph.groups:
        if gr.parent is None:
            visit(gr.name)
    return result


def assign_locals(idx: GraphIndex, steps: list, names: Names, chain_var: str = "x") -> dict:
    """Choose the local variable of every value the steps read or write.

    Inputs keep their names. A value the user did not name, read exactly once
    and by the very next step, and not an output, flows through one chain
    variable (`x = self.conv(x)`), the way people write forward passes; every
    other value gets its own name. Aliases (steps that are no-ops) share their
    input's variable. Returns {value name: local}.
    """
    local = {}
    for name in idx.inputs:
        local[name] = names.of(name)
    chain = None
    for i, s in enumerate(steps):
        if s.alias:
            local[s.output] = local[s.inputs[0]]
            continue
        uses = idx.consumers[s.output]
        nxt = steps[i + 1] if i + 1 < len(steps) else None
        # the value's only reader must be the next step, and it must not be an alias (which would re-export x)
        flows_on = (auto_named(s.node) and s.output not in idx.outputs and len(uses) == 1 and nxt is not None
                    and not nxt.alias and uses[0] in nxt.nodes and uses[0] is nxt.nodes[0])
        if flows_on:
            if chain is None:
                chain = names.of("\0chain", chain_var)
            local[s.output] = chain
        else:
            local[s.output] = names.of(s.output)
    return local


# --------------------------------------------------------------- activations
ACTIVATIONS = ("relu", "sigmoid", "tanh", "softmax", "elu", "leaky_relu", "gelu", "softplus", "silu", "hard_sigmoid")


def check_activations(graph: ir.Graph, target: str) -> list:
    out = []
    for layer in graph.layers:
        act = layer.attr("activation")
        if act is not None and split_activation(act)[0] not in ACTIVATIONS:
            out.append(Diagnostic("E802", f"target '{target}' has no activation {act!r} (layer {layer.name})",
                                  layer.span or graph.span))
    return out


def check_shapes(idx: GraphIndex, target: str) -> list:
    """Layer/type combinations the framework targets cannot express (reported, never emitted wrongly)."""
    graph = idx.graph
    out = []
    for n in graph.nodes:
        layer = idx.layers[n.layer]
        ins = idx.input_types(n)
        t = ins[0] if ins else None
        bad = None
        if layer.kind == "BatchNormalization" and t is not None and not (is_image(t) or len(t.shape) == 1):
            bad = f"BatchNormalization of {t.describe()} (only images, vectors and sequences of vectors)"
        elif layer.kind == "Embedding" and t is not None and t.shape != () and (t.vocab is not None or len(t.shape) != 1):
            bad = f"Embedding of {t.describe()}"
        if bad:
            out.append(Diagnostic("E802", f"target '{target}' cannot express {bad}", n.span or layer.span or graph.span))
    return out


def shape_text(shape: tuple, time_axis: int | None = None) -> str:
    """(None, 1, 28, 28) -> "(N, 1, 28, 28)"; an unknown sequence length is T."""
    dims = ["N" if i == 0 else ("T" if d is None else str(d)) for i, d in enumerate(shape)]
    return "(" + ", ".join(dims) + ")"


def doc_source(graph: ir.Graph) -> str:
    """The source path for a docstring: the header's, when it is a plain path, else a neutral phrase."""
    src = header_source(graph)
    return src if _PLAIN_PATH.fullmatch(src) else "its .net file"


_PLAIN_PATH = re.compile(r"[A-Za-z0-9_./-]+")


def signature_text(idx: GraphIndex, shape_of) -> str:
    """"image (N, 1, 28, 28) -> z (N, 10)" for docstrings; shape_of maps a TensorType to a batch shape."""
    graph = idx.graph
    ins = ", ".join(f"{ident(i.name)} {shape_text(shape_of(i.type))}" for i in graph.inputs)
    outs = ", ".join(f"{ident(o)} {shape_text(shape_of(idx.types[o]))}" for o in graph.outputs)
    return f"{ins} -> {outs}"


def docstring(text: str, indent: int, width: int = 110) -> str:
    """Text for a docstring body, wrapped at width (continuation lines indented), never containing quotes."""
    import textwrap

    if '"' in text or "\\" in text:
        raise EmitBug(f"docstring text with quotes or backslashes: {text!r}")
    # keep "(N, 1, 28, 28)" on one line: protect the spaces inside parentheses from the wrapping
    depth, chars = 0, []
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        chars.append("\0" if ch == " " and (depth or text[i + 1:i + 2] == "(") else ch)
    lines = textwrap.wrap("".join(chars), width - indent - 6, break_long_words=False, break_on_hyphens=False)
    lines = [line.replace("\0", " ") for line in lines]
    return ("\n" + " " * indent).join(lines)



# ------------------------------------------------------- 1-D windows over sequences
def is_1d_window(layer: ir.Layer) -> bool:
    """A Convolution with kernel (k,) or a pooling with window (k,): over the time axis of (N, T, F)."""
    return len(layer.attr("kernel" if layer.kind == "Convolution" else "window") or ()) == 1


def as_2d_window(layer: ir.Layer) -> ir.Layer:
    """The layer as a 2-D window over the (N, F, 1, T) image of a sequence (1 x k window, 1 x s strides,
    pads ((0, 0), (before, after))): targets whose 1-D pooling lacks a form (asymmetric pads, counts of
    real cells) run the 2-D one there. Its W would be (O, F, 1, k)."""
    key = "kernel" if layer.kind == "Convolution" else "window"
    a = dict(layer.attrs)
    a[key] = (1, a[key][0])
    a["strides"] = (1, a["strides"][0])
    a["pads"] = ((0, 0), tuple(a["pads"][0]))
    if isinstance(a.get("pad"), tuple):
        a["pad"] = a["pads"]
    return with_attrs(layer, a)


def with_attrs(layer: ir.Layer, attrs: dict) -> ir.Layer:
    """The layer with some attrs replaced."""
    return replace(layer, attrs=tuple(sorted({**dict(layer.attrs), **attrs}.items())))
