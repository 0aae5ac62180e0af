"""The builtin names of the language: layer constructors (from netdsl/layers/), activations,
initialisers, Sequential, LayerStack, For, range, Input, SequenceInput, and the functions on
values (splice, select_last, cosine_distance, ...).

Each builtin is a function (evaluator, call, positional values, {keyword: (value, span)}) bound
to one evaluator; it reports mistakes through the evaluator and returns POISON after one.
"""
from __future__ import annotations

import math
from functools import partial

from . import ir, layers
from . import syntax as S
from .errors import did_you_mean
from .layers.common import ACTIVATIONS, INITIALIZERS, MAX_INIT_SCALE, spell_activation
from .limits import LIMITS
from .values import (
    POISON, Activation, Block, Builtin, Closure, GroupSpec, InitSpec, LayerList, LayerSpec, PendingInput, Tensor,
    describe, describe_dim, is_dim, is_layer, is_number,
)



STRUCTURE = ("Sequential", "LayerStack", "For", "range")
INPUTS = ("Input", "SequenceInput")


def builtin_names() -> frozenset:
    """The names builtins() binds, without an evaluator (writers of .net files must avoid them)."""
    return frozenset((*layers.CONSTRUCTORS, *ACTIVATIONS, *INITIALIZERS, *layers.FUNCTIONS, *STRUCTURE, *INPUTS))


def builtins(ev) -> dict:
    """Every builtin name, bound to the evaluator ev."""
    b = {}
    for name in layers.CONSTRUCTORS:
        b[name] = Builtin(name, partial(ev.construct, name))
    for fn in ACTIVATIONS:
        b[fn] = Activation(spell_activation(fn))
    for init in INITIALIZERS:
        b[init] = Builtin(init, partial(make_init, ev, init))
    for name, kind in layers.FUNCTIONS.items():
        b[name] = Builtin(name, partial(value_function, ev, kind, name))
    for name, fn in zip(STRUCTURE, (sequential, layerstack, for_, range_)):
        b[name] = Builtin(name, partial(fn, ev))
    for name in INPUTS:
        b[name] = Builtin(name, partial(make_input, ev, name))
    return b


def make_init(ev, name, e, args, kwargs):
    if name in ("uniform", "normal"):
        scale = args[0] if args else kwargs.get("scale", (None,))[0]
        if not is_number(scale) or scale <= 0:
            return ev.err("E103", f"{name}(scale) needs a positive number, got {describe(scale)}", e.span)
        if scale > MAX_INIT_SCALE:
            return ev.err("E103", f"{name}(scale) needs a positive number up to {MAX_INIT_SCALE:g}, got {describe(scale)}",
                          e.span, "larger weights overflow to infinity in 32-bit floats")
        return InitSpec(f"{name}({float(scale)!r})")
    if args or kwargs:
        return ev.err("E109", f"{name}() takes no arguments", e.span)
    return InitSpec(name)


def value_function(ev, kind: layers.LayerKind, name: str, e, args, kwargs):
    """splice(...), select_last(...), cosine_distance(...): one node of `kind` over the values given."""
    res = kind.function.inputs(name, args, kwargs, lambda v: isinstance(v, Tensor))
    if isinstance(res, tuple):
        code, msg = res
        return ev.err(code, msg, e.span)
    return ev.op_node(kind.kind, [v.name for v in res], e)


def sequential(ev, e, args, kwargs):
    if kwargs:
        return ev.err("E102", "Sequential takes a list of layers and no keyword arguments", e.span)
    items = args[0] if len(args) == 1 and isinstance(args[0], list) else args
    members = layers_of(ev, items, e.span, "Sequential")
    if members is POISON:
        return POISON
    if not members:
        return ev.err("E103", "Sequential needs at least one layer", e.span)
    return adopt(ev.make_group("Sequential", members, e.span))


def range_(ev, e, args, kwargs):
    if len(args) != 1 or kwargs or not isinstance(args[0], int) or isinstance(args[0], bool):
        return ev.err("E103", "range(n) takes one integer", e.span)
    return range(args[0])


def for_(ev, e, args, kwargs):
    if len(args) != 2 or not isinstance(args[0], range):
        return ev.err("E103", "For takes range(n) and a lambda, e.g. For(range(2), lambda i: ...)", e.span)
    return stack(ev, len(args[0]), args[1], e)


def layerstack(ev, e, args, kwargs):
    if len(args) != 2 or kwargs:
        return ev.err("E109", "LayerStack takes a count and a lambda, e.g. LayerStack(3, lambda i: Dense(128))", e.span)
    n = args[0]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        return ev.err("E103", f"LayerStack count must be a positive integer, got {describe(n)}", e.args[0].span)
    return stack(ev, n, args[1], e)


