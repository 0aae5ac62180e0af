"""Python-safe names in generated code: one allocator per scope, which never hands out a name twice."""
from __future__ import annotations

import builtins
import functools
import keyword
import re

from .. import ir
from .base import environment, ident

PY_KEYWORDS = frozenset(keyword.kwlist) | frozenset(getattr(keyword, "softkwlist", ()))
BUILTINS = frozenset(dir(builtins))


class Names:
    """Allocates unique, Python-safe identifiers in one scope.

    A name the .net file chose is kept as it is whenever that is safe; when it
    would shadow something the generated code uses in the same scope (a module,
    a helper, a keyword) it gets a trailing underscore, then a number.
    """

    def __init__(self, reserved=(), builtins_reserved: bool = False):
        self.taken = set(PY_KEYWORDS) | set(reserved)
        if builtins_reserved:
            self.taken |= BUILTINS
        self.given: dict = {}

    def reserve(self, *names: str) -> None:
        self.taken.update(names)

    def claim(self, name: str) -> str:
        """A fresh identifier based on name; records it as taken."""
        ident(name)
        candidate = name
        if candidate in self.taken:
            candidate = name + "_"
            n = 2
            while candidate in self.taken:
                candidate = f"{name}_{n}"
                n += 1
        self.taken.add(candidate)
        return candidate

    def of(self, key: str, base: str | None = None) -> str:
        """The identifier for key, claimed on first use (base defaults to key)."""
        if key not in self.given:
            self.given[key] = self.claim(base or key)
        return self.given[key]


def class_name(name: str, taken=()) -> str:
    """The model's class name: its netdsl name unless that clashes with a module-level name."""
    ident(name)
    return name + "Model" if name in taken or name in PY_KEYWORDS or name in BUILTINS else name


def auto_named(node: ir.Node) -> bool:
    """True when the value's name was made up by netdsl (the layer's name, maybe numbered), not by the user."""
    return node.name == node.layer or re.fullmatch(re.escape(node.layer) + r"_\d+", node.name) is not None


_IDENT = re.compile(r"(?<![.\w])[A-Za-z_]\w*")  # a name, not an attribute after a dot
_JINJA_COMMENT = re.compile(r"\{#.*?#\}", re.S)


# what in a function body is not its own Python code: Jinja tags, strings, comments
_CODE_ONLY = re.compile(r"\{%.*?%\}|\{\{.*?\}\}|\"\"\".*?\"\"\"|\"[^\"\n]*\"|'[^'\n]*'|#[^\n]*", re.S)
_MODULE_LEVEL = re.compile(r"^(?:(?:def|class)\s+(\w+)|(\w+)\s*=|import\s+(?:\S+\s+as\s+)?(\w+)|from\s+\S+\s+import\s+(.+))",
                           re.M)


@functools.lru_cache(maxsize=None)
def template_names(template: str, scopes: tuple) -> frozenset:
    """The names a user's value must not take in a legacy template's generated module.

    Every module-level name (imports, functions, classes, constants), every identifier written in the
    functions named in `scopes` (where the user's values become locals), and every builtin the template
    calls anywhere: a user's name equal to one of them is renamed, so it can never shadow, or be shadowed
    by, one of the module's own names.
    """
    env = environment()
    sources, todo = {}, [template]
    while todo:  # the template and every template it extends or includes
        name = todo.pop()
        if name not in sources:
            sources[name] = _JINJA_COMMENT.sub("", env.loader.get_source(env, name)[0])
            todo += re.findall(r"\{%-?\s*(?:extends|include)\s+\"([^\"]+)\"", sources[name])
    source = "\n".join(sources.values())
    names = set()
    for m in _MODULE_LEVEL.finditer(source):
        if m.group(4):
            names.update(_IDENT.findall(re.sub(r"\{.*?\}", "", m.group(4))))
        else:
            names.update(g for g in m.groups()[:3] if g)
    for scope in scopes:
        for body in re.findall(rf"^(?:class|def) {scope}\b.*?(?=^[^\s{{]|\Z)", source, re.M | re.S):
            names.update(_IDENT.findall(_CODE_ONLY.sub(" ", body)))
    names.update(BUILTINS & set(_IDENT.findall(source)))
    return frozenset(names)
