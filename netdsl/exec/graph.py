"""Forward and backward passes over an IR graph.

The graph is a DAG of Node applications of Layer definitions. A layer applied
twice (DSSM's image_to_vec) has one parameter set; backward SUMS the
gradients of all its applications, and a value read by several nodes sums the
gradients flowing back into it. Node values are in the canonical layouts
(docs/ir.md).

Most layers run the reference kernels of ops.py. Dense, Convolution and LSTM
run executor-specific paths (the numba kernels at the bottom of this file),
because the wins come from decisions only the executor can make:
- no input gradient where nothing upstream is trainable (every model's first
  layer: a third of an MLP's backward GEMMs);
- a convolution is ONE channels-last GEMM over the whole batch, and a
  MaxPooling that is the only reader of a linear/ReLU convolution is fused
  into it: bias, ReLU and pooling in one pass that keeps only the argmax;
  backward scatters straight into the convolution's pre-activation gradient;
- an LSTM step is one numpy exp pass for all four gates and two fused numba
  passes (tanh(z) = 2 sigmoid(2z) - 1).
fuse=False turns the conv+pool fusion off (tests compare the two).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .. import ir
from . import ops


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
            if not hasattr(self, "_f_" + layers[node.layer].kind):
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
        self.steps = _plan(graph, layers, fuse)
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
        for node, layer, out, pool in self.steps:
            xs = [values[v] for v in node.inputs]
            if pool is None:
                y, cache = getattr(self, "_f_" + layer.kind)(layer, node, xs, training, rng)
            else:
                y, cache = self._f_ConvPool(layer, node, pool, out, xs)
            values[out.name] = y
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
        for (node, layer, out, pool), cache in zip(reversed(self.steps), reversed(self._caches)):
            dy = dvals.pop(out.name, None)
            if dy is None:
                continue
            need = [v in self.needs_grad for v in node.inputs]
            if pool is None:
                dxs, pgrads = getattr(self, "_b_" + layer.kind)(layer, node, dy, cache, need)
            else:
                dxs, pgrads = self._b_ConvPool(layer, node, dy, cache, need)
            for v, dx, wanted in zip(node.inputs, dxs, need):
                if wanted and dx is not None:
                    _accumulate(dvals, v, dx)
            for short, g in pgrads.items():
                if g is not None:
                    _accumulate(grads, f"{layer.name}.{short}", g)
        self._caches = None  # caches hold batch-sized arrays; free them early
        return grads

    def release(self) -> None:
        """Drop the last forward's values and caches (batch-sized arrays)."""
        self.values, self._caches = {}, None

    def first_nonfinite(self):
        """(node, layer) of the first value (graph order) of the last forward
        holding NaN/Inf, or None. A fused conv+pool is reported as the conv."""
        for node, layer, out, _ in self.steps:
            y = self.values.get(out.name)
            if y is not None and y.dtype.kind == "f" and not np.isfinite(y).all():
                return node, layer
        return None

    # ------------------------------------------------------------ layer kinds
    # _f_<Kind>(layer, node, xs, training, rng) -> (y, cache)
    # _b_<Kind>(layer, node, dy, cache, need) -> ([dx per input], {short: grad})

    def _p(self, layer, short):
        return self.params[f"{layer.name}.{short}"]

    def _opt(self, layer, short):
        return self.params.get(f"{layer.name}.{short}")

    def _f_Dense(self, layer, node, xs, training, rng):
        x = xs[0]
        lead = x.shape[:2] if self.types[node.inputs[0]].seq else x.shape[:1]
        # Multi-axis samples flatten in C-order of the canonical layout, like Flatten.
        x2 = x.reshape(math.prod(lead), -1)
        W, b = self._p(layer, "W"), self._opt(layer, "b")
        z = x2 @ W.T
        if b is not None:
            z += b
        act = layer.attr("activation")
        if act == "relu":
            np.maximum(z, 0, out=z)
            y, acache = z, None
        else:
            y, acache = ops.activation_forward(z, act)
        return y.reshape(lead + (W.shape[0],)), (x2, x.shape, y, act, acache, b is not None)

    def _b_Dense(self, layer, node, dy, cache, need):
        x2, xshape, y, act, acache, has_b = cache
        W = self._p(layer, "W")
        dy = dy.reshape(y.shape)
        dz = dy * (y > 0) if act == "relu" else ops.activation_backward(dy, acache)
        dW = dz.T @ x2
        db = dz.sum(axis=0) if has_b else None
        dx = (dz @ W).reshape(xshape) if need[0] else None
        return [dx], {"W": dW, "b": db}

    def _f_Convolution(self, layer, node, xs, training, rng):
        W, b = self._p(layer, "W"), self._opt(layer, "b")
        col, z, geo = _conv_gemm(xs[0], W, layer)
        n, o, oh, ow = geo[0], W.shape[0], geo[-2], geo[-1]
        act = layer.attr("activation")
        if b is not None:
            z += b
        if act == "relu":
            np.maximum(z, 0, out=z)
        y = np.ascontiguousarray(z.reshape(n, oh, ow, o).transpose(0, 3, 1, 2))
        acache = None
        if act not in (None, "relu"):
            y, acache = ops.activation_forward(y, act)
        return y, (col, geo, y, act, acache, b is not None)

    def _b_Convolution(self, layer, node, dy, cache, need):
        col, geo, y, act, acache, has_b = cache
        if act == "relu":
            dy = dy * (y > 0)
        elif act is not None:
            dy = ops.activation_backward(dy, acache)
        dz = np.ascontiguousarray(dy.transpose(0, 2, 3, 1)).reshape(-1, dy.shape[1])
        db = dz.sum(axis=0) if has_b else None
        return self._conv_weight_grads(self._p(layer, "W"), col, dz, db, geo, need)

    def _conv_weight_grads(self, W, col, dz, db, geo, need):
        """dz (N*oh*ow, O) is the gradient of the pre-activation output."""
        n, c, h, w, kh, kw, sh, sw, pt, pl, oh, ow = geo
        o = W.shape[0]
        dW = np.ascontiguousarray((dz.T @ col).reshape(o, kh, kw, c).transpose(0, 3, 1, 2))
        dx = None
        if need[0]:
            dcol = dz @ _w_ohwc(W)
            dxh = np.zeros((n, h, w, c), dz.dtype)
            _col2im(dcol, kh, kw, sh, sw, pt, pl, oh, ow, dxh)
            dx = np.ascontiguousarray(dxh.transpose(0, 3, 1, 2))
        return [dx], {"W": dW, "b": db}

    def _f_ConvPool(self, layer, node, pool_layer, pool_node, xs):
        """Convolution (linear or ReLU) + its only reader, a MaxPooling: one pass
        adds the bias, applies ReLU and pools, keeping the argmax (or -1 where
        ReLU zeroed the window: no gradient flows there)."""
        W, b = self._p(layer, "W"), self._opt(layer, "b")
        col, z, geo = _conv_gemm(xs[0], W, layer)
        n, oh, ow = geo[0], geo[-2], geo[-1]
        o = W.shape[0]
        kh, kw = pool_layer.attr("window")
        sh, sw = pool_layer.attr("strides")
        (pt, pb), (pl, pr) = pool_layer.attr("pads")
        ph, pw = pool_node.type.shape[1:]
        yh = np.empty((n, ph, pw, o), z.dtype)
        arg = np.empty((n, ph, pw, o), np.int32)
        bias = b if b is not None else np.zeros(o, z.dtype)
        relu = layer.attr("activation") == "relu"
        tiled = (kh, kw, sh, sw, pt, pb, pl, pr) == (2, 2, 2, 2, 0, 0, 0, 0)
        if tiled:
            _bias_act_maxpool_2x2(z, bias, relu, n, oh, ow, yh, arg)  # the common case, 2.4x faster
        else:
            _bias_act_maxpool(z, bias, relu, n, oh, ow, kh, kw, sh, sw, pt, pl, yh, arg)
        return np.ascontiguousarray(yh.transpose(0, 3, 1, 2)), (col, geo, arg, b is not None, tiled)

    def _b_ConvPool(self, layer, node, dy, cache, need):
        col, geo, arg, has_b, tiled = cache
        n, oh, ow = geo[0], geo[-2], geo[-1]
        W = self._p(layer, "W")
        db = np.empty(W.shape[0], dy.dtype)
        dyh = np.ascontiguousarray(dy.transpose(0, 2, 3, 1))
        if tiled:  # 2x2/2 windows tile the plane: every row of dz is written, no memset
            dz = np.empty((n * oh * ow, W.shape[0]), dy.dtype)
            _unpool_2x2(dyh, arg, oh, ow, dz, db)
        else:
            dz = np.zeros((n * oh * ow, W.shape[0]), dy.dtype)
            _unpool(dyh, arg, dz, db)
        return self._conv_weight_grads(W, col, dz, db if has_b else None, geo, need)

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
        return _lstm_forward(xs[0], self._p(layer, "W"), self._p(layer, "H"), self._p(layer, "b"),
                             bool(layer.attr("go_backwards", False)))

    def _b_LSTM(self, layer, node, dy, cache, need):
        dx, dW, dH, db = _lstm_backward(dy, cache, need[0])
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


