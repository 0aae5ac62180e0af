"""Syntax tree -> IR graph, by evaluating the file the way CNTK evaluates Python.

Layer constructors (Dense(...), Convolution(...)) make a new layer definition
each time they are evaluated; binding one to a name and applying it twice
shares its weights. LayerStack and For call their lambda once per index, so
each repetition gets its own definition: LayerStack expansion happens here.
Errors are collected, and evaluation goes on with a poisoned value, so one run
reports every independent mistake in a file.
"""
from __future__ import annotations

import keyword
from contextlib import contextmanager
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from . import ir
from . import syntax as S
from .errors import Diagnostic, NetdslError, Span, did_you_mean
from .limits import LIMITS

ACTIVATIONS = ("relu", "sigmoid", "tanh", "softmax")
INITIALIZERS = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "uniform", "normal", "zeros", "ones")
# Names the language refuses for its own reasons: none. A user's name that equals one the
# generated code uses for itself (an import, a helper, a local, a builtin it calls) is renamed by
# every target's name allocator instead (netdsl/emit/names.py; tests/traps/reserved_names.net).
RESERVED = frozenset()


# ---------------------------------------------------------------- values
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
    group: "GroupSpec | None" = None


@dataclass(eq=False)
class GroupSpec:
    kind: str  # Sequential or LayerStack
    members: list
    span: Span
    repeat: int = 0
    name: str | None = None
    parent: "GroupSpec | None" = None
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
    env: "Env"
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
    def __init__(self, parent: "Env | None" = None):
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


# ------------------------------------------------------------ signatures
# kind -> (positional names, {keyword: default}); a default of REQUIRED must be given.
REQUIRED = object()
SIGNATURES = {
    "Dense": (("shape",), {"shape": REQUIRED, "activation": None, "init": "glorot_uniform", "bias": True, "init_bias": 0}),
    "Convolution": (("filter_shape", "num_filters"), {
        "filter_shape": REQUIRED, "num_filters": REQUIRED, "activation": None, "init": "glorot_uniform",
        "pad": False, "strides": 1, "bias": True, "init_bias": 0}),
    "MaxPooling": (("filter_shape",), {"filter_shape": REQUIRED, "strides": 1, "pad": False}),
    "AveragePooling": (("filter_shape",), {"filter_shape": REQUIRED, "strides": 1, "pad": False}),
    "Dropout": (("dropout_rate",), {"dropout_rate": None, "keep_prob": None}),
    "Embedding": (("shape",), {"shape": REQUIRED, "init": "glorot_uniform"}),
    "LSTM": (("shape",), {"shape": REQUIRED, "init": "glorot_uniform", "use_peepholes": False}),
    "Recurrence": (("over",), {"over": REQUIRED, "go_backwards": False}),
    "BatchNormalization": ((), {"epsilon": 1e-5, "momentum": 0.1}),
    "LayerNormalization": ((), {"epsilon": 1e-5}),
    "Flatten": ((), {}),
    "Activation": (("activation",), {"activation": REQUIRED}),
}
ALIASES = {"Convolution2D": "Convolution", "MaxPooling2D": "MaxPooling", "AveragePooling2D": "AveragePooling"}
# default_options keys, and the layer kinds each one reaches
OPTION_KINDS = {
    "activation": ("Dense", "Convolution"),
    "init": ("Dense", "Convolution", "Embedding", "LSTM"),
    "bias": ("Dense", "Convolution"),
    "init_bias": ("Dense", "Convolution"),
    "pad": ("Convolution", "MaxPooling", "AveragePooling"),
}
TRAIN_KEYS = ("dataset", "loss", "optimizer", "batch_size", "epochs", "metrics")
LOSSES = {"cross_entropy_with_softmax": "cross_entropy_with_softmax", "squared_error": "squared_error",
          "mse": "squared_error", "cross_entropy": "cross_entropy_with_softmax"}
OPTIMIZERS = {
    "SGD": {"lr": 0.01, "momentum": 0.0, "nesterov": False},
    "Adam": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
    "Adadelta": {"lr": 1.0, "rho": 0.9, "eps": 1e-6},
}


