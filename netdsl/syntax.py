"""The syntax tree: what the parser produces, before anything is evaluated.

Every node carries the Span it was parsed from, so that any later stage can
point a diagnostic at the user's text.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import Span


@dataclass(frozen=True)
class Node:
    span: Span


# ---------------------------------------------------------------- expressions
@dataclass(frozen=True)
class Number(Node):
    value: int | float


@dataclass(frozen=True)
class String(Node):
    value: str


@dataclass(frozen=True)
class Const(Node):
    value: bool | None


@dataclass(frozen=True)
class Name(Node):
    id: str


@dataclass(frozen=True)
class Tuple(Node):
    items: tuple


@dataclass(frozen=True)
class List(Node):
    items: tuple


@dataclass(frozen=True)
class BinOp(Node):
    op: str  # one of + - * / // % ** >>
    left: Node
    right: Node


@dataclass(frozen=True)
class UnaryOp(Node):
    op: str
    operand: Node


@dataclass(frozen=True)
class Index(Node):
    target: Node
    index: Node


@dataclass(frozen=True)
class Kwarg(Node):
    name: str
    value: Node


@dataclass(frozen=True)
class Call(Node):
    func: Node
    args: tuple  # positional expressions
    kwargs: tuple  # Kwarg nodes, in source order


@dataclass(frozen=True)
class Lambda(Node):
    param: str | None
    body: Node


# ----------------------------------------------------------------- statements
@dataclass(frozen=True)
class Param(Node):
    name: str
    default: Node | None


@dataclass(frozen=True)
class ModelStmt(Node):
    name: str


@dataclass(frozen=True)
class Import(Node):
    path: str


@dataclass(frozen=True)
class Def(Node):
    name: str
    params: tuple
    body: Node


@dataclass(frozen=True)
class Assign(Node):
    name: str
    value: Node


@dataclass(frozen=True)
class With(Node):
    call: Call
    body: tuple


@dataclass(frozen=True)
class Output(Node):
    names: tuple  # Name nodes


@dataclass(frozen=True)
class TrainEntry(Node):
    key: str
    value: Node


@dataclass(frozen=True)
class Train(Node):
    entries: tuple


@dataclass(frozen=True)
class Module(Node):
    body: tuple