def _accumulate(store: dict, key: str, g: np.ndarray) -> None:
    # Never add in place: the first gradient may be a view of another array
    # (a reshape of dy, the caller's dout). Sums are rare (sharing, fan-out).
    prev = store.get(key)
    store[key] = g if prev is None else prev + g


def _plan(graph: ir.Graph, layers: dict, fuse: bool) -> list:
    """Steps in graph order: (node, layer, output node, None), or for a fused
    convolution + max pooling (conv node, conv layer, pool node, pool layer)."""
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
        if (fuse and layer.kind == "Convolution" and layer.attr("activation") in (None, "relu")
                and len(nxt) == 1 and layers[nxt[0].layer].kind == "MaxPooling"
                and node.name not in graph.outputs):
            steps.append((node, layer, nxt[0], layers[nxt[0].layer]))
            skip.add(nxt[0].name)
        else:
            steps.append((node, layer, node, None))
    return steps


# ------------------------------------------------------------------ conv
# Convolutions run channels-last inside: im2col rows are (i, j, c) patches, so
# every copy moves kw*C contiguous floats, and the GEMM output (N*oh*ow, O)
# keeps a pixel's channels together for the vectorised bias/ReLU/pool pass.
# Node values stay NCHW; the transposes at the edges are small next to the GEMMs.