class Lowerer:
    def __init__(self, file: str, sources: dict, loader=None):
        self.file = file
        self.sources = sources
        self.loader = loader
        self.diags: list[Diagnostic] = []
        self.layers: list[LayerSpec] = []
        self.groups: list[GroupSpec] = []
        self.inputs: list[ir.Input] = []
        self.nodes: list[dict] = []
        self.node_index: dict = {}
        self.applications: dict = {}  # id(spec) -> count
        self.outputs: list[str] = []
        self.training: ir.Training | None = None
        self.model_name: str | None = None
        self.scopes: list[dict] = [{}]
        self.block_stack: list[str] = []
        self.taken: set = set()  # layer and group names
        self.taken_nodes: set = set()  # value names (inputs and nodes)
        self.counters: dict = {}
        self.assigned_at: dict = {}  # name -> span of its first assignment, for "used before defined"
        self.current_call: str | None = None
        self.calls = 0
        self.imported: set = set()
        # evaluation is bounded three ways (netdsl/limits.py): nesting of eval() itself, nesting of
        # block and lambda calls, and the total number of eval() steps (exponential blow-ups)
        self.depth = 0
        self.call_depth = 0
        self.steps = 0
        self.genv = Env()
        for name, fn in self._builtins().items():
            self.genv.vars[name] = fn

    # ------------------------------------------------------------ plumbing
    def err(self, code: str, msg: str, span: Span, note: str | None = None):
        if len(self.diags) + 1 >= LIMITS.max_errors:
            # an error at every leaf of a big evaluation must not fill memory: stop, as compilers do
            note = f"{note + '; ' if note else ''}stopping after {LIMITS.max_errors} errors"
            self.diags.append(Diagnostic(code, msg, span, note))
            self.fatal()
        self.diags.append(Diagnostic(code, msg, span, note))
        return POISON

    def limit(self, code: str, msg: str, span: Span, note: str):
        """A resource limit: report it and stop at once (unwinding is the only safe thing left)."""
        self.diags.append(Diagnostic(code, msg, span, note))
        self.fatal()

    def fatal(self):
        raise NetdslError(self.diags, self.sources)

    def fresh(self, base: str, taken: set | None = None, numbered: bool = False) -> str:
        taken = self.taken if taken is None else taken
        # remember where each base's counter stopped, so naming n layers costs O(n), not O(n^2)
        key = (id(taken), base)
        k = self.counters.get(key, 1)
        name = f"{base}_{k}" if numbered or k > 1 else base
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        self.counters[key] = k
        taken.add(name)
        return name

    def check_name(self, name: str, span: Span, what: str) -> bool:
        why = invalid_name_reason(name)
        if why:
            self.err("E106", f"{what} name '{name}' {why}", span,
                     "names become identifiers in generated code; choose a plain ASCII name")
            return False
        return True

    # ------------------------------------------------------------ entry
    def lower_module(self, module: S.Module) -> ir.Graph:
        self._collect_names(module.body)
        self.exec_block(module.body, self.genv)
        if not self.outputs and not any(d.code != "E000" for d in self.diags):
            self.err("E301", "the model declares no output; add 'output NAME'", module.span)
        if not self.inputs and not self.diags:
            self.err("E302", "the model has no Input", module.span)
        if self.diags:
            self.fatal()
        return self.build_graph(module)

    def _collect_names(self, body):
        for st in body:
            if isinstance(st, S.Assign):
                self.taken.add(st.name)
                self.taken_nodes.add(st.name)
                self.assigned_at.setdefault(st.name, st.span)
            elif isinstance(st, S.With):
                self._collect_names(st.body)

    def exec_block(self, body, env: Env):
        for st in body:
            self.exec_stmt(st, env)

    def exec_stmt(self, st, env: Env):
        if isinstance(st, S.Assign):
            if not self.check_name(st.name, st.span, "variable"):
                self.eval(st.value, env)  # still report what is wrong inside
                env.vars[st.name] = POISON  # and say nothing more about this name
                return
            value = self.eval(st.value, env)
            self.bind(st.name, value, st, env)
        elif isinstance(st, S.Def):
            if self.check_name(st.name, st.span, "block"):
                for p in st.params:
                    self.check_name(p.name, p.span, "parameter")
                env.vars[st.name] = Block(st.name, st.params, st.body, st.span)
        elif isinstance(st, S.With):
            self.exec_with(st, env)
        elif isinstance(st, S.Output):
            for n in st.names:
                try:
                    v = env.lookup(n.id)
                except KeyError:
                    self.err("E101", f"name '{n.id}' is not defined{did_you_mean(n.id, env.names())}", n.span)
                    continue
                if isinstance(v, Tensor):
                    self.outputs.append(v.name)
                elif v is not POISON:
                    self.err("E304", f"output '{n.id}' is {describe(v)}, not a value computed from the inputs", n.span,
                             "apply the layer to an input first, e.g. z = model(x)")
        elif isinstance(st, S.Train):
            self.exec_train(st, env)
        elif isinstance(st, S.ModelStmt):
            if self.check_name(st.name, st.span, "model"):
                self.model_name = st.name
        elif isinstance(st, S.Import):
            self.exec_import(st, env)

    def bind(self, name: str, value, st, env: Env):
        if isinstance(value, PendingInput):
            self.bind_input(name, value, st, env)
            return
        if isinstance(value, LayerSpec) and value.name is None:
            value.name = name
            self.taken.add(name)
        elif isinstance(value, GroupSpec) and value.name is None:
            value.name = name
        elif isinstance(value, Tensor):
            node = self.node_index.get(value.name)
            if node is not None and node["generated"]:
                # the value a statement computes is known by the user's name
                del self.node_index[value.name]
                self.taken_nodes.discard(value.name)
                old = value.name
                node["name"], node["generated"] = name, False
                self.node_index[name] = node
                value = Tensor(name)
                self._rename_uses(old, name)
        env.vars[name] = value

    def bind_input(self, name: str, value: "PendingInput", st, env: Env):
        """Inputs become real when bound to a name: `image = Input((1, 28, 28))`."""
        if any(i.name == name for i in self.inputs):
            self.err("E107", f"input '{name}' is defined twice", st.span)
            return
        self.inputs.append(ir.Input(name, value.type, st.span))
        tensor = Tensor(name)
        if value.rescale != (1.0, 0.0, 1.0):
            scale, mean, std = value.rescale
            spec = self.new_layer("Rescale", {"scale": scale, "mean": mean, "std": std}, value.span)
            spec.name = self.fresh(f"{name}_scaled")
            tensor = self.add_node(spec, [name], value.span)
            # the raw input keeps the user's name; the scaled value is what later layers read
            self.node_index[tensor.name]["generated"] = False
        env.vars[name] = tensor

    def _rename_uses(self, old: str, new: str):
        # Only nodes made after the renamed one can read it; scan back to it, not the whole graph.
        for n in reversed(self.nodes):
            if n["name"] == new:
                break
            n["inputs"] = [new if i == old else i for i in n["inputs"]]

    def exec_with(self, st: S.With, env: Env):
        call = st.call
        if not (isinstance(call.func, S.Name) and call.func.id == "default_options"):
            self.err("E107", "'with' takes default_options(...)", call.span)
            return
        if call.args:
            self.err("E103", "default_options takes keyword arguments only, e.g. default_options(activation=relu)", call.args[0].span)
        scope = dict(self.scopes[-1])
        for kw in call.kwargs:
            if kw.name not in OPTION_KINDS:
                self.err("E102", f"default_options has no option '{kw.name}'{did_you_mean(kw.name, OPTION_KINDS)}", kw.span)
                continue
            value = self.eval(kw.value, env)
            if value is POISON:
                continue
            value, msg = check_option(kw.name, value)
            if msg:
                self.err("E103", f"default_options {msg}", kw.value.span)
                continue
            scope[kw.name] = (value, kw.span)
        self.scopes.append(scope)
        try:
            self.exec_block(st.body, env)
        finally:
            self.scopes.pop()

    def exec_import(self, st: S.Import, env: Env):
        if self.loader is None:
            self.err("E111", "import is not available here", st.span)
            return
        try:
            path, text = self.loader(st.path, self.file)
        except OSError as e:
            self.err("E111", f"cannot import {shown(st.path)}: {e.strerror or e}", st.span)
            return
        if path in self.imported:
            return
        self.imported.add(path)
        from .parser import parse
        self.sources[path] = text
        module = parse(text, path)
        for sub in module.body:
            if isinstance(sub, S.Def):
                self.exec_stmt(sub, env)
            else:
                self.err("E111", "an imported file may only define blocks with 'def'", sub.span)

    def exec_train(self, st: S.Train, env: Env):
        values, spans = {}, {}
        for e in st.entries:
            if e.key not in TRAIN_KEYS:
                self.err("E401", f"unknown training setting '{e.key}'{did_you_mean(e.key, TRAIN_KEYS)}", e.span)
                continue
            spans[e.key] = e.value.span
            if e.key in ("loss", "metrics", "optimizer") and isinstance(e.value, S.Name):
                values[e.key] = e.value.id
            elif e.key == "metrics" and isinstance(e.value, (S.List, S.Tuple)):
                values[e.key] = tuple(i.id if isinstance(i, S.Name) else self.eval(i, env) for i in e.value.items)
            elif e.key == "optimizer" and isinstance(e.value, S.Call) and isinstance(e.value.func, S.Name):
                values[e.key] = e.value
            else:
                values[e.key] = self.eval(e.value, env)
        t = ir.Training(span=st.span)
        kw = {}
        ds = values.get("dataset")
        if ds is not None and ds is not POISON:
            if not isinstance(ds, str):
                self.err("E103", f"dataset must be a string such as \"mnist\", got {describe(ds)}", spans["dataset"])
            else:
                kw["dataset"] = ds
        # loss, metrics and optimizer are usually names, but any expression can stand there: check
        # the type before hashing or printing the value (a list is unhashable, a deep tuple unprintable)
        loss = values.get("loss")
        if loss is not None and loss is not POISON:
            if not isinstance(loss, str):
                self.err("E402", f"loss must be a name such as cross_entropy_with_softmax, got {describe(loss)}",
                         spans["loss"], "netdsl knows cross_entropy_with_softmax and squared_error (mse)")
            elif loss not in LOSSES:
                self.err("E402", f"unknown loss {shown(loss)}{did_you_mean(loss, LOSSES)}", spans["loss"],
                         "netdsl knows cross_entropy_with_softmax and squared_error (mse)")
            else:
                kw["loss"] = LOSSES[loss]
        for key in ("batch_size", "epochs"):
            v = values.get(key)
            if v is not None and v is not POISON:
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    self.err("E103", f"{key} must be a positive integer, got {describe(v)}", spans[key])
                else:
                    kw[key] = v
        metrics = values.get("metrics")
        if metrics is not None:
            metrics = metrics if isinstance(metrics, tuple) else (metrics,)
            for m in metrics:
                if m is POISON or isinstance(m, str) and m == "accuracy":
                    continue
                if isinstance(m, str):
                    self.err("E403", f"unknown metric {shown(m)}; netdsl knows 'accuracy'", spans["metrics"])
                else:
                    self.err("E403", f"metrics takes names such as accuracy, got {describe(m)}", spans["metrics"])
            kw["metrics"] = tuple(m for m in metrics if m == "accuracy")
        opt = values.get("optimizer")
        if opt is not None and opt is not POISON:
            if isinstance(opt, S.Call):  # Adam(lr=0.001), kept unevaluated above
                name, call = opt.func.id, opt
            elif isinstance(opt, str):
                name, call = opt, None
            else:
                name, call = None, None
                self.err("E403", f"optimizer must be {', '.join(OPTIMIZERS)}, e.g. Adam(lr=0.001), got {describe(opt)}",
                         spans["optimizer"])
            if name is None:
                pass
            elif name not in OPTIMIZERS:
                self.err("E403", f"unknown optimizer {shown(name)}{did_you_mean(name, OPTIMIZERS)}", spans["optimizer"])
            else:
                settings = dict(OPTIMIZERS[name])
                if call is not None:
                    if call.args:
                        self.err("E103", f"{name} takes keyword arguments, e.g. {name}(lr=0.01)", call.args[0].span)
                    for a in call.kwargs:
                        if a.name not in settings:
                            self.err("E102", f"{name} has no argument '{a.name}'{did_you_mean(a.name, settings)}", a.span)
                            continue
                        v = self.eval(a.value, env)
                        want = type(settings[a.name])
                        if v is POISON:
                            continue
                        if want is bool and not isinstance(v, bool) or want is float and (
                                not is_number(v) or not math.isfinite(v) or v < 0):
                            self.err("E103", f"{name} argument '{a.name}' must be a {'boolean' if want is bool else 'non-negative number'}, got {describe(v)}", a.value.span)
                            continue
                        settings[a.name] = float(v) if want is float else v
                kw["optimizer"] = name
                kw["optimizer_attrs"] = tuple(sorted(settings.items()))
        if self.training is not None:
            self.err("E404", "a second training block; a model has one", st.span)
        kw.setdefault("optimizer_attrs", tuple(sorted(OPTIMIZERS[kw.get("optimizer", "SGD")].items())))
        self.training = ir.Training(span=st.span, **kw)

    # ------------------------------------------------------------ expressions
    def eval(self, e, env: Env):
        self.steps += 1
        if self.steps > LIMITS.max_eval_steps:
            self.limit("E501", f"evaluating the model takes more than {LIMITS.max_eval_steps:,} steps", e.span,
                       "a block or lambda that calls another twice at every level grows exponentially; "
                       "raise NETDSL_MAX_EVAL_STEPS to allow more")
        if self.depth >= LIMITS.max_eval_depth:
            self.limit("E005", f"evaluation nested more than {LIMITS.max_eval_depth} deep", e.span,
                       "deep expressions inside nested block and lambda calls; raise NETDSL_MAX_EVAL_DEPTH to allow more")
        self.depth += 1
        try:
            return self._eval(e, env)
        finally:
            self.depth -= 1

    def _eval(self, e, env: Env):
        if isinstance(e, S.Number):
            return e.value
        if isinstance(e, S.String):
            return e.value
        if isinstance(e, S.Const):
            return e.value
        if isinstance(e, S.Name):
            try:
                return env.lookup(e.id)
            except KeyError:
                later = self.assigned_at.get(e.id)
                if later is not None and (later.line, later.col) > (e.span.line, e.span.col):
                    return self.err("E101", f"name '{e.id}' is used before it is defined on line {later.line}", e.span)
                return self.err("E101", f"name '{e.id}' is not defined{did_you_mean(e.id, env.names())}", e.span)
        if isinstance(e, S.Tuple):
            return tuple(self.eval(i, env) for i in e.items)
        if isinstance(e, S.List):
            return list(self.eval(i, env) for i in e.items)
        if isinstance(e, S.UnaryOp):
            v = self.eval(e.operand, env)
            if v is POISON:
                return v
            if not is_number(v):
                return self.err("E103", f"unary '{e.op}' needs a number, got {describe(v)}", e.span)
            return -v if e.op == "-" else v
        if isinstance(e, S.BinOp):
            return self.eval_binop(e, env)
        if isinstance(e, S.Index):
            return self.eval_index(e, env)
        if isinstance(e, S.Lambda):
            return Closure(e.param, e.body, env, e.span)
        if isinstance(e, S.Call):
            return self.eval_call(e, env)
        return self.err("E001", "unsupported expression", e.span)

    def eval_binop(self, e: S.BinOp, env: Env):
        a, b = self.eval(e.left, env), self.eval(e.right, env)
        if a is POISON or b is POISON:
            return POISON
        if e.op == ">>":
            if is_layer(a) and is_layer(b):
                members = self._layers_of([a, b], e.span, "'>>'")
                return self.adopt(self.make_group("Sequential", members, e.span))
            return self.err("E103", f"'>>' composes layers, got {describe(a)} and {describe(b)}", e.span)
        if not (is_number(a) and is_number(b)):
            return self.err("E103", f"'{e.op}' needs numbers, got {describe(a)} and {describe(b)}", e.span)
        try:
            if e.op == "+":
                r = a + b
            elif e.op == "-":
                r = a - b
            elif e.op == "*":
                r = a * b
            elif e.op == "/":
                r = a / b
            elif e.op == "//":
                r = a // b
            elif e.op == "%":
                r = a % b
            else:
                if abs(b) > 64 or (isinstance(a, int) and abs(a) > 2 ** 20 and b > 4):
                    return self.err("E501", f"'{a} ** {b}' is too large", e.span)
                r = a ** b
        except ZeroDivisionError:
            return self.err("E103", "division by zero", e.span)
        except (OverflowError, ValueError) as ex:
            return self.err("E103", f"arithmetic error: {ex}", e.span)
        if isinstance(r, complex) or (isinstance(r, float) and not math.isfinite(r)) or (isinstance(r, int) and abs(r) > 2 ** 62):
            return self.err("E501", "number out of range", e.span)
        return r

    def eval_index(self, e: S.Index, env: Env):
        target, idx = self.eval(e.target, env), self.eval(e.index, env)
        if target is POISON or idx is POISON:
            return POISON
        if not isinstance(target, (list, tuple)):
            return self.err("E103", f"only lists and tuples can be indexed, got {describe(target)}", e.target.span)
        if not isinstance(idx, int) or isinstance(idx, bool):
            return self.err("E103", f"an index must be an integer, got {describe(idx)}", e.index.span)
        if not -len(target) <= idx < len(target):
            return self.err("E103", f"index {idx} is out of range for a list of {len(target)}", e.index.span)
        return target[idx]

    def eval_call(self, e: S.Call, env: Env):
        func = self.eval(e.func, env)
        if func is POISON:
            return POISON
        args = [self.eval(a, env) for a in e.args]
        kwargs = {}
        for kw in e.kwargs:
            if kw.name in kwargs:
                self.err("E105", f"argument '{kw.name}' given twice", kw.span)
            kwargs[kw.name] = (self.eval(kw.value, env), kw.span)
        if any(a is POISON for a in args) or any(v is POISON for v, _ in kwargs.values()):
            return POISON
        if isinstance(func, Builtin):
            return func.fn(e, args, kwargs)
        if isinstance(func, Block):
            return self.call_block(func, e, args, kwargs)
        if isinstance(func, Closure):
            return self.call_closure(func, args, e.span)
        if is_layer(func):
            if kwargs:
                return self.err("E103", "applying a layer takes inputs only, no keyword arguments", e.span)
            return self.apply(func, args, e)
        return self.err("E108", f"{describe(func)} is not callable", e.func.span)

    def enter_call(self, span: Span, what: str):
        if self.call_depth >= LIMITS.max_call_depth:
            self.limit("E110", f"{what} calls nested more than {LIMITS.max_call_depth} deep", span,
                       "a lambda that calls itself (directly or through another) never ends; "
                       "raise NETDSL_MAX_CALL_DEPTH if the nesting is real")
        self.call_depth += 1

    def call_block(self, block: Block, e: S.Call, args, kwargs):
        if block.name in self.block_stack:
            chain = " -> ".join(self.block_stack + [block.name])
            return self.err("E110", f"block '{block.name}' calls itself ({chain})", e.span,
                            "blocks are expanded when used, so recursion would never end")
        self.enter_call(e.span, "block")
        # the block is on the stack while its defaults are evaluated too: def a(v=a()) = v recurses
        self.block_stack.append(block.name)
        try:
            return self._call_block(block, e, args, kwargs)
        finally:
            self.block_stack.pop()
            self.call_depth -= 1

    def _call_block(self, block: Block, e: S.Call, args, kwargs):
        names = [p.name for p in block.params]
        if len(args) > len(names):
            return self.err("E109", f"block '{block.name}' takes {len(names)} arguments, got {len(args)}", e.span)
        local = Env(self.genv)
        for p, a in zip(block.params, args):
            local.vars[p.name] = a
        for k, (v, span) in kwargs.items():
            if k not in names:
                return self.err("E102", f"block '{block.name}' has no parameter '{k}'{did_you_mean(k, names)}", span)
            if k in local.vars:
                return self.err("E105", f"parameter '{k}' given twice", span)
            local.vars[k] = v
        for p in block.params:
            if p.name not in local.vars:
                if p.default is None:
                    return self.err("E104", f"block '{block.name}' is missing argument '{p.name}'", e.span)
                local.vars[p.name] = self.eval(p.default, self.genv)
        return self.eval(block.body, local)

    def call_closure(self, fn: Closure, args, span: Span):
        local = Env(fn.env)
        if fn.param is not None:
            if len(args) != 1:
                return self.err("E109", f"this lambda takes 1 argument, got {len(args)}", span)
            local.vars[fn.param] = args[0]
        elif args:
            return self.err("E109", f"this lambda takes no arguments, got {len(args)}", span)
        self.enter_call(span, "lambda")
        try:
            return self.eval(fn.body, local)
        finally:
            self.call_depth -= 1

    # ------------------------------------------------------------ layers
    def new_layer(self, kind: str, args: dict, span: Span, e: S.Call | None = None) -> LayerSpec:
        applicable = {k: v for k, (v, _) in self.scopes[-1].items() if kind in OPTION_KINDS[k]}
        spec = LayerSpec(kind, args, span, applicable)
        self.layers.append(spec)
        if len(self.layers) > LIMITS.max_layers:
            self.err("E501", f"more than {LIMITS.max_layers} layers", span,
                     "raise NETDSL_MAX_LAYERS to allow more")
            self.fatal()
        return spec

    def make_group(self, kind: str, members: list, span: Span, repeat: int = 0) -> GroupSpec:
        g = GroupSpec(kind, members, span, repeat)
        g.depth = 1 + max((m.depth for m in members if isinstance(m, GroupSpec)), default=0)
        if g.depth > LIMITS.max_group_depth:
            # every consumer (applying the group, emitters writing nested modules) walks this nesting
            self.limit("E005", f"layers composed more than {LIMITS.max_group_depth} deep", span,
                       "each '>>' or Sequential around a composite nests it one level deeper; "
                       "raise NETDSL_MAX_GROUP_DEPTH to allow more")
        self.groups.append(g)
        return g

    def construct(self, kind: str, e: S.Call, args, kwargs):
        positional, sig = SIGNATURES[kind]
        if len(args) > len(positional):
            n = len(positional)
            return self.err("E109", f"{kind} takes at most {n} positional argument{'s' if n != 1 else ''}, got {len(args)}; "
                            f"name the others, e.g. activation=relu", e.span)
        given = dict(zip(positional, args))
        spans = {p: a.span for p, a in zip(positional, e.args)}
        for k, (v, span) in kwargs.items():
            if k not in sig:
                return self.err("E102", f"{kind} has no argument '{k}'{did_you_mean(k, sig)}", span)
            if k in given:
                return self.err("E105", f"{kind} argument '{k}' given twice", span)
            given[k], spans[k] = v, span
        for k, d in sig.items():
            if d is REQUIRED and k not in given:
                return self.err("E104", f"{kind} is missing its argument '{k}'", e.span)
        checked = check_layer_args(kind, given)
        if isinstance(checked, tuple):
            key, msg = checked
            return self.err("E103", msg, spans.get(key, e.span))
        if kind == "Recurrence":
            inner = given["over"]
            if not (isinstance(inner, LayerSpec) and inner.kind == "LSTM"):
                return self.err("E103", f"Recurrence takes an LSTM(...), got {describe(inner)}", spans.get("over", e.span))
            # The recurrence and its cell are one definition; its weights live on the LSTM.
            inner.args["go_backwards"] = checked.get("go_backwards", False)
            inner.span = e.span
            return inner
        spec = self.new_layer(kind, checked, e.span, e)
        spec.explicit = tuple(sorted(given))
        return spec

    def apply(self, layer, args, e: S.Call):
        if not args:
            return self.err("E109", "a layer must be applied to an input", e.span)
        for a in args:
            if not isinstance(a, Tensor):
                return self.err("E103", f"a layer is applied to values computed from inputs, got {describe(a)}", e.span)
        with self.outer_call():
            return self._apply(layer, args, e)

    @contextmanager
    def outer_call(self):
        """Nodes made inside one top-level application share its call id (emitters group them)."""
        if self.current_call is not None:
            yield
            return
        self.calls += 1
        self.current_call = f"call_{self.calls}"
        try:
            yield
        finally:
            self.current_call = None

    def _apply(self, layer, args, e: S.Call):
        if isinstance(layer, GroupSpec):
            x = args
            for m in layer.members:
                r = self._apply(m, x, e)
                if r is POISON:
                    return r
                x = [r]
            return x[0]
        if isinstance(layer, Activation):
            spec = self.new_layer("Activation", {"activation": layer.fn}, e.span)
            layer = spec
        if isinstance(layer, LayerSpec):
            if layer.kind == "LSTM" and "go_backwards" not in layer.args:
                return self.err("E103", "LSTM must be wrapped in Recurrence(...) to run over a sequence", layer.span)
            if len(args) != 1:
                return self.err("E109", f"{layer.kind} takes 1 input, got {len(args)}", e.span)
            return self.add_node(layer, [a.name for a in args], e.span)
        return self.err("E108", f"{describe(layer)} cannot be applied", e.span)

    def add_node(self, spec: LayerSpec, inputs: list, span: Span) -> Tensor:
        if len(self.nodes) >= LIMITS.max_nodes:
            # applying a composite to itself line after line doubles the nodes each time
            self.limit("E501", f"more than {LIMITS.max_nodes:,} layer applications", span,
                       "raise NETDSL_MAX_NODES to allow more")
        if spec.name is None:
            spec.name = self.fresh(snake(spec.kind), numbered=True)
        count = self.applications.get(id(spec), 0) + 1
        self.applications[id(spec)] = count
        name = self.fresh(spec.name if count == 1 else f"{spec.name}_{count}", self.taken_nodes)
        node = {"name": name, "layer": spec, "inputs": list(inputs), "span": span, "generated": True, "call": self.current_call}
        self.nodes.append(node)
        self.node_index[name] = node
        return Tensor(name)

    # ------------------------------------------------------------ builtins
    def _builtins(self) -> dict:
        b = {}
        for kind in SIGNATURES:
            b[kind] = Builtin(kind, (lambda k: lambda e, a, kw: self.construct(k, e, a, kw))(kind))
        for alias, kind in ALIASES.items():
            b[alias] = b[kind]
        for fn in ACTIVATIONS:
            b[fn] = Activation(fn)
        for init in INITIALIZERS:
            b[init] = Builtin(init, (lambda n: lambda e, a, kw: self.make_init(n, e, a, kw))(init))
        b.update({
            "Sequential": Builtin("Sequential", self.b_sequential),
            "LayerStack": Builtin("LayerStack", self.b_layerstack),
            "For": Builtin("For", self.b_for),
            "range": Builtin("range", self.b_range),
            "Input": Builtin("Input", self.b_input),
            "SequenceInput": Builtin("SequenceInput", self.b_input),
            "splice": Builtin("splice", self.b_splice),
            "select_last": Builtin("select_last", self.b_select),
            "select_first": Builtin("select_first", self.b_select),
            "cosine_distance": Builtin("cosine_distance", self.b_cosine),
            "cos_distance": Builtin("cos_distance", self.b_cosine),
        })
        return b

    def make_init(self, name, e, args, kwargs):
        if name in ("uniform", "normal"):
            scale = args[0] if args else kwargs.get("scale", (None,))[0]
            if not is_number(scale) or scale <= 0:
                return self.err("E103", f"{name}(scale) needs a positive number, got {describe(scale)}", e.span)
            return InitSpec(f"{name}({float(scale)!r})")
        if args or kwargs:
            return self.err("E109", f"{name}() takes no arguments", e.span)
        return InitSpec(name)

    def _layers_of(self, items, span: Span, what: str, depth: int = 0):
        if depth > LIMITS.max_nesting:  # lists nest without bound through statements: l = [l]
            return self.err("E005", f"{what} got lists nested more than {LIMITS.max_nesting} deep", span)
        out = []
        for it in items:
            if it is POISON:
                return POISON
            if isinstance(it, LayerList):
                out.extend(it.items)
            elif isinstance(it, list):
                sub = self._layers_of(it, span, what, depth + 1)
                if sub is POISON:
                    return POISON
                out.extend(sub)
            elif isinstance(it, Activation):
                out.append(self.new_layer("Activation", {"activation": it}, span))
            elif is_layer(it):
                out.append(it)
            else:
                return self.err("E103", f"{what} takes layers, got {describe(it)}", span)
        return out

    def b_sequential(self, e, args, kwargs):
        if kwargs:
            return self.err("E102", "Sequential takes a list of layers and no keyword arguments", e.span)
        items = args[0] if len(args) == 1 and isinstance(args[0], list) else args
        members = self._layers_of(items, e.span, "Sequential")
        if members is POISON:
            return POISON
        if not members:
            return self.err("E103", "Sequential needs at least one layer", e.span)
        return self.adopt(self.make_group("Sequential", members, e.span))

    def adopt(self, group: GroupSpec) -> GroupSpec:
        for m in group.members:
            if isinstance(m, (LayerSpec, GroupSpec)) and getattr(m, "group", None) is None and m is not group:
                if isinstance(m, LayerSpec):
                    m.group = group
                else:
                    m.parent = group
        return group

    def b_range(self, e, args, kwargs):
        if len(args) != 1 or kwargs or not isinstance(args[0], int) or isinstance(args[0], bool):
            return self.err("E103", "range(n) takes one integer", e.span)
        return range(args[0])

    def b_for(self, e, args, kwargs):
        if len(args) != 2 or not isinstance(args[0], range):
            return self.err("E103", "For takes range(n) and a lambda, e.g. For(range(2), lambda i: ...)", e.span)
        return self.stack(len(args[0]), args[1], e)

    def b_layerstack(self, e, args, kwargs):
        if len(args) != 2 or kwargs:
            return self.err("E109", "LayerStack takes a count and a lambda, e.g. LayerStack(3, lambda i: Dense(128))", e.span)
        n = args[0]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            return self.err("E103", f"LayerStack count must be a positive integer, got {describe(n)}", e.args[0].span)
        return self.stack(n, args[1], e)

    def stack(self, n: int, ctor, e: S.Call):
        if n > LIMITS.max_stack_repeat or n + len(self.layers) > LIMITS.max_layers:
            self.err("E501", f"LayerStack of {n} repetitions is over the limit of {min(LIMITS.max_stack_repeat, LIMITS.max_layers)} layers",
                     e.span, "raise NETDSL_MAX_LAYERS / NETDSL_MAX_STACK_REPEAT to allow more")
            self.fatal()
        if not isinstance(ctor, (Closure, Block)):
            return self.err("E103", f"LayerStack's constructor must be a lambda, got {describe(ctor)}", e.span)
        members = []
        for i in range(n):
            if isinstance(ctor, Closure):
                made = self.call_closure(ctor, [i] if ctor.param is not None else [], e.span)
            else:
                made = self.call_block(ctor, e, [i] if ctor.params else [], {})
            if made is POISON:
                return POISON
            layers = self._layers_of([made], e.span, "LayerStack's lambda")
            if layers is POISON:
                return POISON
            if not layers:  # lambda i: [] (Sequential([]) is refused the same way)
                return self.err("E103", f"LayerStack's lambda made no layer for i = {i}", e.span)
            # a lambda that returns one shared layer would not make distinct layers
            members.append(self.adopt(self.make_group("Sequential", layers, e.span)) if len(layers) > 1 else layers[0])
        return self.adopt(self.make_group("LayerStack", members, e.span, repeat=n))

    def b_input(self, e, args, kwargs):
        is_seq = e.func.id == "SequenceInput"  # type: ignore[union-attr]
        allowed = {"shape", "scale", "mean", "std"} | ({"vocab", "length"} if is_seq else set())
        opts = {}
        for k, (v, span) in kwargs.items():
            if k not in allowed:
                return self.err("E102", f"{e.func.id} has no argument '{k}'{did_you_mean(k, allowed)}", span)
            opts[k] = v
        if len(args) > 1:
            return self.err("E109", f"{e.func.id} takes one shape, e.g. Input((1, 28, 28))", e.span)
        if args:
            opts["shape"] = args[0]
        vocab = opts.get("vocab")
        shape = opts.get("shape", () if vocab is not None else None)
        if shape is None:
            return self.err("E104", f"{e.func.id} needs a shape" + (" or vocab=N" if is_seq else ""), e.span)
        if isinstance(shape, int) and not isinstance(shape, bool):
            shape = (shape,)
        if not isinstance(shape, tuple) or not all(is_dim(d) for d in shape) or (not shape and vocab is None):
            return self.err("E103", f"input shape must be a positive integer or a tuple of them, got {describe_dim(shape)}", e.span)
        if vocab is not None:
            if not is_dim(vocab):
                return self.err("E103", f"vocab must be a positive integer, got {describe_dim(vocab)}", e.span)
            if shape != ():
                return self.err("E103", "a token-id sequence takes vocab=N and no shape", e.span)
        # the IR's types (docs/ir.md): vectors (F,), images (C, H, W), sequences of vectors; no layer,
        # executor or target defines anything for other ranks
        elif is_seq and len(shape) != 1:
            return self.err("E103", f"SequenceInput takes the feature size F of each step (or vocab=N), "
                            f"got {describe_dim(shape)}", e.span)
        elif not is_seq and len(shape) not in (1, 3):
            return self.err("E103", f"Input takes a vector size F or an image shape (C, H, W), "
                            f"got {describe_dim(shape)}", e.span)
        length = opts.get("length")
        if length is not None and not is_dim(length):
            return self.err("E103", f"length must be a positive integer, got {describe_dim(length)}", e.span)
        scale, mean, std = opts.get("scale", 1.0), opts.get("mean", 0.0), opts.get("std", 1.0)
        for k, v in (("scale", scale), ("mean", mean), ("std", std)):
            if not is_number(v) or not math.isfinite(v) or (k == "std" and v <= 0):
                return self.err("E103", f"{k} must be a {'positive ' if k == 'std' else ''}number, got {describe(v)}", e.span)
        t = ir.TensorType(tuple(shape), seq=is_seq, length=length, vocab=vocab)
        pending = PendingInput(t, e.span, (float(scale), float(mean), float(std)))
        return pending

    def b_splice(self, e, args, kwargs):
        if kwargs:
            return self.err("E102", "splice takes the values to join and no keyword arguments", e.span)
        items = args[0] if len(args) == 1 and isinstance(args[0], list) else args
        if len(items) < 2 or not all(isinstance(i, Tensor) for i in items):
            return self.err("E103", "splice joins two or more values, e.g. splice([a, b])", e.span)
        return self.op_node("Splice", [i.name for i in items], e)

    def b_select(self, e, args, kwargs):
        kind = "SelectLast" if e.func.id == "select_last" else "SelectFirst"  # type: ignore[union-attr]
        if len(args) != 1 or kwargs or not isinstance(args[0], Tensor):
            return self.err("E103", f"{e.func.id} takes one sequence value", e.span)
        return self.op_node(kind, [args[0].name], e)

    def b_cosine(self, e, args, kwargs):
        if len(args) != 2 or kwargs or not all(isinstance(a, Tensor) for a in args):
            return self.err("E103", f"{e.func.id} takes two values, e.g. cosine_distance(a, b)", e.span)
        return self.op_node("CosineDistance", [a.name for a in args], e)

    def op_node(self, kind: str, inputs: list, e: S.Call) -> Tensor:
        spec = self.new_layer(kind, {}, e.span)
        with self.outer_call():
            return self.add_node(spec, inputs, e.span)

    # ------------------------------------------------------------ graph
    def build_graph(self, module: S.Module) -> ir.Graph:
        used = {id(n["layer"]) for n in self.nodes}
        layers = []
        for spec in self.layers:
            if id(spec) not in used:
                continue  # built but never applied: no weights in the model
            attrs = {k: freeze(v) for k, v in spec.args.items()}
            layers.append(ir.Layer(
                name=spec.name, kind=spec.kind, attrs=tuple(sorted(attrs.items())), span=spec.span,
                defaults=tuple(sorted((k, freeze(v)) for k, v in spec.defaults.items())),
                explicit=tuple(getattr(spec, "explicit", ())),
                group=None))
        # groups: composites whose layers were all applied, in creation order. A group is made after
        # its members, so one pass in creation order settles each from its members (not by walking
        # every leaf of every group, which is quadratic in the nesting).
        groups, layer_group = [], {}
        complete: dict = {}  # id(group) -> (every leaf applied, has a leaf)
        for g in self.groups:
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
                g.name = g.name or self.fresh(snake(g.kind), numbered=True)
        for g in self.groups:
            if g.name is None or not all(m.name for m in g.members):
                continue
            groups.append(ir.Group(g.name, g.kind, tuple(m.name for m in g.members), g.repeat, g.span,
                                   g.parent.name if g.parent else None))
            for m in g.members:
                if isinstance(m, LayerSpec) and m.group is g:
                    layer_group[m.name] = g.name
        layers = [replace(l, group=layer_group.get(l.name)) for l in layers]
        nodes = tuple(ir.Node(n["name"], n["layer"].name, tuple(n["inputs"]), None, n["span"], n["call"]) for n in self.nodes)
        name = self.model_name or default_model_name(Path(self.file).stem)
        return ir.Graph(name=name, source=self.file, inputs=tuple(self.inputs), layers=tuple(layers), nodes=nodes,
                        outputs=tuple(self.outputs), groups=tuple(groups), span=module.span,
                        # every default filled in, even without a train block
                        training=self.training or ir.Training(optimizer_attrs=tuple(sorted(OPTIMIZERS["SGD"].items()))))


