"""The IR: typed, frozen dataclasses. The contract every target converts from.

A Graph holds layer definitions (Layer, which own the parameters) and their
applications (Node, which form a DAG over named values). Canonical layout
(docs/ir.md): NCHW images, (batch, time, features) sequences, OIHW conv
kernels, Dense (out, in), LSTM gates i, f, g, o with one bias per gate.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from typing import Any

from .errors import Span

Attrs = tuple  # tuple[tuple[str, Any], ...], sorted by key: hashable and JSON-stable


@dataclass(frozen=True)
class TensorType:
    """The shape of one sample: no batch axis, and no time axis for sequences."""

    shape: tuple
    seq: bool = False
    length: int | None = None  # fixed sequence length, when known
    vocab: int | None = None  # token ids in [0, vocab); then shape == ()

    def describe(self) -> str:
        inner = "(" + ", ".join(str(d) for d in self.shape) + ("," if len(self.shape) == 1 else "") + ")"
        if self.vocab is not None:
            inner = f"ids<{self.vocab}>"
        if self.seq:
            return f"seq[{'?' if self.length is None else self.length}] of {inner}"
        return inner

    def batch_shape(self, batch: Any = None) -> tuple:
        """The full array shape, batch first; None stands for unknown sizes."""
        return (batch,) + ((self.length,) if self.seq else ()) + tuple(self.shape)


@dataclass(frozen=True)
class Param:
    name: str  # canonical: "<layer>.<param>", the key in weight files
    shape: tuple
    init: str = "glorot_uniform"
    trainable: bool = True

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class Layer:
    name: str
    kind: str
    attrs: Attrs = ()
    params: tuple = ()  # Param, in a fixed per-kind order
    span: Span | None = None
    defaults: Attrs = ()  # the default_options scope in force where it was built
    explicit: tuple = ()  # attribute names the user wrote out
    group: str | None = None  # innermost Group (Sequential/LayerStack) it was built in

    def attr(self, key: str, default: Any = None) -> Any:
        for k, v in self.attrs:
            if k == key:
                return v
        return default

    def param(self, short: str) -> Param:
        for p in self.params:
            if p.name == f"{self.name}.{short}":
                return p
        raise KeyError(short)

    def with_attrs(self, **updates) -> "Layer":
        merged = dict(self.attrs)
        merged.update(updates)
        return replace(self, attrs=tuple(sorted(merged.items())))


@dataclass(frozen=True)
class Input:
    name: str
    type: TensorType
    span: Span | None = None


@dataclass(frozen=True)
class Node:
    """One application of a layer to named values."""

    name: str
    layer: str
    inputs: tuple
    type: TensorType | None = None
    span: Span | None = None
    call: str | None = None  # the outermost composite application this node belongs to


@dataclass(frozen=True)
class Group:
    """A composite as the user wrote it: Sequential or LayerStack (repeat = count)."""

    name: str
    kind: str
    members: tuple  # layer or group names, in order
    repeat: int = 0
    span: Span | None = None
    parent: str | None = None


@dataclass(frozen=True)
class Training:
    dataset: str | None = None
    loss: str = "cross_entropy_with_softmax"
    optimizer: str = "SGD"
    optimizer_attrs: Attrs = ()  # lr, momentum, nesterov, beta1, beta2, rho, eps
    batch_size: int = 64
    epochs: int = 1
    metrics: tuple = ("accuracy",)
    span: Span | None = None
    # docs/language.md, "The train block", gives each setting's exact formula; the defaults change nothing.
    loss_attrs: Attrs = ()  # reduction ("mean" | "sum")
    schedule: str | None = None  # "step" | "piecewise" | "exponential" | "cosine"
    schedule_attrs: Attrs = ()  # its arguments and unit ("epoch" | "step")
    lr_unit: str = "minibatch"  # "sample": the gradient is the SUM over the minibatch, as CNTK's per-sample rates
    weight_decay: float = 0.0
    weight_decay_mode: str = "l2"  # "l2": (wd/2)*sum(w**2) in the loss; "decoupled": p -= lr*wd*p (AdamW)
    clip_norm: float | None = None  # the global gradient norm, as torch.nn.utils.clip_grad_norm_
    clip_value: float | None = None  # each gradient element into [-v, v]
    seed: int | None = None
    validation_split: float = 0.0
    log_every: int | None = None  # steps between progress lines (None: once per epoch)
    early_stopping: int | None = None  # patience in epochs, on the validation loss
    spans: Attrs = ()  # setting -> the span of its value, for located refusals (E802)

    def opt(self, key: str, default: Any = None) -> Any:
        return dict(self.optimizer_attrs).get(key, default)

    def span_of(self, key: str) -> Span | None:
        return dict(self.spans).get(key, self.span)


@dataclass(frozen=True)
class Graph:
    name: str
    source: str
    inputs: tuple = ()
    layers: tuple = ()
    nodes: tuple = ()
    outputs: tuple = ()
    groups: tuple = ()
    training: Training | None = None
    span: Span | None = None

    # lookups are rebuilt on demand; graphs are small next to their arrays
    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def params(self) -> list:
        return [p for layer in self.layers for p in layer.params]

    def value_type(self, name: str) -> TensorType:
        for i in self.inputs:
            if i.name == name:
                return i.type
        for n in self.nodes:
            if n.name == name:
                return n.type
        raise KeyError(name)


# -------------------------------------------------------------------- JSON
_CLASSES = {c.__name__: c for c in (TensorType, Param, Layer, Input, Node, Group, Training, Graph, Span)}


def _encode(obj: Any) -> Any:
    if isinstance(obj, Span):
        return obj.to_json()
    if hasattr(obj, "__dataclass_fields__"):
        out = {"_type": type(obj).__name__}
        for f in fields(obj):
            out[f.name] = _encode(getattr(obj, f.name))
        return out
    if isinstance(obj, tuple):
        return [_encode(x) for x in obj]
    return obj


def _decode(obj: Any, field_name: str = "") -> Any:
    if isinstance(obj, dict):
        cls = _CLASSES[obj["_type"]]
        kwargs = {}
        for f in fields(cls):
            if f.name in obj:
                value = obj[f.name]
                if f.name == "span" and value is not None:
                    kwargs[f.name] = Span.from_json(value)
                elif f.name == "spans":
                    kwargs[f.name] = tuple((k, Span.from_json(v)) for k, v in value)
                else:
                    kwargs[f.name] = _decode(value, f.name)
        return cls(**kwargs)
    if isinstance(obj, list):
        return tuple(_decode(x) for x in obj)
    return obj


def to_json(graph: Graph) -> str:
    return json.dumps(_encode(graph), indent=1, sort_keys=True, allow_nan=False) + "\n"


def from_json(text: str) -> Graph:
    return from_json_value(json.loads(text))


def from_json_value(value: Any) -> Graph:
    """A Graph from an already-parsed JSON value; ValueError if it is not one."""
    graph = _decode(value)
    if not isinstance(graph, Graph):
        raise ValueError("not a netdsl IR document")
    return graph
