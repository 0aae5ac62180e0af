"""Python-safe names in generated code: one allocator per scope, which never hands out a name twice."""
from __future__ import annotations

import builtins
import keyword
import re

from .. import ir
from .base import ident

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
