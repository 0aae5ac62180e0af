"""Sequence lengths (docs/ir.md, "Variable-length sequence batches"): the helpers every
recurrence kind shares, so a kind only writes its plain forward-in-time loop.

A padded batch is (N, T, ...) with an (N,) int64 `lengths`, padding at the END of each
sequence. A recurrence over it:
- forward in time needs nothing special: steps t < length never read a padded step;
- go_backwards must start at each sample's last valid step. run_masked reverses each
  sample's valid prefix (reverse_valid), runs the FORWARD loop, and reverses back,
  so the backward run is the forward one on other data and needs no loop of its own;
- its output is 0 at padded positions (zero_padding), and so is the gradient that
  reaches a padded step, so padded steps add nothing to any weight gradient.
Not a kernel: no @register here.
"""
from __future__ import annotations

import numpy as np


def valid_mask(lengths, T: int) -> np.ndarray:
    """(N, T) bool: True at valid positions."""
    return np.arange(T)[None, :] < np.asarray(lengths)[:, None]


def check_lengths(lengths, n: int, T: int) -> np.ndarray:
    """lengths as int64 (N,), each in [1, T]; ValueError otherwise."""
    lengths = np.asarray(lengths)
    if lengths.dtype.kind not in "iu" or lengths.shape != (n,):
        raise ValueError(f"lengths must be {n} integers, got dtype {lengths.dtype}, shape {lengths.shape}")
    if n and (lengths.min() < 1 or lengths.max() > T):
        raise ValueError(f"every length must be in [1, {T}], got {int(lengths.min())}..{int(lengths.max())}")
    return lengths.astype(np.int64, copy=False)


def reverse_index(lengths, T: int) -> np.ndarray:
    """(N, T) time index: position t of sample b reads L-1-t for t < L, t otherwise.
    It is its own inverse."""
    t = np.arange(T)[None, :]
    L = np.asarray(lengths)[:, None]
    return np.where(t < L, L - 1 - t, t)


def reverse_valid(x, lengths) -> np.ndarray:
    """x (N, T, ...) with each sample's valid prefix reversed in time; padding stays put."""
    idx = reverse_index(lengths, x.shape[1])
    return x[np.arange(x.shape[0])[:, None], idx]


def zero_padding(y, lengths) -> np.ndarray:
    """y with every padded position set to 0 (in place; returns y)."""
    y[~valid_mask(lengths, y.shape[1])] = 0
    return y


def run_masked(forward, backward, x, lengths, go_backwards: bool):
    """Forward pass of a recurrence on a padded batch, with its forward-in-time loop
    `forward(x) -> (y, cache)` and that loop's `backward(dy, cache, need_dx) -> (dx or None, *grads)`.
    Returns (y, cache for backward_masked)."""
    xin = reverse_valid(x, lengths) if go_backwards else x
    y, cache = forward(xin)
    if go_backwards:
        y = reverse_valid(y, lengths)
    return zero_padding(y, lengths), (backward, cache, lengths, go_backwards)


def backward_masked(dy, mcache, need_dx: bool = True):
    """(dx or None, *param grads) of run_masked's recurrence."""
    backward, cache, lengths, go_backwards = mcache
    dy = zero_padding(dy.copy(), lengths)
    if go_backwards:
        dy = reverse_valid(dy, lengths)
    dx, *grads = backward(dy, cache, need_dx)
    if dx is not None and go_backwards:
        dx = reverse_valid(dx, lengths)
    return (dx, *grads)

