"""Forward and backward passes over an IR graph, with the kernels of ops.py.

The graph is a DAG of Node applications of Layer definitions. A layer applied
twice (DSSM's image_to_vec) has one parameter set; backward SUMS the
gradients of all its applications, and a value read by several nodes sums the
gradients flowing back into it. Layouts are the canonical ones (docs/ir.md).
"""
from __future__ import annotations

import numpy as np

from .. import ir
from . import ops


class Executor:
    """Runs `graph` with `params` (canonical name -> array).

    Parameters are held by reference when they already have `dtype`, so an
    optimizer updating `executor.params` in place trains this executor.
    float32 trains; float64 is for finite-difference gradient checks.
    """

    def __init__(self, graph: ir.Graph, params: dict, dtype=np.float32):
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
        self.steps = [(node, layers[node.layer]) for node in graph.nodes]
        for node, layer in self.steps:
            if not hasattr(self, "_f_" + layer.kind):
                raise NotImplementedError(f"layer kind {layer.kind} ({layer.name}) is not supported "
                                          f"by the native executor")
        self.input_types = {i.name: i.type for i in graph.inputs}
        # Values whose gradient someone needs: downstream of a trainable parameter.
        # The rest (inputs, Rescale of inputs) get no input gradient at all.
        need = set()
        for node, layer in self.steps:
            if any(p.trainable for p in layer.params) or any(v in need for v in node.inputs):
                need.add(node.name)
        self.needs_grad = need
        self.values: dict = {}
        self._caches: list | None = None

    # ------------------------------------------------------------------ API
    def forward(self, inputs: dict, training: bool = False, rng: np.random.Generator | None = None) -> dict:
        """inputs: input name -> batch array (token ids stay integer).
        Returns output name -> array. Keeps the caches for one backward()."""
        values = {}
        for name, t in self.input_types.items():
            if name not in inputs:
                raise KeyError(f"no array given for input '{name}'")
            x = np.asarray(inputs[name])
            if t.vocab is None and x.dtype != self.dtype:
                x = x.astype(self.dtype)
            values[name] = x
        caches = []
        for node, layer in self.steps:
            xs = [values[v] for v in node.inputs]
            y, cache = getattr(self, "_f_" + layer.kind)(layer, node, xs, training, rng)
            values[node.name] = y
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
        for (node, layer), cache in zip(reversed(self.steps), reversed(self._caches)):
            dy = dvals.pop(node.name, None)
            if dy is None:
                continue
            need = [v in self.needs_grad for v in node.inputs]
            dxs, pgrads = getattr(self, "_b_" + layer.kind)(layer, node, dy, cache, need)
            for v, dx, wanted in zip(node.inputs, dxs, need):
                if wanted and dx is not None:
                    _accumulate(dvals, v, dx)
            for short, g in pgrads.items():
                if g is not None:
                    _accumulate(grads, f"{layer.name}.{short}", g)
        self._caches = None  # caches hold batch-sized arrays; free them early
        return grads

    # ------------------------------------------------------------ layer kinds
    # _f_<Kind>(layer, node, xs, training, rng) -> (y, cache)
    # _b_<Kind>(layer, node, dy, cache, need) -> ([dx per input], {short: grad})

    def _p(self, layer, short):
        return self.params[f"{layer.name}.{short}"]

    def _opt(self, layer, short):
        key = f"{layer.name}.{short}"
        return self.params.get(key)

    def _f_Dense(self, layer, node, xs, training, rng):
        x = xs[0]
        shape = x.shape
        t = self.graph.value_type(node.inputs[0])
        lead = 2 if t.seq else 1
        if x.ndim > lead + 1:  # multi-axis sample: flatten in C-order, like Flatten
            x = x.reshape(shape[:lead] + (-1,))
        y, c = ops.dense_forward(x, self._p(layer, "W"), self._opt(layer, "b"), layer.attr("activation"))
        return y, (c, shape)

    def _b_Dense(self, layer, node, dy, cache, need):
        c, shape = cache
        dx, dW, db = ops.dense_backward(dy, c)
        return [dx.reshape(shape)], {"W": dW, "b": db}

    def _f_Convolution(self, layer, node, xs, training, rng):
        return ops.conv2d_forward(xs[0], self._p(layer, "W"), self._opt(layer, "b"),
                                  strides=layer.attr("strides"), pads=layer.attr("pads"),
                                  activation=layer.attr("activation"))

    def _b_Convolution(self, layer, node, dy, cache, need):
        dx, dW, db = ops.conv2d_backward(dy, cache)
        return [dx], {"W": dW, "b": db}

    def _f_MaxPooling(self, layer, node, xs, training, rng):
        return ops.max_pool2d_forward(xs[0], layer.attr("window"), layer.attr("strides"), layer.attr("pads"))

    def _b_MaxPooling(self, layer, node, dy, cache, need):
        return [ops.max_pool2d_backward(dy, cache)], {}

    def _f_AveragePooling(self, layer, node, xs, training, rng):
        return ops.avg_pool2d_forward(xs[0], layer.attr("window"), layer.attr("strides"), layer.attr("pads"))

    def _b_AveragePooling(self, layer, node, dy, cache, need):
        return [ops.avg_pool2d_backward(dy, cache)], {}

    def _f_Dropout(self, layer, node, xs, training, rng):
        rate = float(layer.attr("rate"))
        if training and rate > 0 and rng is None:
            raise ValueError(f"dropout layer '{layer.name}' needs an rng in training mode")
        return ops.dropout_forward(xs[0], rate, training, rng)

    def _b_Dropout(self, layer, node, dy, cache, need):
        return [ops.dropout_backward(dy, cache)], {}

    def _f_Embedding(self, layer, node, xs, training, rng):
        return ops.embedding_forward(xs[0], self._p(layer, "E"))

    def _b_Embedding(self, layer, node, dy, cache, need):
        return [None], {"E": ops.embedding_backward(dy, cache)}

    def _f_LSTM(self, layer, node, xs, training, rng):
        return ops.lstm_forward(xs[0], self._p(layer, "W"), self._p(layer, "H"), self._p(layer, "b"),
                                go_backwards=bool(layer.attr("go_backwards", False)))

    def _b_LSTM(self, layer, node, dy, cache, need):
        dx, dW, dH, db = ops.lstm_backward(dy, cache)
        return [dx], {"W": dW, "H": dH, "b": db}

    def _f_BatchNormalization(self, layer, node, xs, training, rng):
        rm, rv = self._p(layer, "running_mean"), self._p(layer, "running_var")
        y, cache, new_mean, new_var = ops.batch_norm_forward(
            xs[0], self._opt(layer, "scale"), self._opt(layer, "bias"), rm, rv,
            momentum=float(layer.attr("momentum", 0.1)), eps=float(layer.attr("epsilon", 1e-5)),
            training=training)
        if training:  # non-trainable state: updated in place, once per application
            rm[...] = new_mean
            rv[...] = new_var
        return y, cache

    def _b_BatchNormalization(self, layer, node, dy, cache, need):
        dx, dscale, dbias = ops.batch_norm_backward(dy, cache)
        return [dx], {"scale": dscale, "bias": dbias}

    def _f_LayerNormalization(self, layer, node, xs, training, rng):
        return ops.layer_norm_forward(xs[0], self._opt(layer, "scale"), self._opt(layer, "bias"),
                                      eps=float(layer.attr("epsilon", 1e-5)))

    def _b_LayerNormalization(self, layer, node, dy, cache, need):
        dx, dscale, dbias = ops.layer_norm_backward(dy, cache)
        return [dx], {"scale": dscale, "bias": dbias}

    def _f_Activation(self, layer, node, xs, training, rng):
        return ops.activation_forward(xs[0], layer.attr("activation"))

    def _b_Activation(self, layer, node, dy, cache, need):
        return [ops.activation_backward(dy, cache)], {}

    def _f_Rescale(self, layer, node, xs, training, rng):
        y, cache = ops.rescale_forward(xs[0], layer.attr("scale", 1.0), layer.attr("mean", 0.0),
                                       layer.attr("std", 1.0))
        return y.astype(self.dtype, copy=False), cache

    def _b_Rescale(self, layer, node, dy, cache, need):
        return [ops.rescale_backward(dy, cache)], {}

    def _f_Flatten(self, layer, node, xs, training, rng):
        return ops.flatten_forward(xs[0])

    def _b_Flatten(self, layer, node, dy, cache, need):
        return [ops.flatten_backward(dy, cache)], {}

    def _f_Splice(self, layer, node, xs, training, rng):
        return ops.splice_forward(xs)

    def _b_Splice(self, layer, node, dy, cache, need):
        return ops.splice_backward(dy, cache), {}

    def _f_SelectLast(self, layer, node, xs, training, rng):
        return ops.select_last_forward(xs[0])

    def _f_SelectFirst(self, layer, node, xs, training, rng):
        return ops.select_first_forward(xs[0])

    def _b_SelectLast(self, layer, node, dy, cache, need):
        return [ops.select_backward(dy, cache)], {}

    _b_SelectFirst = _b_SelectLast

    def _f_CosineDistance(self, layer, node, xs, training, rng):
        return ops.cosine_distance_forward(xs[0], xs[1])

    def _b_CosineDistance(self, layer, node, dy, cache, need):
        return list(ops.cosine_distance_backward(dy, cache)), {}

    # --------------------------------------------------------------- helpers
    def first_nonfinite(self):
        """The first node (graph order) whose last forward output holds NaN/Inf, or None."""
        for node, layer in self.steps:
            y = self.values.get(node.name)
            if y is not None and y.dtype.kind == "f" and not np.isfinite(y).all():
                return node, layer
        return None


def _accumulate(store: dict, key: str, g: np.ndarray) -> None:
    # Never add in place: the first gradient may be a view of another array
    # (a reshape of dy, the caller's dout). Sums are rare (sharing, fan-out).
    prev = store.get(key)
    store[key] = g if prev is None else prev + g