@dataclass(eq=False)
class PendingInput:
    type: ir.TensorType
    span: Span
    rescale: tuple


# ------------------------------------------------------------ helpers
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


def snake(kind: str) -> str:
    out = []
    for i, c in enumerate(kind):
        if c.isupper() and i and not kind[i - 1].isupper():
            out.append("_")
        out.append(c.lower())
    return "".join(out)


def camel(stem: str) -> str:
    parts = [p for p in "".join(c if c.isalnum() and c.isascii() else "_" for c in stem).split("_") if p]
    name = "".join(p[:1].upper() + p[1:] for p in parts) or "Model"
    return name if name[0].isalpha() else "Model" + name


def default_model_name(stem: str) -> str:
    """The model's name when the file has no `model` statement: the file stem in CamelCase, made valid
    (model.net would give Model, which generated code uses; a 200-character stem is too long)."""
    name = camel(stem)[:58]
    if invalid_name_reason(name):
        name += "Model"
    return name if not invalid_name_reason(name) else "NetdslModel"


def invalid_name_reason(name: str) -> str | None:
    if not name.isascii():
        return "has non-ASCII characters"
    if not name.isidentifier():
        return "is not an identifier"
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return "is a Python keyword"
    if name.startswith("__") or name.endswith("__"):
        return "is a dunder name"
    if name.startswith("_"):
        return "starts with an underscore, which generated code keeps for itself"
    if name in RESERVED:
        return "is reserved for the generated code's own variables"
    if len(name) > 64:
        return "is longer than 64 characters"
    return None


