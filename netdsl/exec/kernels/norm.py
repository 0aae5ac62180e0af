"""BatchNormalization and LayerNormalization. Batch norm momentum is the
weight of the new statistic (PyTorch); the running variance is updated with
the unbiased batch variance. The pure functions never mutate their
arguments: batch_norm_forward returns the new running statistics and the
kernel stores them (once per application, in training mode only)."""
from __future__ import annotations

import numpy as np

from . import Kernel, register
from .activation import feature_axis


def _bn_axes(x):
    if x.ndim == 4:
        return (0, 2, 3), (1, -1, 1, 1)
    if x.ndim == 2:
        return (0,), (1, -1)
    if x.ndim == 3:
        return (0, 1), (1, 1, -1)
    raise ValueError(f"batch_norm: unsupported input shape {x.shape}")


def batch_norm_forward(x, scale, bias, running_mean, running_var,
                       momentum=0.1, eps=1e-5, training=True):
    """Per-channel batch norm: channels are axis 1 of NCHW, the last axis of
    (N, F) and (N, T, F).

    Returns (y, cache, new_running_mean, new_running_var).  The running
    statistics are not mutated; in eval mode the given arrays come back.
    scale/bias may be None (no affine transform).
    """
    axes, bshape = _bn_axes(x)
    m = x.size // x.shape[feature_axis(x)]
    if training:
        if m < 2:
            raise ValueError("batch_norm: training needs more than one value per channel")
        mean = x.mean(axis=axes)
        var = x.var(axis=axes)
        unbiased = var * (m / (m - 1))
        new_mean = (1 - momentum) * running_mean + momentum * mean.astype(running_mean.dtype)
        new_var = (1 - momentum) * running_var + momentum * unbiased.astype(running_var.dtype)
    else:
        mean = running_mean.astype(x.dtype, copy=False)
        var = running_var.astype(x.dtype, copy=False)
        new_mean, new_var = running_mean, running_var
    inv = 1 / np.sqrt(var + eps)
    xhat = (x - mean.reshape(bshape)) * inv.reshape(bshape)
    y = xhat
    if scale is not None:
        y = y * scale.reshape(bshape)
    if bias is not None:
        y = y + bias.reshape(bshape)
    cache = (training, xhat, inv, scale, bias is not None, axes, bshape, m)
    return y, cache, new_mean, new_var


def batch_norm_backward(dy, cache):
    """Returns (dx, dscale, dbias); through the batch statistics when training."""
    training, xhat, inv, scale, has_bias, axes, bshape, m = cache
    dscale = (dy * xhat).sum(axis=axes) if scale is not None else None
    dbias = dy.sum(axis=axes) if has_bias else None
    dxhat = dy * scale.reshape(bshape) if scale is not None else dy
    if training:
        s1 = dxhat.sum(axis=axes).reshape(bshape)
        s2 = (dxhat * xhat).sum(axis=axes).reshape(bshape)
        dx = (inv.reshape(bshape) / m) * (m * dxhat - s1 - xhat * s2)
    else:
        dx = dxhat * inv.reshape(bshape)
    return dx, dscale, dbias


def _ln_axes(x):
    # Sequences normalise each time step on its own, like nn.LayerNorm(F).
    return (x.ndim - 1,) if x.ndim == 3 else tuple(range(1, x.ndim))


def layer_norm_forward(x, scale, bias, eps=1e-5):
    """scale/bias have the shape of the normalised axes: x.shape[1:] for
    images and vectors, (F,) for sequences."""
    axes = _ln_axes(x)
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    inv = 1 / np.sqrt(var + eps)
    xhat = (x - mean) * inv
    y = xhat
    if scale is not None:
        y = y * scale
    if bias is not None:
        y = y + bias
    return y, (xhat, inv, scale, bias is not None, axes)


def layer_norm_backward(dy, cache):
    """Returns (dx, dscale, dbias)."""
    xhat, inv, scale, has_bias, axes = cache
    batch_axes = tuple(a for a in range(dy.ndim) if a not in axes)
    dscale = (dy * xhat).sum(axis=batch_axes) if scale is not None else None
    dbias = dy.sum(axis=batch_axes) if has_bias else None
    dxhat = dy * scale if scale is not None else dy
    m = int(np.prod([dy.shape[a] for a in axes]))
    s1 = dxhat.sum(axis=axes, keepdims=True)
    s2 = (dxhat * xhat).sum(axis=axes, keepdims=True)
    dx = (inv / m) * (m * dxhat - s1 - xhat * s2)
    return dx, dscale, dbias


@register("BatchNormalization")
class BatchNormalization(Kernel):
    def forward(self, call, xs, training, rng):
        rm, rv = call.p("running_mean"), call.p("running_var")
        y, cache, new_mean, new_var = batch_norm_forward(
            xs[0], call.opt("scale"), call.opt("bias"), rm, rv,
            momentum=float(call.attr("momentum", 0.1)), eps=float(call.attr("epsilon", 1e-5)),
            training=training)
        if training:  # non-trainable state: updated in place, once per application
            rm[...] = new_mean
            rv[...] = new_var
        return y, cache

    def backward(self, call, dy, cache, need):
        dx, dscale, dbias = batch_norm_backward(dy, cache)
        return [dx], {"scale": dscale, "bias": dbias}


@register("LayerNormalization")
class LayerNormalization(Kernel):
    def forward(self, call, xs, training, rng):
        return layer_norm_forward(xs[0], call.opt("scale"), call.opt("bias"), eps=float(call.attr("epsilon", 1e-5)))

    def backward(self, call, dy, cache, need):
        dx, dscale, dbias = layer_norm_backward(dy, cache)
        return [dx], {"scale": dscale, "bias": dbias}
