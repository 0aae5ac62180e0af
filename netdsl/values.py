"""The values a .net file evaluates to, and how a message names them.

Layer constructors make LayerSpec values (identity is what weight sharing means), composites
make GroupSpec values, applying a layer makes a Tensor naming a graph value. POISON is the value of
an expression that already produced a diagnostic, so evaluation goes on and reports every mistake.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import ir
from . import syntax as S
from .errors import Span
from .limits import LIMITS


class Poison:
    """The value of an expression that already produced a diagnostic."""


POISON = Poison()


@dataclass(eq=False)
class LayerSpec:
    """A layer definition under construction; identity is what sharing means."""

    kind: str
    args: dict
    span: Span
    defaults: dict
    name: str | None = None
    group: GroupSpec | None = None
    explicit: tuple = ()  # the arguments the user wrote out


@dataclass(eq=False)
class GroupSpec:
    kind: str  # Sequential or LayerStack
    members: list
    span: Span
    repeat: int = 0
    name: str | None = None
    parent: GroupSpec | None = None
    depth: int = 1  # composites nested inside, plus one


@dataclass(eq=False)
class Activation:
    fn: str  # usable as a layer (in Sequential) and as an argument value


@dataclass(eq=False)
class Tensor:
    name: str  # a node or input name in the graph being built


@dataclass(eq=False)
class Closure:
    param: str | None
    body: S.Node
    env: Env
    span: Span


@dataclass(eq=False)
class Block:
    name: str
    params: tuple
    body: S.Node
    span: Span


@dataclass(eq=False)
class Builtin:
    name: str
    fn: object


@dataclass(eq=False)
class InitSpec:
    text: str


@dataclass(eq=False)
class LayerList:
    """What a LayerStack constructor may return: several layers in order."""

    items: list


class Env:
    def __init__(self, parent: Env | None = None):
        self.vars: dict = {}
        self.parent = parent

    def lookup(self, name: str):
        env = self
        while env is not None:
            if name in env.vars:
                return env.vars[name]
            env = env.parent
        raise KeyError(name)

    def names(self) -> set:
        out, env = set(), self
        while env is not None:
            out |= set(env.vars)
            env = env.parent
        return out


@dataclass(eq=False)
class PendingInput:
    type: ir.TensorType
    span: Span
    rescale: tuple


def iter_leaves(g):
    for m in g.members:
        if isinstance(m, GroupSpec):
            yield from iter_leaves(m)
        elif isinstance(m, LayerSpec):
            yield m


def freeze(v):
    if isinstance(v, list):
        return tuple(freeze(x) for x in v)
    if isinstance(v, tuple):
        return tuple(freeze(x) for x in v)
    if isinstance(v, Activation):
        return v.fn
    if isinstance(v, InitSpec):
        return v.text
    return v


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_dim(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 < v <= LIMITS.max_dim


def is_layer(v) -> bool:
    return isinstance(v, (LayerSpec, GroupSpec, Activation))


def describe(v) -> str:
    if v is None:
        return "None"
    if isinstance(v, bool):
        return f"the boolean {v}"
    if isinstance(v, (int, float)):
        return f"the number {v!r}"
    if isinstance(v, str):
        return f"the string {shown(v)}"
    if isinstance(v, tuple):
        return f"a tuple of {len(v)}"
    if isinstance(v, list):
        return f"a list of {len(v)}"
    if isinstance(v, LayerSpec):
        return f"a {v.kind} layer"
    if isinstance(v, GroupSpec):
        return f"a {v.kind}"
    if isinstance(v, Activation):
        return f"the activation {v.fn}"
    if isinstance(v, Tensor):
        return f"the value '{v.name}'"
    if isinstance(v, PendingInput):
        return "an Input"
    if isinstance(v, (Closure,)):
        return "a lambda"
    if isinstance(v, Block):
        return f"the block '{v.name}'"
    if isinstance(v, Builtin):
        return f"'{v.name}'"
    if isinstance(v, InitSpec):
        return f"the initializer {v.text}"
    if isinstance(v, range):
        return "a range"
    return type(v).__name__


def describe_dim(v) -> str:
    """describe() for a size: spells out a short tuple, and says when a number is over NETDSL_MAX_DIM."""
    simple = isinstance(v, tuple) and 0 < len(v) <= 4 and all(
        is_number(d) or isinstance(d, bool) or d is None or isinstance(d, tuple) and len(d) <= 2 and all(is_number(x) for x in d)
        for d in v)
    text = f"the tuple {v!r}" if simple else describe(v)
    flat = [x for d in (v if simple else (v,)) for x in (d if isinstance(d, tuple) else (d,))]
    if any(isinstance(d, int) and not isinstance(d, bool) and d > LIMITS.max_dim for d in flat):
        text += f" (sizes are limited to {LIMITS.max_dim:,}; raise NETDSL_MAX_DIM to allow more)"
    return text


def shown(v) -> str:
    """A value for a message: strings quoted and escaped (control characters never reach the terminal) and clipped."""
    if isinstance(v, str):
        r = repr(v)
        return r if len(r) <= 60 else r[:40] + "..." + r[-10:]
    return describe(v)
