"""The layer-kind registry: one module per IR kind holds what the front end and the passes know.

A kind module builds one LayerKind and hands it to register(), which refuses a second
registration of a kind or of a constructor name (onnx2torch's converter registry does the same).
The modules are imported, in a fixed order, by the table at the bottom of this file; a new kind
is one new module plus one line there. Readers: the evaluator (constructors, functions, default_options),
passes.resolve_defaults (attrs, floats), passes.infer_shapes (shape, inits, frozen).

Targets and the executor keep their own per-kind tables (netdsl/emit/*, netdsl/exec/*).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from collections.abc import Callable

REQUIRED = object()  # a signature default meaning "must be given"


@dataclass(frozen=True)
class Constructor:
    """A name that builds a layer of the kind, as in `Dense(10, activation=relu)`."""

    name: str
    positional: tuple  # argument names that may be given by position, in order
    signature: dict  # argument -> default (REQUIRED: must be given)
    # given arguments -> the checked arguments kept on the layer, or (argument, message) naming
    # the argument and the value received
    check: Callable[[dict], dict | tuple]
    aliases: tuple = ()
    options: tuple = ()  # default_options keys that reach this constructor
    # a wrapper (Recurrence) returns the layer it is given, of one of these kinds, with its own
    # arguments added; `wraps_what` says what it takes in a message
    wraps: tuple | None = None
    wraps_what: str = ""
    # other keyword names of an argument: seed 004 writes Convolution(rf_shape=...), CNTK 2.7 filter_shape=
    keyword_aliases: dict = field(default_factory=dict)
    # check(given, file) with the .net file the call is written in: an argument names a file beside it
    sourced: bool = False
    # an argument (or its default_options value) that, when False, makes the constructor the identity, with
    # no layer: CNTK's Stabilizer(enable_self_stabilization=False)
    disabled_by: str = ""


@dataclass(frozen=True)
class Function:
    """Names of a function on values that makes one node of the kind, as in `splice([a, b])`."""

    names: tuple
    # (name called, positional args, {keyword: value}, is_value) -> the input values, or (code, message)
    inputs: Callable


@dataclass(frozen=True)
class LayerKind:
    kind: str  # the IR kind
    # (resolved attrs, input types) -> (output type, {param short name: shape}, extra attrs);
    # raises shapes.ShapeError
    shape: Callable
    attrs: dict = field(default_factory=dict)  # IR attr -> (constructor argument, default)
    floats: tuple = ()  # IR attrs stored as floats whatever number was written
    # ir.Layer (attrs resolved) -> {param short name: initialiser}; params in shape()'s order
    inits: Callable | None = None
    # params that are state, not trained (running statistics); or fn(ir.Layer) -> them (a fixed Embedding)
    frozen: tuple | Callable = ()
    constructors: tuple = ()
    function: Function | None = None
    # the layer's arguments -> why it cannot be applied as built, or None (LSTM outside Recurrence)
    unapplicable: Callable[[dict], str | None] | None = None
    # (resolved attrs, the graph's training block or None) -> the attrs: for an argument whose IR
    # value depends on the training block (BatchNormalization's time constant in samples)
    complete: Callable | None = None


KINDS: dict[str, LayerKind] = {}
CONSTRUCTORS: dict[str, tuple[LayerKind, Constructor]] = {}  # every constructor name and alias
FUNCTIONS: dict[str, LayerKind] = {}  # every function name


def register(kind: LayerKind) -> LayerKind:
    if kind.kind in KINDS:
        raise ValueError(f"layer kind {kind.kind!r} is registered twice")
    names = [n for c in kind.constructors for n in (c.name, *c.aliases)] + list(kind.function.names if kind.function else ())
    taken = [n for n in names if n in CONSTRUCTORS or n in FUNCTIONS or names.count(n) > 1]
    if taken:
        raise ValueError(f"layer kind {kind.kind!r}: the name {taken[0]!r} is registered twice")
    KINDS[kind.kind] = kind
    for c in kind.constructors:
        for n in (c.name, *c.aliases):
            CONSTRUCTORS[n] = (kind, c)
    for n in kind.function.names if kind.function else ():
        FUNCTIONS[n] = kind
    return kind


def get(kind: str) -> LayerKind:
    return KINDS[kind]


def option_kinds() -> dict:
    """default_options key -> the layer kinds it reaches, in registration order."""
    out: dict = {}
    for kind in KINDS.values():
        for c in kind.constructors:
            for key in c.options:
                if kind.kind not in out.setdefault(key, ()):
                    out[key] += (kind.kind,)
    return out


def option_constructor(key: str) -> Constructor:
    """The first constructor a default_options key reaches: its checks are the option's checks."""
    for kind in KINDS.values():
        for c in kind.constructors:
            if key in c.options:
                return c
    raise KeyError(key)


# The kind modules, in registration order (default_options checks an option as its first kind does).
MODULES = (
    "dense",
    "convolution",
    "pooling",
    "dropout",
    "embedding",
    "lstm",
    "batch_normalization",
    "layer_normalization",
    "flatten",
    "activation",
    "rescale",
    "splice",
    "select",
    "cosine",
    "stabilizer",
    "elementwise",
    "gru",
    "delay",
    "global_pooling",
)
for _module in MODULES:
    importlib.import_module(f"{__name__}.{_module}")