def _w_ohwc(W):
    o, c, kh, kw = W.shape
    return np.ascontiguousarray(W.transpose(0, 2, 3, 1)).reshape(o, kh * kw * c)


def _conv_gemm(x, W, layer):
    """Returns col (N*oh*ow, kh*kw*C), z = col @ W' (N*oh*ow, O) and the geometry."""
    n, c, h, w = x.shape
    o, ci, kh, kw = W.shape
    if c != ci:
        raise ValueError(f"convolution {layer.name}: input has {c} channels, W expects {ci}")
    sh, sw = layer.attr("strides")
    (pt, pb), (pl, pr) = layer.attr("pads")
    oh, ow = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    col = np.empty((n * oh * ow, kh * kw * c), x.dtype)
    _im2col(xh, kh, kw, sh, sw, pt, pl, oh, ow, col)
    z = col @ _w_ohwc(W).T
    return col, z, (n, c, h, w, kh, kw, sh, sw, pt, pl, oh, ow)


@njit(cache=True)
def _im2col(xh, kh, kw, sh, sw, pt, pl, oh, ow, col):
    """col[(b, y, x), (i, j, c)] = xh[b, y*sh - pt + i, x*sw - pl + j, c], 0 in the padding."""
    n, h, w, c = xh.shape
    K = kh * kw * c
    kc = kw * c
    xf = xh.reshape(-1)
    cf = col.reshape(-1)
    for b in range(n):
        for y in range(oh):
            for xo in range(ow):
                dst_row = ((b * oh + y) * ow + xo) * K
                q0 = xo * sw - pl
                inside = q0 >= 0 and q0 + kw <= w
                for i in range(kh):
                    r = y * sh - pt + i
                    dst = dst_row + i * kc
                    if r < 0 or r >= h:
                        for u in range(kc):
                            cf[dst + u] = 0
                    elif inside:
                        src = ((b * h + r) * w + q0) * c
                        for u in range(kc):
                            cf[dst + u] = xf[src + u]
                    else:
                        for j in range(kw):
                            q = q0 + j
                            if q < 0 or q >= w:
                                for u in range(c):
                                    cf[dst + j * c + u] = 0
                            else:
                                src = ((b * h + r) * w + q) * c
                                for u in range(c):
                                    cf[dst + j * c + u] = xf[src + u]


