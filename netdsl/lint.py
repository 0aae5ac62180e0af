"""Warnings: likely mistakes in a model that is valid, as located W-code diagnostics.

Each rule is one small function (graph, module) -> diagnostics, over the checked IR (after the
shape passes, so every node has its type and every layer its parameters) and, where the IR has
forgotten what the user wrote (a loss alias), the syntax tree. RULES is the flat, named list
they run in, like passes.PASSES. A warning never stops anything: `netdsl check` prints it and
exits 0 unless --Werror; `compile` and `run` print it to stderr and go on.

A new rule: a function here and a line in RULES, a W-code in errors.CODES (then
`python -m netdsl.errors --markdown > docs/errors.md`), a row in docs/language.md's Warnings
table, and a pinned case tests/warnings/wNNN_*.net (tests/test_warnings.py writes the .expected).
"""
from __future__ import annotations

import math
import sys
from dataclasses import replace

from . import ir, passes
from . import syntax as S
from .errors import NO_SPAN, Diagnostic, NetdslError, warning

# Layers that keep the value they are given as far as these rules care: a rule looking for what
# feeds a layer, or what ends an output, looks through them.
SHAPE_ONLY = ("Flatten", "Dropout")


def trained_output(g: ir.Graph) -> str:
    """The output the loss trains (docs/ir.md, Training block): the first one."""
    return g.outputs[0]


def producers(g: ir.Graph) -> dict:
    return {n.name: n for n in g.nodes}


def layer_defs(g: ir.Graph) -> dict:
    """name -> Layer; Graph.layer() is a linear search, too slow per node on a 10k-layer model."""
    return {layer.name: layer for layer in g.layers}


def where(*candidates) -> object:
    """The first span given, so a warning is always located."""
    return next((s for s in candidates if s is not None), NO_SPAN)


def loss_phrase(g: ir.Graph) -> str:
    tr = g.training or ir.Training()
    return f"the loss {tr.loss}" + ("" if tr.span else " (the default: there is no train block)")


# ------------------------------------------------------------ rules

def double_softmax(g: ir.Graph, module) -> list:
    """W001: cross_entropy_with_softmax takes logits; a softmax or sigmoid output squashes them first."""
    if (g.training or ir.Training()).loss != "cross_entropy_with_softmax" or not g.outputs:
        return []
    prod, defs = producers(g), layer_defs(g)
    node = prod.get(trained_output(g))
    while node is not None and defs[node.layer].kind == "Dropout":
        node = prod.get(node.inputs[0])
    if node is None:
        return []
    layer = defs[node.layer]
    act = layer.attr("activation")
    if act not in ("softmax", "sigmoid"):
        return []
    return [warning(
        "W001", f"output '{trained_output(g)}' ends in {act} (layer '{layer.name}', {layer.kind}), but "
        f"{loss_phrase(g)} applies its own softmax: it is computed on {act} values instead of logits",
        where(layer.span, node.span),
        "give the last layer activation=None (the output is then logits; apply softmax when you need "
        "probabilities), or use loss = squared_error")]


def pool_stride_one_before_dense(g: ir.Graph, module) -> list:
    """W002: CNTK's pooling stride defaults to 1, so MaxPooling((2, 2)) barely shrinks the map, and
    the Dense layer after it quietly grows by the square of the stride the user had in mind."""
    prod, defs = producers(g), layer_defs(g)
    out, seen = [], set()
    halved = n_pools = None  # the layers with every defaulted stride set to its window, made on the first warning
    for node in g.nodes:
        dense = defs[node.layer]
        if dense.kind != "Dense" or not node.inputs:
            continue
        src = prod.get(node.inputs[0])
        while src is not None and defs[src.layer].kind in SHAPE_ONLY:
            src = prod.get(src.inputs[0])
        if src is None or (src.name, dense.name) in seen or not _default_stride_pool(defs[src.layer]):
            continue
        seen.add((src.name, dense.name))
        pool = defs[src.layer]
        window = _pair(pool.attr("window"))
        if halved is None:
            fixed = _with_window_strides(g)
            halved = layer_defs(fixed) if fixed else {}
            n_pools = sum(_default_stride_pool(layer) for layer in g.layers)
        count = sum(p.size for p in dense.params)
        compare = ""
        if halved:
            alt = sum(p.size for p in halved[dense.name].params)
            scope = "this pooling layer" if n_pools == 1 else f"the {n_pools} pooling layers that use the default stride"
            compare = f"; with strides equal to the window in {scope} it would have {alt:,}"
        out.append(warning(
            "W002", f"layer '{pool.name}' ({pool.kind} {window}) has stride 1, CNTK's default, so the Dense "
            f"layer '{dense.name}' after it has {count:,} parameters{compare}",
            where(pool.span, src.span),
            f"write strides={window} for the usual non-overlapping pooling, or strides=1 if the overlap is meant"))
    return out


def _default_stride_pool(layer: ir.Layer) -> bool:
    """A pooling layer whose window is bigger than one cell and whose stride is CNTK's default 1,
    not written out (strides is not a default_options key, so not written means the default)."""
    return (layer.kind in ("MaxPooling", "AveragePooling") and "strides" not in layer.explicit
            and _pair(layer.attr("strides")) == (1, 1) and math.prod(_pair(layer.attr("window"))) > 1)


def _pair(v) -> tuple:
    """A window or stride as a tuple (the IR holds tuples; an int would mean the same on both axes)."""
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _with_window_strides(g: ir.Graph) -> ir.Graph | None:
    """g with strides = window in every default-stride pooling layer, re-inferred; None if that
    does not fit (a window larger than what is left of the map)."""
    changed = tuple(layer.with_attrs(strides=_pair(layer.attr("window"))) if _default_stride_pool(layer) else layer
                    for layer in g.layers)
    try:
        return passes.infer_shapes(replace(g, layers=changed))
    except NetdslError:
        return None


