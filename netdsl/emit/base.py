"""The emitter machinery shared by every target.

A Target is a table from IR layer kind to a Python function that computes a
"view" (plain names, numbers and shapes) for its template; Jinja templates
under netdsl/templates/<target>/ only lay the code out. Every unsupported layer is
reported at once, and every emitted file must compile as Python.
"""
from __future__ import annotations

import functools
import gc
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import jinja2

from .. import ir
from ..errors import Diagnostic, NetdslError

_SAFE_PATH = re.compile(r"[A-Za-z0-9_./-]+")  # used with fullmatch: "$" would let a final newline through


class EmitBug(RuntimeError):
    """netdsl produced invalid code: a bug in netdsl, never the user's fault."""


@dataclass
class Target:
    name: str
    template: str  # path under templates/, e.g. "pytorch/module.py.j2"
    layers: dict  # IR kind -> fn(cx, layer) -> the layer's view
    context: Callable  # fn(cx, views: dict[layer name -> view]) -> dict for the template
    check: Callable | None = None  # fn(cx) -> list[Diagnostic]: what the table cannot say
    # fn(graph) -> the explicit context every function above receives (default: common.GraphIndex);
    # built once per emit, so no lookup is ever cached in a module global
    prepare: Callable | None = None
    extras: dict = field(default_factory=dict)

    def context_of(self, graph: ir.Graph):
        if self.prepare is not None:
            return self.prepare(graph)
        from .common import GraphIndex

        return GraphIndex.build(graph)

    def unsupported(self, graph: ir.Graph, cx=None) -> list:
        diags = [
            Diagnostic("E801", f"target '{self.name}' cannot express layer '{layer.name}' ({layer.kind})", layer.span or graph.span)
            for layer in graph.layers if layer.kind not in self.layers
        ]
        if self.check is not None:
            diags += self.check(cx if cx is not None else self.context_of(graph))
        from .training import TOKEN_LOOP_KEYS, layer_refusals, refusals, token_refusals

        honoured = self.extras.get("training")
        return (diags + refusals(self.name, graph.training, honoured) + layer_refusals(self.name, graph, honoured)
                + token_refusals(self.name, graph, self.extras.get("token_loop_refuses", TOKEN_LOOP_KEYS)))


def header_source(graph: ir.Graph) -> str:
    """The source path for the header comment: never absolute, never able to break out of the comment.

    However the path was spelled (models/m.net, ./models/m.net, /abs/.../models/m.net), the header
    is the same, so `compile --check` does not depend on it: the path relative to the project root
    (the nearest directory above the file with pyproject.toml or .git), else the file's name.
    """
    src = graph.source
    path = Path(src)
    try:
        real = path.resolve() if path.is_file() else None
    except (OSError, RuntimeError, ValueError):
        real = None
    if real is not None:
        root = next((d for d in real.parents if (d / "pyproject.toml").exists() or (d / ".git").exists()), None)
        src = real.relative_to(root).as_posix() if root is not None else real.name
    elif src.startswith("/"):
        src = path.name
    return src if _SAFE_PATH.fullmatch(src) else ascii(src)


