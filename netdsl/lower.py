"""Syntax tree -> IR graph: evaluate the file (evaluate.py), then assemble what it built.

The front end's pieces: values.py (what expressions evaluate to), evaluate.py (statements,
expressions, layer construction and application), library.py (the builtin names), train_block.py
(the train block), layers/ (one module per layer kind), names.py (which names may be used).
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from . import ir
from . import syntax as S
from .evaluate import Evaluator
from .limits import LIMITS
from .names import default_model_name, invalid_name_reason, snake
from .train_block import DEFAULT_TRAINING
from .values import GroupSpec, LayerSpec, freeze, iter_leaves

__all__ = ["build_graph", "invalid_name_reason", "lower"]

# Python frames one level of evaluation can cost at most (eval -> _eval -> eval_call -> builtin
# -> stack -> call_closure -> eval ...); the stack is sized from the limits so that the limits,
# not a RecursionError, are what stops a deep file.
FRAMES_PER_LEVEL = 10


def lower(module: S.Module, file: str, sources: dict, loader=None) -> ir.Graph:
    old = sys.getrecursionlimit()
    # capped: setrecursionlimit takes a C int, and NETDSL_MAX_EVAL_DEPTH may be anything
    sys.setrecursionlimit(min(old + FRAMES_PER_LEVEL * LIMITS.max_eval_depth + 1000, 1_000_000))
    try:
        ev = Evaluator(file, sources, loader)
        ev.run(module)
        return build_graph(ev, module)
    finally:
        sys.setrecursionlimit(old)


def build_graph(ev: Evaluator, module: S.Module) -> ir.Graph:
    """The graph of what the evaluator built: only layers that were applied, and only groups whose
    layers all were."""
    used = {id(n["layer"]) for n in ev.nodes}
    out = []
    for spec in ev.layers:
        if id(spec) not in used:
            continue  # built but never applied: no weights in the model
        attrs = {k: freeze(v) for k, v in spec.args.items()}
        out.append(ir.Layer(
            name=spec.name, kind=spec.kind, attrs=tuple(sorted(attrs.items())), span=spec.span,
            defaults=tuple(sorted((k, freeze(v)) for k, v in spec.defaults.items())),
            explicit=tuple(spec.explicit),
            group=None))
    # groups: composites whose layers were all applied, in creation order. A group is made after
    # its members, so one pass in creation order settles each from its members (not by walking
    # every leaf of every group, which is quadratic in the nesting).
    groups, layer_group = [], {}
    complete: dict = {}  # id(group) -> (every leaf applied, has a leaf)
    for g in ev.groups:
        all_used, any_leaf = True, False
        for m in g.members:
            if isinstance(m, LayerSpec):
                all_used, any_leaf = all_used and id(m) in used, True
            elif isinstance(m, GroupSpec):
                sub = complete.get(id(m))
                if sub is None:  # not made before its parent: settle it the slow way
                    leaves = list(iter_leaves(m))
                    sub = (all(id(leaf) in used for leaf in leaves), bool(leaves))
                all_used, any_leaf = all_used and sub[0], any_leaf or sub[1]
        complete[id(g)] = (all_used, any_leaf)
        if all_used and any_leaf:
            g.name = g.name or ev.fresh(snake(g.kind), numbered=True)
    for g in ev.groups:
        if g.name is None or not all(m.name for m in g.members):
            continue
        groups.append(ir.Group(g.name, g.kind, tuple(m.name for m in g.members), g.repeat, g.span,
                               g.parent.name if g.parent else None))
        for m in g.members:
            if isinstance(m, LayerSpec) and m.group is g:
                layer_group[m.name] = g.name
    out = [replace(l, group=layer_group.get(l.name)) for l in out]
    nodes = tuple(ir.Node(n["name"], n["layer"].name, tuple(n["inputs"]), None, n["span"], n["call"]) for n in ev.nodes)
    name = ev.model_name or default_model_name(Path(ev.file).stem)
    return ir.Graph(name=name, source=ev.file, inputs=tuple(ev.inputs), layers=tuple(out), nodes=nodes,
                    outputs=tuple(ev.outputs), groups=tuple(groups), span=module.span,
                    # every default filled in, even without a train block
                    training=ev.training or DEFAULT_TRAINING)
