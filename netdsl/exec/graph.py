"""Forward and backward passes over an IR graph.

The graph is a DAG of Node applications of Layer definitions. A layer applied
twice (DSSM's image_to_vec) has one parameter set; backward SUMS the
gradients of all its applications, and a value read by several nodes sums the
gradients flowing back into it. Node values are in the canonical layouts
(docs/ir.md).

Every layer kind runs its kernel from the registry in kernels/ (one module
per kind). What only the executor can decide lives here:
- no input gradient where nothing upstream is trainable (every model's first
  layer: a third of an MLP's backward GEMMs);
- fusions from kernels.FUSIONS: a node whose only reader is of the kind its
  fusion names runs as one step with it (a MaxPooling after a linear/ReLU
  convolution). fuse=False turns fusion off (tests compare the two).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import ir
from .kernels import FUSIONS, KERNELS, Call


class Step(NamedTuple):
    node: ir.Node  # the node whose inputs the step reads
    layer: ir.Layer
    out: ir.Node  # the node whose value the step writes (the fused reader, if any)
    fused: ir.Layer | None  # the fused reader's layer
    kernel: object  # a kernels.Kernel, or a kernels.Fusion when fused
    call: Call
    fused_call: Call | None


class Executor:
    """Runs `graph` with `params` (canonical name -> array).

    Parameters are held by reference when they already have `dtype`, so an
    optimizer updating `executor.params` in place trains this executor.
    float32 trains; float64 is for finite-difference gradient checks.
    """

    def __init__(self, graph: ir.Graph, params: dict, dtype=np.float32, fuse: bool = True):
        self.graph = graph
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"executor dtype must be float32 or float64, got {self.dtype}")
        missing = [p.name for p in graph.params() if p.name not in params]
        if missing:
            raise ValueError(f"missing parameters: {', '.join(missing)}")
        self.params = {p.name: np.asarray(params[p.name], dtype=self.dtype) for p in graph.params()}
        self.trainable = [p.name for p in graph.params() if p.trainable]
        layers = {layer.name: layer for layer in graph.layers}
        for node in graph.nodes:
            if layers[node.layer].kind not in KERNELS:
                raise NotImplementedError(f"layer kind {layers[node.layer].kind} ({node.layer}) is not "
                                          f"supported by the native executor")
        self.input_types = {i.name: i.type for i in graph.inputs}
        self.types = {**self.input_types, **{n.name: n.type for n in graph.nodes}}
        # Values whose gradient someone needs: downstream of a trainable parameter.
        # The rest (inputs, their Rescale) get no input gradient at all.
        need = set()
        for node in graph.nodes:
            if any(p.trainable for p in layers[node.layer].params) or any(v in need for v in node.inputs):
                need.add(node.name)
        self.needs_grad = need
        self.lengths: dict = {}  # value name -> (N,) lengths of the current batch; Calls share it
        self.steps = self._plan(layers, fuse)
        self.values: dict = {}
        self._caches: list | None = None

    # ------------------------------------------------------------------ API
    def forward(self, inputs: dict, training: bool = False, rng: np.random.Generator | None = None,
                lengths: dict | None = None) -> dict:
        """inputs: input name -> batch array (token ids stay integer).
        lengths: sequence input name -> (N,) int64 valid lengths of a padded batch
        (docs/ir.md); an input without lengths is all full length.
        Returns output name -> array. Keeps the caches for one backward()."""
        self._set_lengths(inputs, lengths or {})
        values = {}
        for name, t in self.input_types.items():
            if name not in inputs:
                raise KeyError(f"no array given for input '{name}'")
            x = np.asarray(inputs[name])
            if t.vocab is None and x.dtype != self.dtype:
                x = x.astype(self.dtype)
            values[name] = x
        caches = []
        for st in self.steps:
            xs = [values[v] for v in st.node.inputs]
            if st.fused is None:
                y, cache = st.kernel.forward(st.call, xs, training, rng)
            else:
                y, cache = st.kernel.forward(st.call, st.fused_call, xs)
            values[st.out.name] = y
            caches.append(cache)
        self.values = values
        self._caches = caches
        return {name: values[name] for name in self.graph.outputs}

    def backward(self, dout: dict) -> dict:
        """dout: output name -> gradient of the loss w.r.t. that output.
        Returns canonical param name -> gradient, summed over applications.
        Parameters no gradient reached are absent (like torch's grad=None)."""
        if self._caches is None:
            raise RuntimeError("backward() needs a forward() first")
        dvals = {}
        for name, g in dout.items():
            if g is not None:
                _accumulate(dvals, name, np.asarray(g, dtype=self.dtype))
        grads: dict = {}
        for st, cache in zip(reversed(self.steps), reversed(self._caches)):
            dy = dvals.pop(st.out.name, None)
            if dy is None:
                continue
            need = [v in self.needs_grad for v in st.node.inputs]
            dxs, pgrads = st.kernel.backward(st.call, dy, cache, need)
            for v, dx, wanted in zip(st.node.inputs, dxs, need):
                if wanted and dx is not None:
                    _accumulate(dvals, v, dx)
            for short, g in pgrads.items():
                if g is not None:
                    _accumulate(grads, f"{st.layer.name}.{short}", g)
        self._caches = None  # caches hold batch-sized arrays; free them early
        return grads

    def release(self) -> None:
        """Drop the last forward's values and caches (batch-sized arrays)."""
        self.values, self._caches = {}, None

    def first_nonfinite(self):
        """(node, layer) of the first value (graph order) of the last forward
        holding NaN/Inf, or None. A fused conv+pool is reported as the conv."""
        for st in self.steps:
            y = self.values.get(st.out.name)
            if y is not None and y.dtype.kind == "f" and not np.isfinite(y).all():
                return st.node, st.layer
        return None

    def _call(self, node, layer) -> Call:
        return Call(layer, node, [self.types[v] for v in node.inputs], self.params, self.dtype, self.lengths)

    def _set_lengths(self, inputs: dict, given: dict) -> None:
        """Fill self.lengths (value name -> (N,) lengths) for this batch: a sequence value
        has the lengths of the first sequence value it reads (kernels read them via Call)."""
        from .kernels.masking import check_lengths

        self.lengths.clear()
        for name, lens in given.items():
            if lens is None:
                continue
            t = self.input_types.get(name)
            if t is None or not t.seq:
                raise KeyError(f"lengths given for '{name}', which is no sequence input")
            x = np.asarray(inputs[name])
            self.lengths[name] = check_lengths(lens, x.shape[0], x.shape[1])
        if not self.lengths:
            return
        for node in self.graph.nodes:
            if self.types[node.name].seq:
                src = next((v for v in node.inputs if v in self.lengths), None)
                if src is not None:
                    self.lengths[node.name] = self.lengths[src]

    def _plan(self, layers: dict, fuse: bool) -> list:
        """Steps in graph order; a node and its only reader run as one step
        when kernels.FUSIONS has their pair of kinds and it applies."""
        graph = self.graph
        readers: dict = {}
        for node in graph.nodes:
            for v in node.inputs:
                readers.setdefault(v, []).append(node)
        steps, skip = [], set()
        for node in graph.nodes:
            if node.name in skip:
                continue
            layer = layers[node.layer]
            nxt = readers.get(node.name, [])
            fusion = None
            if fuse and len(nxt) == 1 and node.name not in graph.outputs:
                second = layers[nxt[0].layer]
                fusion = FUSIONS.get((layer.kind, second.kind))
                if fusion is not None and not fusion.applies(layer, second):
                    fusion = None
            if fusion is not None:
                steps.append(Step(node, layer, nxt[0], second, fusion, self._call(node, layer),
                                  self._call(nxt[0], second)))
                skip.add(nxt[0].name)
            else:
                steps.append(Step(node, layer, node, None, KERNELS[layer.kind], self._call(node, layer), None))
        return steps


def _accumulate(store: dict, key: str, g: np.ndarray) -> None:
    # Never add in place: the first gradient may be a view of another array
    # (a reshape of dy, the caller's dout). Sums are rare (sharing, fan-out).
    prev = store.get(key)
    store[key] = g if prev is None else prev + g