@functools.lru_cache(maxsize=None)
def environment() -> jinja2.Environment:
    """The one Jinja environment: it keeps each template compiled (and recompiles one whose file
    changed), where a new environment per emit compiled every template again, 3/4 of a small
    model's emit time."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("netdsl", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["py"] = pyrepr
    env.filters["ident"] = ident
    return env


def pyrepr(value) -> str:
    """A Python literal for a value: strings only ever reach generated code through repr."""
    # the commonest first: a deep model's weight tables call this 100,000s of times (bench/compile.py)
    if isinstance(value, str):
        r = repr(value)
        # "..." like hand-written code, whenever that spells the same string as repr's '...'
        return f'"{value}"' if r == f"'{value}'" and '"' not in value else r
    if isinstance(value, float):
        return repr(float(value))
    if isinstance(value, (int, bool)) or value is None:
        return repr(value)
    if isinstance(value, tuple):
        inner = ", ".join([pyrepr(v) for v in value])
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join([pyrepr(v) for v in value]) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{pyrepr(k)}: {pyrepr(v)}" for k, v in value.items()) + "}"
    raise EmitBug(f"no Python literal for {type(value).__name__}")


def ident(name: str) -> str:
    if not (isinstance(name, str) and name.isidentifier() and name.isascii()):
        raise EmitBug(f"not an identifier: {name!r}")
    return name


def load_target(name: str) -> Target:
    import importlib

    from . import TARGETS

    module = importlib.import_module(TARGETS[name])
    return module.TARGET


def emit(graph: ir.Graph, target_name: str) -> str:
    """The generated module of `graph` for one target (checked to compile), or a NetdslError.

    The cyclic garbage collector is paused meanwhile: emitting allocates hundreds of thousands of
    short-lived, acyclic objects for a deep model, and the collector's repeated passes over them
    were a third of the time and made it grow faster than the layer count (bench/compile.py).
    """
    from .layout import memo_scope

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with memo_scope():
            return _emit(graph, target_name)
    finally:
        if was_enabled:
            gc.enable()


# Command-line flags every generated script accepts (templates/common/arguments.py.j2) but only some targets
# honour: flag -> the test that it was used. A target lists what it honours in extras["flags"]; the others
# stop with a usage error (exit 2) rather than ignore the flag.
RUNTIME_FLAGS = {
    "--device": 'args.device in ("cuda", "mps")',
    "--amp": "args.amp",
    "--compile": "args.compile",
    "--checkpoint": "args.checkpoint is not None",
    "--max-steps": "args.max_steps is not None",
}


def refused_flags(target: Target) -> list:
    honoured = target.extras.get("flags", ())
    return [(test, f"{flag}: the {target.name} script does not support it")
            for flag, test in RUNTIME_FLAGS.items() if flag not in honoured]


def _emit(graph: ir.Graph, target_name: str) -> str:
    target = load_target(target_name)
    cx = target.context_of(graph)
    diags = target.unsupported(graph, cx)
    if diags:
        raise NetdslError(diags)
    views = {layer.name: target.layers[layer.kind](cx, layer) for layer in graph.layers}
    ctx = target.context(cx, views)
    # what the shared data code feeds (docs/ir.md: the loss trains the first output), as literals
    first_out = graph.outputs[0]
    ctx.setdefault("data_input", graph.inputs[0].name)
    ctx.setdefault("data_output", first_out)
    ctx.setdefault("data_classes", graph.value_type(first_out).batch_shape()[-1])
    ctx.setdefault("data_vocab", graph.inputs[0].type.vocab)  # token datasets (common/data.py.j2)
    ctx.setdefault("data_tagging", graph.value_type(first_out).seq)
    ctx.setdefault("refused_flags", refused_flags(target))
    if any(layer.kind == "Embedding" and layer.attr("weights") for layer in graph.layers):
        # the constant of Embedding(weights=...) reaches the script only in a netdsl weights file
        ctx["refused_flags"] = ctx["refused_flags"] + [(
            "not args.init", "Embedding(weights=...) needs --init W.npz (netdsl run --save)")]
    from ..conformance_lengths import TARGETS_WITH_MASKS

    # token batches pass their lengths to the targets whose predict/train_step take them (docs/ir.md)
    ctx.setdefault("lengths_arg", target.name in TARGETS_WITH_MASKS)
    ctx.setdefault("header", f"# generated by netdsl from {header_source(graph)}, do not edit")
    code = environment().get_template(target.template).render(**ctx)
    code = "\n".join(line.rstrip() for line in code.splitlines()).strip("\n") + "\n"
    verify_python(code, target_name)
    return code


def verify_python(code: str, target_name: str) -> None:
    """Like black: re-parse our own output and fail loudly if it is not Python.

    compile() rather than ast.parse(): it checks a little more ('return' outside
    a function, duplicate arguments) and, building no Python AST objects, takes
    about half the time on very large modules (bench/compile.py).
    """
    try:
        compile(code, f"<netdsl {target_name}>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as e:
        where = f"line {e.lineno}: {e.msg}" if isinstance(e, SyntaxError) else str(e)
        raise EmitBug(f"netdsl generated invalid Python for target {target_name} "
                      f"({where}); this is a bug in netdsl") from e
