"""Memory bounds: how much a forward + backward pass will hold, from the
shapes and the batch size alone, checked before anything is allocated.

The estimate counts, in the executor's dtype: the parameters with their
gradients and two optimizer slots; every input; every node's output and the
workspace its kernel keeps for backward (Kernel.workspace: im2col buffers,
LSTM gates, ...); and twice the largest output for the gradients in flight.
It is an estimate, not a bound: it is there to refuse Input((1000, 1000,
1000)) or a 4 GB im2col buffer with a diagnostic instead of letting the
machine swap or the kernel kill the process.

The limit defaults to half of the machine's physical memory; --max-memory
sets it. E609: the estimate exceeds the limit.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import numpy as np

from .. import ir
from ..errors import Diagnostic, NetdslError, NO_SPAN
from .kernels import KERNELS, Call

E_MEMORY = "E609"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """'2G' -> 2 GiB; K, M, G, T are powers of 1024; a plain number is bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ValueError(f"expected a size such as 2G, 512M or 1000000, got {text!r}")
    n = float(m.group(1)) * _UNITS[m.group(2).upper()]
    if not 0 < n < 2**63:
        raise ValueError(f"expected a positive size, got {text!r}")
    return int(n)


def format_size(n: float) -> str:
    for unit in ("T", "G", "M", "K"):
        if n >= _UNITS[unit]:
            return f"{n / _UNITS[unit]:.2f} {unit}iB"
    return f"{int(n)} bytes"


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def default_limit() -> int:
    """Half of the machine's memory (8 GiB where it cannot be asked)."""
    total = physical_memory()
    return total // 2 if total else 8 << 30


@dataclass
class Estimate:
    total: int  # bytes
    largest: int  # bytes of the biggest single part
    where: object  # the Input or Node of that part (for the span)
    label: str


def _elems(t: ir.TensorType, batch: int, seq_len: int) -> int:
    return math.prod(seq_len if d is None else d for d in t.batch_shape(batch))


def estimate(graph: ir.Graph, batch: int, seq_len: int = 1, dtype=np.float32) -> Estimate:
    """Bytes a training step at `batch` holds; `seq_len` stands for unknown sequence lengths."""
    item = np.dtype(dtype).itemsize
    # Zero-stride views: shapes for the kernels' workspace() without allocating.
    params = {p.name: np.broadcast_to(np.zeros((), dtype), tuple(p.shape)) for p in graph.params()}
    n_params = sum(math.prod(p.shape) for p in graph.params())
    total = 4 * n_params  # values, gradients, two optimizer slots
    elems = {}
    parts = []
    for i in graph.inputs:
        elems[i.name] = _elems(i.type, batch, seq_len)
        parts.append((elems[i.name], i, f"input '{i.name}' {i.type.describe()}"))
    layers = {layer.name: layer for layer in graph.layers}
    types = {**{i.name: i.type for i in graph.inputs}, **{n.name: n.type for n in graph.nodes}}
    for node in graph.nodes:
        layer = layers[node.layer]
        out = _elems(node.type, batch, seq_len)
        elems[node.name] = out
        kernel = KERNELS.get(layer.kind)
        ws = 0
        if kernel is not None:
            call = Call(layer, node, [types[v] for v in node.inputs], params, dtype)
            ws = kernel.workspace(call, out, sum(elems[v] for v in node.inputs))
        label = node.name if node.name == layer.name else f"{node.name} ({layer.name})"
        parts.append((out + ws, node, f"{layer.kind} '{label}' (output and workspace)"))
    total += sum(p[0] for p in parts) + 2 * max((elems[n.name] for n in graph.nodes), default=0)
    big = max(parts, key=lambda p: p[0]) if parts else (0, graph, "")
    largest = big[0] * item
    if 4 * n_params * item > largest:
        big = (4 * n_params, graph, f"the {n_params} parameters (with gradients and optimizer state)")
    return Estimate(total * item, big[0] * item, big[1], big[2])


def check(graph: ir.Graph, batch: int, limit: int, seq_len: int = 1, what: str = "training",
          sources: dict | None = None) -> Estimate:
    """Raise E609 when a step at `batch` would need more than `limit` bytes."""
    e = estimate(graph, batch, seq_len)
    if e.total > limit:
        raise NetdslError(Diagnostic(
            E_MEMORY, f"{what} of model {graph.name} at batch {batch} needs about {format_size(e.total)} of "
            f"memory, over the limit of {format_size(limit)}; the largest part is {e.label}: "
            f"{format_size(e.largest)}", getattr(e.where, "span", None) or graph.span or NO_SPAN,
            "lower --batch-size or the model's sizes, or raise the limit with --max-memory SIZE"), sources)
    return e


def fitting_batch(graph: ir.Graph, limit: int, want: int, seq_len: int = 1) -> int:
    """The largest batch <= want whose step fits in `limit` (0 if not even 1 does).
    The estimate is affine in the batch: two evaluations give it."""
    a = estimate(graph, 1, seq_len).total
    if a > limit:
        return 0
    b = estimate(graph, 2, seq_len).total - a  # bytes per extra sample
    return want if b <= 0 else max(1, min(want, 1 + (limit - a) // b))