@njit(cache=True)
def _col2im(dcol, kh, kw, sh, sw, pt, pl, oh, ow, dxh):
    """The adjoint of _im2col: scatter-add patches back into dxh (N, H, W, C)."""
    n, h, w, c = dxh.shape
    K = kh * kw * c
    kc = kw * c
    df = dxh.reshape(-1)
    cf = dcol.reshape(-1)
    for b in range(n):
        for y in range(oh):
            for xo in range(ow):
                src_row = ((b * oh + y) * ow + xo) * K
                q0 = xo * sw - pl
                inside = q0 >= 0 and q0 + kw <= w
                for i in range(kh):
                    r = y * sh - pt + i
                    if r < 0 or r >= h:
                        continue
                    src = src_row + i * kc
                    if inside:
                        dst = ((b * h + r) * w + q0) * c
                        for u in range(kc):
                            df[dst + u] += cf[src + u]
                    else:
                        for j in range(kw):
                            q = q0 + j
                            if q >= 0 and q < w:
                                dst = ((b * h + r) * w + q) * c
                                for u in range(c):
                                    df[dst + u] += cf[src + j * c + u]


@njit(cache=True)
def _bias_act_maxpool(z, bias, relu, n, oh, ow, kh, kw, sh, sw, pt, pl, yh, arg):
    """yh (N, ph, pw, O) = max over each window of act(z + bias), z (N*oh*ow, O).

    arg holds the row of z of the window's first maximum (row-major window
    order, as PyTorch; padding never wins), or -1 where ReLU clamped the
    maximum to 0: ReLU's gradient is 0 there anyway. NaN propagates.
    Comparisons are selects, not branches: on real data they are coin flips.
    """
    o = z.shape[1]
    ph, pw = yh.shape[1], yh.shape[2]
    best = np.empty(o, z.dtype)
    bi = np.empty(o, np.int64)
    nan = np.empty(o, np.bool_)
    for b in range(n):
        for py in range(ph):
            r0 = py * sh - pt
            for px in range(pw):
                q0 = px * sw - pl
                first = True
                for i in range(kh):
                    r = r0 + i
                    if r < 0 or r >= oh:
                        continue
                    for j in range(kw):
                        q = q0 + j
                        if q < 0 or q >= ow:
                            continue
                        row = (b * oh + r) * ow + q
                        if first:
                            for u in range(o):
                                v = z[row, u] + bias[u]
                                best[u] = v
                                bi[u] = row
                                nan[u] = v != v
                            first = False
                        else:
                            for u in range(o):
                                v = z[row, u] + bias[u]
                                nan[u] |= v != v
                                take = v > best[u]
                                best[u] = v if take else best[u]
                                bi[u] = row if take else bi[u]
                for u in range(o):
                    v = best[u]
                    k = bi[u]
                    if nan[u]:
                        v = np.nan
                    elif relu and v <= 0:
                        v = 0
                        k = -1
                    yh[b, py, px, u] = v
                    arg[b, py, px, u] = k


@njit(cache=True)
def _bias_act_maxpool_2x2(z, bias, relu, n, oh, ow, yh, arg):
    """_bias_act_maxpool for 2x2 windows at stride 2 without padding, unrolled:
    a tournament of strict '>' keeps the first maximum in row-major order."""
    o = z.shape[1]
    ph, pw = yh.shape[1], yh.shape[2]
    for b in range(n):
        for py in range(ph):
            for px in range(pw):
                r0 = (b * oh + 2 * py) * ow + 2 * px
                r1, r2 = r0 + 1, r0 + ow
                r3 = r2 + 1
                for u in range(o):
                    bu = bias[u]
                    a0, a1 = z[r0, u] + bu, z[r1, u] + bu
                    a2, a3 = z[r2, u] + bu, z[r3, u] + bu
                    t1 = a1 > a0
                    m01, i01 = (a1, r1) if t1 else (a0, r0)
                    t3 = a3 > a2
                    m23, i23 = (a3, r3) if t3 else (a2, r2)
                    t = m23 > m01
                    v, k = (m23, i23) if t else (m01, i01)
                    if (a0 != a0) | (a1 != a1) | (a2 != a2) | (a3 != a3):
                        v = np.nan
                    elif relu and v <= 0:
                        v = 0
                        k = -1
                    yh[b, py, px, u] = v
                    arg[b, py, px, u] = k


