"""The evaluator: statements and expressions of a .net file, evaluated the way CNTK evaluates Python.

Layer constructors (Dense(...), Convolution(...)) make a new layer definition each time they are
evaluated; binding one to a name and applying it twice shares its weights. Errors are collected,
and evaluation goes on with a poisoned value, so one run reports every independent mistake.
What the evaluator builds (layers, groups, nodes, inputs, outputs, training) is assembled into an
ir.Graph by lower.build_graph; the builtin names (Sequential, Input, ...) are in library.py, the
train block in train_block.py, and what each layer kind accepts in netdsl/layers/.
"""
from __future__ import annotations

from contextlib import contextmanager
import math

from . import ir, layers, library
from . import syntax as S
from .errors import Diagnostic, NetdslError, Span, did_you_mean
from .layers.common import activation_arguments
from .layers.elementwise import BY_SYMBOL
from .limits import LIMITS
from .names import invalid_name_reason, snake
from .train_block import lower_train
from .values import (
    POISON, Activation, Block, Builtin, Closure, Env, GroupSpec, LayerSpec, PendingInput, Tensor,
    describe, is_layer, is_number, shown,
)


class Evaluator:
    """One file's evaluation: the environment, the layers, groups and nodes built, and the diagnostics."""

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
        self.option_kinds = layers.option_kinds()  # default_options key -> the kinds it reaches
        self.genv = Env()
        self.genv.vars.update(library.builtins(self))

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
    def run(self, module: S.Module) -> None:
        """Evaluate the file; raises NetdslError with every diagnostic if there is any."""
        self._collect_names(module.body)
        self.exec_block(module.body, self.genv)
        if not self.outputs and not self.diags:
            self.err("E301", "the model declares no output; add 'output NAME'", module.span)
        if not self.inputs and not self.diags:
            self.err("E302", "the model has no Input", module.span)
        if self.diags:
            self.fatal()

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
            training = lower_train(self, st, env)
            if self.training is not None:
                self.err("E404", "a second training block; a model has one", st.span)
            self.training = training
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

    def bind_input(self, name: str, value: PendingInput, st, env: Env):
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
            self.err("E112", "'with' takes default_options(...)", call.span)
            return
        if call.args:
            self.err("E103", "default_options takes keyword arguments only, e.g. default_options(activation=relu)", call.args[0].span)
        scope = dict(self.scopes[-1])
        for kw in call.kwargs:
            if kw.name not in self.option_kinds:
                self.err("E102", f"default_options has no option '{kw.name}'{did_you_mean(kw.name, self.option_kinds)}",
                         kw.span)
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
                members = library.layers_of(self, [a, b], e.span, "'>>'")
                return library.adopt(self.make_group("Sequential", members, e.span))
            return self.err("E103", f"'>>' composes layers, got {describe(a)} and {describe(b)}", e.span)
        if isinstance(a, Tensor) and isinstance(b, Tensor) and e.op in BY_SYMBOL:
            # an elementwise node; its shape rule checks that the two types agree (E201 at e.span)
            spec = self.new_layer("Elementwise", {"op": BY_SYMBOL[e.op]}, e.span)
            spec.name = self.fresh(BY_SYMBOL[e.op], numbered=True)
            with self.outer_call():
                return self.add_node(spec, [a.name, b.name], e.span)
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            return self.err("E103", f"'{e.op}' is not defined on values; '+', '-' and '*' are", e.span)
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            takes = "two values or two numbers" if e.op in BY_SYMBOL else "numbers"
            return self.err("E103", f"'{e.op}' takes {takes}, got {describe(a)} and {describe(b)}",
                            e.span, "a value and a number do not combine; scale an input with Input(..., scale=)")
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
        if isinstance(func, Activation) and (kwargs or args and not any(isinstance(a, Tensor) for a in args)):
            # leaky_relu(0.2), gelu(approximate=True): the activation with arguments, not applied
            res = activation_arguments(func.fn, args, {k: v for k, (v, _) in kwargs.items()})
            if isinstance(res, tuple):
                return self.err(res[0], res[1], e.span)
            return Activation(res)
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
        applicable = {k: v for k, (v, _) in self.scopes[-1].items() if kind in self.option_kinds[k]}
        spec = LayerSpec(kind, args, span, applicable)
        self.layers.append(spec)
        if len(self.layers) > LIMITS.max_layers:
            self.err("E501", f"more than {LIMITS.max_layers} layers", span,
                     "raise NETDSL_MAX_LAYERS to allow more")
            self.fatal()
        return spec

    def make_group(self, kind: str, members: list, span: Span, repeat: int = 0) -> GroupSpec:
        # an empty composite (a disabled Stabilizer) is the identity: nothing to hold
        members = [m for m in members if not (isinstance(m, GroupSpec) and not m.members)]
        g = GroupSpec(kind, members, span, repeat)
        g.depth = 1 + max((m.depth for m in members if isinstance(m, GroupSpec)), default=0)
        if g.depth > LIMITS.max_group_depth:
            # every consumer (applying the group, emitters writing nested modules) walks this nesting
            self.limit("E005", f"layers composed more than {LIMITS.max_group_depth} deep", span,
                       "each '>>' or Sequential around a composite nests it one level deeper; "
                       "raise NETDSL_MAX_GROUP_DEPTH to allow more")
        self.groups.append(g)
        return g

    def construct(self, name: str, e: S.Call, args, kwargs):
        """A constructor call: match the arguments to the signature, check them, make the layer."""
        kind, ctor = layers.CONSTRUCTORS[name]
        name, positional, sig = ctor.name, ctor.positional, ctor.signature
        if len(args) > len(positional):
            n = len(positional)
            return self.err("E109", f"{name} takes at most {n} positional argument{'s' if n != 1 else ''}, got {len(args)}; "
                            f"name the others, e.g. activation=relu", e.span)
        given = dict(zip(positional, args))
        spans = {p: a.span for p, a in zip(positional, e.args)}
        for k, (v, span) in kwargs.items():
            k = ctor.keyword_aliases.get(k, k)
            if k not in sig:
                return self.err("E102", f"{name} has no argument '{k}'{did_you_mean(k, sig)}", span)
            if k in given:
                return self.err("E105", f"{name} argument '{k}' given twice", span)
            given[k], spans[k] = v, span
        for k, d in sig.items():
            if d is layers.REQUIRED and k not in given:
                return self.err("E104", f"{name} is missing its argument '{k}'", e.span)
        scope = self.scopes[-1]
        if ctor.wraps is not None:
            # a wrapper's own defaults come from the scope it is called in (Recurrence(go_backwards=...)): explicit,
            # then default_options, then the built-in default, and checked together (not located at the scope)
            given = {**{k: v for k, (v, _) in scope.items() if k in ctor.options}, **given}
        checked = ctor.check(given, e.span.file) if ctor.sourced else ctor.check(given)
        if isinstance(checked, tuple):
            key, msg = checked
            return self.err("E103", msg, spans.get(key, e.span))
        flag = ctor.disabled_by
        if flag and given.get(flag, scope.get(flag, (sig[flag],))[0]) is False:
            # CNTK's Stabilizer(enable_self_stabilization=False) is `identity`: no layer, no parameter
            return self.make_group("Sequential", [], e.span)
        if ctor.wraps is not None:
            over = positional[0]
            inner = given[over]
            if not (isinstance(inner, LayerSpec) and inner.kind in ctor.wraps):
                return self.err("E103", f"{name} takes {ctor.wraps_what}, got {describe(inner)}", spans.get(over, e.span))
            # the wrapper and the layer it wraps are one definition, with the wrapper's arguments added
            for k, d in sig.items():
                if k != over:
                    inner.args[k] = checked.get(k, d)
            inner.span = e.span
            return inner
        spec = self.new_layer(kind.kind, checked, e.span, e)
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
            if not layer.members and len(args) != 1:  # a disabled Stabilizer, the identity
                return self.err("E109", f"this layer takes 1 input, got {len(args)}", e.span)
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
            unapplicable = layers.get(layer.kind).unapplicable
            why = unapplicable(layer.args) if unapplicable else None
            if why:
                return self.err("E103", why, layer.span)
            if len(args) != 1:
                return self.err("E109", f"{layer.kind} takes 1 input, got {len(args)}", e.span)
            return self.add_node(layer, [a.name for a in args], e.span)
        return self.err("E108", f"{describe(layer)} cannot be applied", e.span)

    def op_node(self, kind: str, inputs: list, e: S.Call) -> Tensor:
        """One node of a kind made by a function on values (splice, select_last, ...)."""
        spec = self.new_layer(kind, {}, e.span)
        with self.outer_call():
            return self.add_node(spec, inputs, e.span)

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


def check_option(key: str, value):
    """Check one default_options value as the first kind it reaches checks it: (value, None) or (None, message)."""
    ctor = layers.option_constructor(key)
    probe = {k: 1 for k, d in ctor.signature.items() if d is layers.REQUIRED}
    res = ctor.check({**probe, key: value})
    if isinstance(res, tuple):
        return None, res[1].replace(f"{ctor.name} ", "", 1)
    return res.get(key, value), None  # a checked argument no IR attr carries (use_cntk_engine) is kept as given
