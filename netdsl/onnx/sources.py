"""`netdsl import SOURCE`: an ONNX file, a PyTorch module or TorchScript file, or a Keras model -> .net + weights.

Every source goes through ONNX and importer.py, so one mapping (and one list of what is refused)
serves them all. The .net written is loaded back through the front end before anything is
returned, and its parameters must be exactly the weights: an import never writes a file that
does not compile, or weights that do not fit it.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import Diagnostic, NetdslError, Span

E_SOURCE = "E822"  # a PyTorch/Keras source cannot be loaded or exported


def camel(stem: str) -> str:
    words = [w for w in re.split(r"[^A-Za-z0-9]+", stem) if w]
    name = "".join(w[:1].upper() + w[1:] for w in words) or "Imported"
    return name if name[0].isalpha() else "M" + name


def from_onnx_model(model, source: str, stem: str) -> tuple[str, dict]:
    from ..frontend import load_text
    from . import netwriter
    from .importer import Walk, ident

    walk = Walk(model, source)
    outputs = walk.run()
    gname = model.graph.name
    name = camel(gname) if gname and gname not in ("main_graph", "torch_jit", "torch-jit-export") else camel(stem)
    if netwriter.taken(name) or ident(name) != name:
        name = camel(stem)
    text, weights = netwriter.write(walk, outputs, name, source)
    graph = load_text(text, f"{stem}.net")  # raises, with the .net's own diagnostics, if the text is wrong
    want = {p.name: p.shape for p in graph.params()}
    got = {k: tuple(v.shape) for k, v in weights.items()}
    if want != got:
        raise AssertionError(f"imported weights do not fit the .net written: {want} vs {got}")
    return text, {k: np.ascontiguousarray(v, np.float32) for k, v in weights.items()}


def import_source(source: str, input_shape, stem: str, state_dict: str | None = None) -> tuple[str, dict]:
    from .importer import read_model

    path = Path(source)
    if path.suffix == ".onnx" or (path.exists() and path.suffix not in (".py", ".pt", ".pth", ".keras", ".h5")):
        return from_onnx_model(read_model(path), source, stem)
    from . import frontends

    if path.suffix == ".keras" or path.suffix == ".h5":
        model = frontends.keras_to_onnx(source)
    else:
        model = frontends.torch_to_onnx(source, input_shape, state_dict)
    return from_onnx_model(model, source, stem)


def source_error(source: str, message: str) -> NetdslError:
    return NetdslError(Diagnostic(E_SOURCE, message, Span(source, 1, 1, 1, 1)))
