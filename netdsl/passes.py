"""The passes over the IR, run as one flat, named list (see PASSES).

Each pass takes a Graph and returns a new one, or raises NetdslError with
every diagnostic it found.
"""
from __future__ import annotations

from dataclasses import replace

from . import ir, layers, shapes
from .errors import Diagnostic, NetdslError
from .layers.convolution import lengths_after_windows
from .limits import LIMITS

def resolve_defaults(g: ir.Graph) -> ir.Graph:
    """Explicit argument > enclosing default_options > the kind's own default.

    The IR renames CNTK's argument names to plain ones (units, kernel, filters, dim) so emitters
    read one vocabulary: each kind's `attrs` table (netdsl/layers/) maps one to the other."""
    out = []
    for layer in g.layers:
        kind = layers.get(layer.kind)
        given, scope = dict(layer.attrs), dict(layer.defaults)
        attrs = {}
        for key, (src, default) in kind.attrs.items():
            if src in given:
                attrs[key] = given[src]
            elif src in scope:
                attrs[key] = scope[src]
            else:
                attrs[key] = default
        for key in kind.floats:
            attrs[key] = float(attrs[key])
        if kind.complete is not None:
            attrs = kind.complete(attrs, g.training)
        out.append(replace(layer, attrs=tuple(sorted(attrs.items()))))
    return replace(g, layers=tuple(out))


def infer_shapes(g: ir.Graph) -> ir.Graph:
    """Give every node its type and every layer its parameters; check sharing."""
    types = {i.name: i.type for i in g.inputs}
    defs = {l.name: l for l in g.layers}
    first_inputs: dict = {}
    diags, nodes = [], []
    for node in g.nodes:
        layer = defs[node.layer]
        ins = [types.get(i) for i in node.inputs]
        if any(t is None for t in ins):  # an earlier node failed; its error is already reported
            nodes.append(node)
            continue
        seen = first_inputs.get(layer.name)
        if seen is not None and seen != ins:
            diags.append(Diagnostic(
                "E203", f"shared layer '{layer.name}' ({layer.kind}) is applied to "
                f"{' and '.join(t.describe() for t in ins)} here but to {' and '.join(t.describe() for t in seen)} before",
                node.span, "a shared layer has one set of weights, so every input must have the same shape"))
            nodes.append(node)
            continue
        try:
            shapes.tensor_use(layer.kind, dict(layer.attrs), ins)
            out, pshapes, extra = layers.get(layer.kind).shape(dict(layer.attrs), ins)
        except shapes.ShapeError as e:
            diags.append(Diagnostic(e.code, f"layer '{layer.name}' ({layer.kind}): {e}", node.span))
            nodes.append(node)
            continue
        if seen is None:
            first_inputs[layer.name] = ins
            layer = layer.with_attrs(**extra) if extra else layer
            layer = replace(layer, params=make_params(layer, pshapes))
            defs[layer.name] = layer
        types[node.name] = out
        nodes.append(replace(node, type=out))
    if diags:
        raise NetdslError(diags)
    return replace(g, layers=tuple(defs[l.name] for l in g.layers), nodes=tuple(nodes))


def make_params(layer: ir.Layer, pshapes: dict) -> tuple:
    kind = layers.get(layer.kind)
    inits = kind.inits(layer) if kind.inits else {}
    frozen = kind.frozen(layer) if callable(kind.frozen) else kind.frozen
    return tuple(ir.Param(f"{layer.name}.{short}", tuple(shape), inits[short], short not in frozen)
                 for short, shape in pshapes.items())


def count_params(g: ir.Graph) -> ir.Graph:
    """Refuse absurd models before any array is allocated."""
    total = sum(p.size for p in g.params())
    if total > LIMITS.max_params:
        biggest = max(g.layers, key=lambda l: sum(p.size for p in l.params))
        raise NetdslError(Diagnostic(
            "E502", f"the model has {total:,} parameters, over the limit of {LIMITS.max_params:,} "
            f"(the largest layer is '{biggest.name}' with {sum(p.size for p in biggest.params):,})",
            biggest.span, "raise NETDSL_MAX_PARAMS to allow more"))
    return g


def validate(g: ir.Graph) -> ir.Graph:
    diags = []
    produced = {n.name for n in g.nodes} | {i.name for i in g.inputs}
    for out in g.outputs:
        if out not in produced:
            diags.append(Diagnostic("E304", f"output '{out}' is not computed by the model", g.span))
    inputs = {i.name for i in g.inputs}
    if g.outputs and all(o in inputs for o in g.outputs):
        diags.append(Diagnostic("E304", "the outputs are raw inputs; apply some layer first", g.span))
    diags += lengths_after_windows(g)
    diags += tensor_loss(g)
    if diags:
        raise NetdslError(diags)
    return g


def tensor_loss(g: ir.Graph) -> list:
    """Cross-entropy of a rank-2 output (Dense((3, 4))): CNTK's softmax runs over all its elements, the
    others' over one axis (and not the same one), so no target agrees with another."""
    training = g.training or ir.Training()
    if training.loss != "cross_entropy_with_softmax" or not g.outputs:
        return []
    node = next((n for n in g.nodes if n.name == g.outputs[0]), None)
    if node is None or node.type is None or len(node.type.shape) != 2:
        return []
    written = training.span is not None
    return [Diagnostic("E103", f"loss cross_entropy_with_softmax{'' if written else ' (the default)'} on the output "
                       f"'{g.outputs[0]}', the rank-2 tensor {node.type.describe()}: the frameworks disagree on the "
                       "axis its softmax runs over", training.span_of("loss") if written else node.span,
                       "Flatten it (or end with a Dense(n)), or train it with squared_error"
                       + ("" if written else " (a train block with loss = squared_error)"))]


PASSES = [
    ("resolve_defaults", resolve_defaults),
    ("infer_shapes", infer_shapes),
    ("count_params", count_params),
    ("validate", validate),
]


def run_passes(g: ir.Graph, sources: dict | None = None) -> ir.Graph:
    for _name, fn in PASSES:
        try:
            g = fn(g)
        except NetdslError as e:
            raise NetdslError(e.diagnostics, sources) from None
    return g