def loss_alias(g: ir.Graph, module) -> list:
    """W003: `cross_entropy` reads like plain cross-entropy on probabilities; netdsl computes
    cross_entropy_with_softmax (softmax of the output, then -log of the label's entry)."""
    out = []
    for entry in (e for st in _statements(module) if isinstance(st, S.Train) for e in st.entries):
        v = entry.value
        name = v.id if isinstance(v, S.Name) else v.value if isinstance(v, S.String) else None
        if entry.key == "loss" and name in ("cross_entropy", "categorical_crossentropy"):
            out.append(warning(
                "W003", f"loss '{name}' is an alias for cross_entropy_with_softmax: it applies softmax "
                "to the output and takes the mean of -log softmax[label], so the output must be logits",
                v.span, "write loss = cross_entropy_with_softmax to say so"))
    return out


def several_outputs(g: ir.Graph, module) -> list:
    """W004: the loss trains the first output only (docs/ir.md); say so where the next one is named."""
    first = trained_output(g) if g.outputs else None
    others = [i for i in _first_listings(g) if g.outputs[i] != first]
    if not others:
        return []
    rest = [g.outputs[i] for i in others]
    node = producers(g).get(rest[0])
    span = _output_spans(g, module)[others[0]] or (node.span if node else None)
    names = ", ".join(f"'{o}'" for o in rest[:5]) + (f" and {len(rest) - 5} more" if len(rest) > 5 else "")
    return [warning(
        "W004", f"the model has {len(rest) + 1} outputs; {loss_phrase(g)} trains the first, '{first}', "
        f"only: {names} {'gets' if len(rest) == 1 else 'get'} no loss of {'its' if len(rest) == 1 else 'their'} own",
        where(span, g.span), "list the output to train first in 'output'")]


def output_twice(g: ir.Graph, module) -> list:
    """W007: `output z, z` (or an alias of z) lists one value twice; the targets key outputs by name."""
    spans, once = _output_spans(g, module), set(_first_listings(g))
    return [warning("W007", f"the value '{o}' is already an output; it is listed twice", where(spans[i], g.span),
                    "list each output once")
            for i, o in enumerate(g.outputs) if i not in once]


def _first_listings(g: ir.Graph) -> list:
    """The index in g.outputs where each output value is first listed."""
    seen: dict = {}
    for i, o in enumerate(g.outputs):
        seen.setdefault(o, i)
    return list(seen.values())


def _output_spans(g: ir.Graph, module) -> list:
    """The span of each name written in `output` statements, in source order: one per entry of
    g.outputs, since in a model that passed its checks the evaluator added one per name written.
    Unknown (None) without the syntax tree."""
    spans = [n.span for st in _statements(module) if isinstance(st, S.Output) for n in st.names]
    return spans if len(spans) == len(g.outputs) else [None] * len(g.outputs)


def _statements(module):
    """The module's statements in source order, with those inside `with` blocks, without recursion
    (a deeply nested file must not hit Python's stack limit here)."""
    stack = [iter(module.body if module is not None else ())]
    while stack:
        st = next(stack[-1], None)
        if st is None:
            stack.pop()
            continue
        yield st
        if isinstance(st, S.With):
            stack.append(iter(st.body))


def dropout_last(g: ir.Graph, module) -> list:
    """W005: Dropout ending the trained output perturbs the logits the loss sees, and does nothing at inference."""
    if not g.outputs:
        return []
    node = producers(g).get(trained_output(g))
    layer = layer_defs(g)[node.layer] if node is not None else None
    if layer is None or layer.kind != "Dropout":
        return []
    return [warning(
        "W005", f"output '{trained_output(g)}' ends in Dropout (layer '{layer.name}'): in training the loss sees "
        "randomly zeroed outputs, and at inference the layer does nothing",
        where(layer.span, node.span), "put Dropout before the last Dense layer")]


def unused_input(g: ir.Graph, module) -> list:
    """W006: an Input no output depends on is a wiring mistake or dead weight: the generated
    forward/predict still takes it (pytorch: forward(self, x, q))."""
    prod = producers(g)
    needed, stack = set(), list(g.outputs)
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        if name in prod:
            stack.extend(prod[name].inputs)
    return [warning("W006", f"input '{i.name}' is not used by any output", where(i.span, g.span),
                    "remove it, or compute an output from it")
            for i in g.inputs if i.name not in needed]


RULES = [
    ("double_softmax", double_softmax),
    ("pool_stride_one_before_dense", pool_stride_one_before_dense),
    ("loss_alias", loss_alias),
    ("several_outputs", several_outputs),
    ("dropout_last", dropout_last),
    ("unused_input", unused_input),
    ("output_twice", output_twice),
]


def lint(g: ir.Graph, module: S.Module | None = None) -> list[Diagnostic]:
    """Every rule's warnings, in source order (the main file first, then imported files)."""
    out = [d for _name, rule in RULES for d in rule(g, module)]
    return sorted(out, key=lambda d: (d.span.file != g.source, d.span.file, d.span.line, d.span.col))


def format_warnings(diags: list[Diagnostic], sources: dict) -> str:
    return "\n".join(d.format(sources) for d in diags)


def load_and_warn(path: str) -> tuple:
    """frontend.load() for `compile` and `run`: (graph, every file read), with the warnings printed
    to stderr (never stdout, which may be the generated code)."""
    from .frontend import load_with_warnings

    graph, diags, sources = load_with_warnings(path)
    if diags:
        print(format_warnings(diags, sources), file=sys.stderr)
    return graph, tuple(sources)