@njit(cache=True)
def _unpool_2x2(dyh, arg, oh, ow, dz, db):
    """_unpool for 2x2/stride-2 windows, writing EVERY row of dz (the gradient
    or 0), so dz needs no zero fill; an odd last row/column gets zeros."""
    n, ph, pw, o = dyh.shape
    acc = np.zeros(o, np.float64)
    for b in range(n):
        for py in range(ph):
            for px in range(pw):
                r0 = (b * oh + 2 * py) * ow + 2 * px
                for r in (r0, r0 + 1, r0 + ow, r0 + ow + 1):
                    for u in range(o):
                        dz[r, u] = 0
                for u in range(o):
                    k = arg[b, py, px, u]
                    if k >= 0:
                        g = dyh[b, py, px, u]
                        dz[k, u] = g
                        acc[u] += g
        for y in range(oh):
            for x in range(ow):
                if y >= 2 * ph or x >= 2 * pw:
                    r = (b * oh + y) * ow + x
                    for u in range(o):
                        dz[r, u] = 0
    for u in range(o):
        db[u] = acc[u]


@njit(cache=True)
def _unpool(dyh, arg, dz, db):
    """dz[arg, o] += dyh (N, ph, pw, O); db[o] = the sum of what was scattered."""
    n, ph, pw, o = dyh.shape
    acc = np.zeros(o, np.float64)
    for b in range(n):
        for py in range(ph):
            for px in range(pw):
                for u in range(o):
                    k = arg[b, py, px, u]
                    if k >= 0:
                        g = dyh[b, py, px, u]
                        dz[k, u] += g
                        acc[u] += g
    for u in range(o):
        db[u] = acc[u]


# ------------------------------------------------------------------ LSTM

def _lstm_forward(x, W, H, b, go_backwards):
    """x (N, T, F) -> (N, T, h); gates i, f, g, o (docs/ir.md).

    Internally time-major, with the gate rows reordered to i, f, o, g and
    scaled by -1 (i, f, o) and -2 (g), so the pre-activations come out of the
    GEMMs ready for ONE numpy exp pass per step (numpy's exp is SIMD; numba's
    is a scalar libm call and its tanh is 7x slower still):
    sigmoid(z) = 1 / (1 + exp(-z)), tanh(z) = 2 / (1 + exp(-2z)) - 1.
    Everything else of a step is two fused numba passes.
    """
    n, T, F = x.shape
    hs = H.shape[1]
    perm = np.r_[0:2 * hs, 3 * hs:4 * hs, 2 * hs:3 * hs]
    scale = np.full((4 * hs, 1), -1, x.dtype)
    scale[3 * hs:] = -2
    Ws, Hs, bs = W[perm] * scale, H[perm] * scale, b[perm] * scale[:, 0]
    xt = np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(T * n, F)
    gates = (xt @ Ws.T).reshape(T, n, 4 * hs)
    gates += bs
    cs = np.empty((T, n, hs), x.dtype)
    tcs = np.empty((T, n, hs), x.dtype)
    hseq = np.empty((T, n, hs), x.dtype)
    HsT = Hs.T
    h = None
    c = np.zeros((n, hs), x.dtype)
    tmp = np.empty((n, 4 * hs), x.dtype)
    one = x.dtype.type(1)  # typed constants keep numba's arithmetic in float32 (1.6x faster)
    for t in (range(T - 1, -1, -1) if go_backwards else range(T)):
        a = gates[t]
        if h is not None:
            np.matmul(h, HsT, out=tmp)
            a += tmp
        np.exp(a, out=a)
        _lstm_gates_cell(a, c, cs[t], tcs[t], one)
        np.exp(tcs[t], out=tcs[t])
        h = hseq[t]
        _lstm_hidden(a, tcs[t], h, one)
        c = cs[t]
    cache = (xt, W, H[perm], perm, gates, cs, tcs, hseq, go_backwards, x.shape)
    return hseq.transpose(1, 0, 2).copy(), cache


