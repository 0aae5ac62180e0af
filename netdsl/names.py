"""Which names a .net file may use: they become identifiers in generated code."""
from __future__ import annotations

import keyword

# The language refuses no name for the generated code's sake: a user name equal to one a target uses
# for itself (an import, a helper, a local, a builtin it calls) is renamed by that target's name
# allocator (netdsl/emit/names.py; tests/traps/name_clash.net and reserved_names.net).


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
    if len(name) > 64:
        return "is longer than 64 characters"
    return None