# ---------------------------------------------------- argument checking
def normalize_pad(p):
    """True/False (CNTK's same/valid), or explicit ((top, bottom), (left, right)); None if malformed."""
    def nat(d):
        return isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= LIMITS.max_dim
    if isinstance(p, bool):
        return p
    if nat(p):
        return ((p, p), (p, p))
    if isinstance(p, tuple) and len(p) == 2 and all(nat(d) for d in p):
        return ((p[0], p[0]), (p[1], p[1]))
    if isinstance(p, tuple) and len(p) == 2 and all(isinstance(q, tuple) and len(q) == 2 and all(nat(d) for d in q) for q in p):
        return p
    return None


def check_option(key: str, value):
    """Check one default_options value; returns (normalized value, None) or (None, message)."""
    probe = {"Dense": {"shape": 1}, "Convolution": {"filter_shape": 1, "num_filters": 1}}
    kind = OPTION_KINDS[key][0]
    res = check_layer_args(kind, {**probe.get(kind, {"filter_shape": 1}), key: value})
    if isinstance(res, tuple):
        return None, res[1].replace(f"{kind} ", "", 1)
    return res[key], None


def check_layer_args(kind: str, a: dict):
    """Validate constructor arguments (Keras-style: name the argument and the value)."""
    out = dict(a)

    def pair(key, v):
        if isinstance(v, int) and not isinstance(v, bool):
            v = (v, v)
        if not (isinstance(v, tuple) and len(v) == 2 and all(is_dim(d) for d in v)):
            return None
        return v

    if kind in ("Dense", "Embedding", "LSTM"):
        if not is_dim(a["shape"]):
            return "shape", f"{kind} shape must be a positive integer, got {describe_dim(a['shape'])}"
    if kind in ("Convolution", "MaxPooling", "AveragePooling"):
        fs = pair("filter_shape", a["filter_shape"])
        if fs is None:
            return "filter_shape", f"{kind} filter_shape must be a positive integer or a pair, got {describe_dim(a['filter_shape'])}"
        out["filter_shape"] = fs
        if "strides" in a:
            st = pair("strides", a["strides"])
            if st is None:
                return "strides", f"{kind} strides must be a positive integer or a pair, got {describe_dim(a['strides'])}"
            out["strides"] = st
        if "pad" in a:
            p = normalize_pad(a["pad"])
            if p is None:
                return "pad", f"{kind} pad must be True, False, an integer, (ph, pw) or ((top, bottom), (left, right)), got {describe_dim(a['pad'])}"
            out["pad"] = p
    if kind == "Convolution" and not is_dim(a["num_filters"]):
        return "num_filters", f"Convolution num_filters must be a positive integer, got {describe_dim(a['num_filters'])}"
    if "activation" in a:
        act = a["activation"]
        if act is not None and not isinstance(act, Activation):
            return "activation", f"activation must be one of {', '.join(ACTIVATIONS)} or None, got {describe(act)}"
    if "bias" in a and not isinstance(a["bias"], bool):
        return "bias", f"bias must be True or False, got {describe(a['bias'])}"
    if "init" in a:
        init = a["init"]
        if isinstance(init, Builtin) and init.name in INITIALIZERS:
            out["init"] = InitSpec(init.name)
        elif not isinstance(init, InitSpec):
            return "init", f"init must be an initializer such as glorot_uniform(), got {describe(init)}"
    if "init_bias" in a and not is_number(a["init_bias"]):
        return "init_bias", f"init_bias must be a number, got {describe(a['init_bias'])}"
    if kind == "Dropout":
        rate, keep = a.get("dropout_rate"), a.get("keep_prob")
        if (rate is None) == (keep is None):
            return "dropout_rate", "Dropout takes exactly one of dropout_rate (the drop probability) or keep_prob"
        value = rate if rate is not None else keep
        if not is_number(value) or not 0 <= value < 1:
            return ("dropout_rate" if rate is not None else "keep_prob"), \
                f"Dropout {'dropout_rate' if rate is not None else 'keep_prob'} must be in [0, 1), got {describe(value)}"
        # one meaning in the IR: the DROP probability (TF1's keep_prob is the other trap)
        out = {"rate": float(rate if rate is not None else 1 - keep)}
    if kind == "LSTM" and a.get("use_peepholes"):
        return "use_peepholes", "LSTM use_peepholes=True is not supported by every target; netdsl does not offer it"
    if kind == "LSTM":
        out.pop("use_peepholes", None)
    if kind == "Recurrence" and not isinstance(a.get("go_backwards", False), bool):
        return "go_backwards", f"go_backwards must be True or False, got {describe(a['go_backwards'])}"
    if kind == "BatchNormalization":
        eps, mom = a.get("epsilon", 1e-5), a.get("momentum", 0.1)
        if not is_number(eps) or not 0 < eps < 1:
            return "epsilon", f"BatchNormalization epsilon must be in (0, 1), got {describe(eps)}"
        if not is_number(mom) or not 0 <= mom <= 1:
            return "momentum", f"BatchNormalization momentum (the weight of the new batch statistic) must be in [0, 1], got {describe(mom)}"
    if kind == "LayerNormalization":
        eps = a.get("epsilon", 1e-5)
        if not is_number(eps) or not 0 < eps < 1:
            return "epsilon", f"LayerNormalization epsilon must be in (0, 1), got {describe(eps)}"
    if kind == "Activation" and not isinstance(a["activation"], Activation):
        return "activation", f"Activation takes one of {', '.join(ACTIVATIONS)}, got {describe(a['activation'])}"
    return out


# Python frames one level of evaluation can cost at most (eval -> _eval -> eval_call -> builtin
# -> stack -> call_closure -> eval ...); the stack is sized from the limits so that the limits,
# not a RecursionError, are what stops a deep file.
FRAMES_PER_LEVEL = 10


def lower(module: S.Module, file: str, sources: dict, loader=None) -> ir.Graph:
    old = sys.getrecursionlimit()
    # capped: setrecursionlimit takes a C int, and NETDSL_MAX_EVAL_DEPTH may be anything
    sys.setrecursionlimit(min(old + FRAMES_PER_LEVEL * LIMITS.max_eval_depth + 1000, 1_000_000))
    try:
        return Lowerer(file, sources, loader).lower_module(module)
    finally:
        sys.setrecursionlimit(old)