def stack(ev, n: int, ctor, e: S.Call):
    """LayerStack and For call their lambda once per index, so each repetition gets its own layers."""
    if n > LIMITS.max_stack_repeat or n + len(ev.layers) > LIMITS.max_layers:
        ev.err("E501", f"LayerStack of {n} repetitions is over the limit of {min(LIMITS.max_stack_repeat, LIMITS.max_layers)} layers",
               e.span, "raise NETDSL_MAX_LAYERS / NETDSL_MAX_STACK_REPEAT to allow more")
        ev.fatal()
    if not isinstance(ctor, (Closure, Block)):
        return ev.err("E103", f"LayerStack's constructor must be a lambda, got {describe(ctor)}", e.span)
    members = []
    for i in range(n):
        if isinstance(ctor, Closure):
            made = ev.call_closure(ctor, [i] if ctor.param is not None else [], e.span)
        else:
            made = ev.call_block(ctor, e, [i] if ctor.params else [], {})
        if made is POISON:
            return POISON
        made = layers_of(ev, [made], e.span, "LayerStack's lambda")
        if made is POISON:
            return POISON
        if not made:  # lambda i: [] (Sequential([]) is refused the same way)
            return ev.err("E103", f"LayerStack's lambda made no layer for i = {i}", e.span)
        # a lambda that returns one shared layer would not make distinct layers
        members.append(adopt(ev.make_group("Sequential", made, e.span)) if len(made) > 1 else made[0])
    return adopt(ev.make_group("LayerStack", members, e.span, repeat=n))


def make_input(ev, name, e, args, kwargs):
    """Input(shape) and SequenceInput(...): an input becomes real when bound to a name."""
    is_seq = name == "SequenceInput"
    allowed = {"shape", "scale", "mean", "std", "is_sparse"} | ({"vocab", "length"} if is_seq else set())
    opts = {}
    for k, (v, span) in kwargs.items():
        if k not in allowed:
            return ev.err("E102", f"{name} has no argument '{k}'{did_you_mean(k, allowed)}", span)
        opts[k] = v
    if len(args) > 1:
        return ev.err("E109", f"{name} takes one shape, e.g. Input((1, 28, 28))", e.span)
    if args:
        opts["shape"] = args[0]
    vocab = opts.get("vocab")
    shape = opts.get("shape", () if vocab is not None else None)
    if shape is None:
        return ev.err("E104", f"{name} needs a shape" + (" or vocab=N" if is_seq else ""), e.span)
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, tuple) or not all(is_dim(d) for d in shape) or (not shape and vocab is None):
        return ev.err("E103", f"input shape must be a positive integer or a tuple of them, got {describe_dim(shape)}", e.span)
    if vocab is not None:
        if not is_dim(vocab):
            return ev.err("E103", f"vocab must be a positive integer, got {describe_dim(vocab)}", e.span)
        if shape != ():
            return ev.err("E103", "a token-id sequence takes vocab=N and no shape", e.span)
    # the IR's types (docs/ir.md): vectors (F,), images (C, H, W), sequences of vectors; no layer,
    # executor or target defines anything for other ranks
    elif is_seq and len(shape) != 1:
        return ev.err("E103", f"SequenceInput takes the feature size F of each step (or vocab=N), "
                      f"got {describe_dim(shape)}", e.span)
    elif not is_seq and len(shape) not in (1, 2, 3):
        return ev.err("E103", f"Input takes a vector size F, a rank-2 shape (H, W) or an image shape (C, H, W), "
                      f"got {describe_dim(shape)}", e.span)
    # CNTK's storage hint for one-hot vectors: the numbers are the dense vector's (docs/language.md)
    if not isinstance(opts.get("is_sparse", False), bool):
        return ev.err("E103", f"is_sparse must be True or False, got {describe(opts['is_sparse'])}", kwargs["is_sparse"][1])
    if opts.get("is_sparse") and (vocab is not None or len(shape) != 1):
        return ev.err("E103", "is_sparse=True marks a one-hot vector input, e.g. Input(V, is_sparse=True)",
                      kwargs["is_sparse"][1])
    length = opts.get("length")
    if length is not None and not is_dim(length):
        return ev.err("E103", f"length must be a positive integer, got {describe_dim(length)}", e.span)
    scale, mean, std = opts.get("scale", 1.0), opts.get("mean", 0.0), opts.get("std", 1.0)
    for k, v in (("scale", scale), ("mean", mean), ("std", std)):
        if not is_number(v) or not math.isfinite(v) or (k == "std" and v <= 0):
            return ev.err("E103", f"{k} must be a {'positive ' if k == 'std' else ''}number, got {describe(v)}", e.span)
    t = ir.TensorType(tuple(shape), seq=is_seq, length=length, vocab=vocab)
    return PendingInput(t, e.span, (float(scale), float(mean), float(std)))


def layers_of(ev, items, span, what: str, depth: int = 0):
    """The layers of a composite's items, lists flattened; an activation stands for Activation(fn)."""
    if depth > LIMITS.max_nesting:  # lists nest without bound through statements: l = [l]
        return ev.err("E005", f"{what} got lists nested more than {LIMITS.max_nesting} deep", span)
    out = []
    for it in items:
        if it is POISON:
            return POISON
        if isinstance(it, LayerList):
            out.extend(it.items)
        elif isinstance(it, list):
            sub = layers_of(ev, it, span, what, depth + 1)
            if sub is POISON:
                return POISON
            out.extend(sub)
        elif isinstance(it, Activation):
            out.append(ev.new_layer("Activation", {"activation": it}, span))
        elif is_layer(it):
            out.append(it)
        else:
            return ev.err("E103", f"{what} takes layers, got {describe(it)}", span)
    return out


def adopt(group: GroupSpec) -> GroupSpec:
    """Make group the innermost composite of its layers that have none yet; a member composite
    takes group as its parent."""
    for m in group.members:
        if m is group:
            continue
        if isinstance(m, LayerSpec):
            if m.group is None:
                m.group = group
        elif isinstance(m, GroupSpec):
            m.parent = group
    return group