@njit(cache=True, error_model="numpy")
def _lstm_gates_cell(a, c_prev, c, u, one):
    """a holds exp(-z) (i, f, o) and exp(-2z) (g): activate the gates in place,
    c = f * c_prev + i * g, and u = -2c for the next exp (tanh(c))."""
    n, hs = c.shape
    two = one + one
    for b in range(n):
        for k in range(3 * hs):
            a[b, k] = one / (one + a[b, k])
        for k in range(hs):
            g = two / (one + a[b, 3 * hs + k]) - one
            a[b, 3 * hs + k] = g
            ck = a[b, k] * g + a[b, hs + k] * c_prev[b, k]
            c[b, k] = ck
            u[b, k] = -two * ck


@njit(cache=True, error_model="numpy")
def _lstm_hidden(a, tc, h, one):
    """tc holds exp(-2c): tc <- tanh(c); h = o * tanh(c)."""
    n, hs = h.shape
    for b in range(n):
        for k in range(hs):
            t = (one + one) / (one + tc[b, k]) - one
            tc[b, k] = t
            h[b, k] = a[b, 2 * hs + k] * t


def _lstm_backward(dy, cache, need_dx):
    """BPTT; returns (dx or None, dW, dH, db) in the canonical gate order."""
    xt, W, Hp, perm, gates, cs, tcs, hseq, go_backwards, xshape = cache
    T, n, hs = hseq.shape
    dyt = np.ascontiguousarray(dy.transpose(1, 0, 2))
    live = dyt.reshape(T, -1).any(axis=1)  # SelectLast leaves all steps but one at 0
    order = range(T) if go_backwards else range(T - 1, -1, -1)
    prev = 1 if go_backwards else -1  # the step processed just before t is t + prev
    dzs = np.empty_like(gates)
    dh = np.empty((n, hs), gates.dtype)
    dc = np.zeros((n, hs), gates.dtype)
    zeros = np.zeros((n, hs), gates.dtype)
    one = gates.dtype.type(1)
    first = True
    for t in order:
        p = t + prev
        if first:
            dh[...] = dyt[t]
            first = False
        else:
            np.matmul(dzs[t - prev], Hp, out=dh)
            if live[t]:
                dh += dyt[t]
        _lstm_cell_bwd(dh, dc, gates[t], cs[p] if 0 <= p < T else zeros, tcs[t], dzs[t], one)
    dz2 = dzs.reshape(T * n, 4 * hs)
    dWp = dz2.T @ xt
    # z_t reads h_{t+prev}; the first step read zeros and adds nothing to dH.
    if go_backwards:
        dHp = dzs[:-1].reshape(-1, 4 * hs).T @ hseq[1:].reshape(-1, hs)
    else:
        dHp = dzs[1:].reshape(-1, 4 * hs).T @ hseq[:-1].reshape(-1, hs)
    dbp = dz2.sum(axis=0)
    inv = np.argsort(perm)
    dx = None
    if need_dx:
        dx = (dz2 @ W[perm]).reshape(T, n, -1).transpose(1, 0, 2).copy()
    return dx, dWp[inv], dHp[inv], dbp[inv]


@njit(cache=True)
def _lstm_cell_bwd(dh, dc, a, c_prev, tc, dz, one):
    """One step back through the cell with gates a = (i, f, o, g) activated.
    dc carries the cell gradient from the later step in and out (in place)."""
    n, hs = dh.shape
    for b in range(n):
        for k in range(hs):
            ig = a[b, k]
            fg = a[b, hs + k]
            og = a[b, 2 * hs + k]
            gg = a[b, 3 * hs + k]
            t = tc[b, k]
            d = dh[b, k]
            dcv = dc[b, k] + d * og * (one - t * t)
            dz[b, k] = dcv * gg * ig * (one - ig)
            dz[b, hs + k] = dcv * c_prev[b, k] * fg * (one - fg)
            dz[b, 2 * hs + k] = d * t * og * (one - og)
            dz[b, 3 * hs + k] = dcv * ig * (one - gg * gg)
            dc[b, k] = dcv * fg
