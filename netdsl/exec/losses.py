"""Training losses and metrics of the native executor.

Each loss returns (loss, dpred): the scalar as a Python float and the
gradient of that scalar with respect to its first argument, in its dtype.
Means run over every sample (and time step), like torch's reduction='mean'.
"""

import numpy as np


def _flat_logits(logits, labels):
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels shape {labels.shape} does not match logits {logits.shape}")
    c = logits.shape[-1]
    lab = labels.reshape(-1)
    bad = (lab < 0) | (lab >= c)
    if bad.any():
        raise ValueError(f"label {int(lab[bad][0])} is out of range for {c} classes")
    return logits.reshape(-1, c), lab


def _classes_last(logits):
    """A feature map (N, C, H, W) has its classes on the channel axis (docs/ir.md): move them last."""
    return np.moveaxis(logits, 1, -1) if logits.ndim == 4 else logits


def softmax_cross_entropy(logits, labels):
    """logits (N, C), (N, T, C) or a feature map (N, C, H, W); labels int (N,), (N, T) or (N, H, W).

    Mean of -log softmax(logits)[label], computed from log-sum-exp so large
    logits neither overflow nor lose the label's term. The classes of a feature
    map are its channels, one class per position (docs/ir.md).
    """
    if np.asarray(labels).dtype.kind == "f":
        return soft_cross_entropy(logits, labels)
    z, lab = _flat_logits(_classes_last(logits), labels)
    m = z.shape[0]
    shifted = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    logp = shifted - lse
    rows = np.arange(m)
    loss = -logp[rows, lab].mean()
    d = np.exp(logp)
    d[rows, lab] -= 1
    d /= m
    if logits.ndim == 4:
        n, c, h, w = logits.shape
        return float(loss), np.ascontiguousarray(d.reshape(n, h, w, c).transpose(0, 3, 1, 2))
    return float(loss), d.reshape(logits.shape)


def soft_cross_entropy(logits, targets):
    """The mean over samples (time steps, positions) of -sum(t * log softmax(z)) over the class axis:
    Keras's categorical_crossentropy(from_logits=True), torch's cross_entropy on class probabilities.
    With one-hot rows it equals softmax_cross_entropy on their labels."""
    t = np.asarray(targets, dtype=logits.dtype)
    if t.shape != logits.shape:
        raise ValueError(f"targets shape {t.shape} does not match logits {logits.shape}")
    z = _classes_last(logits)
    t = _classes_last(t)
    c = z.shape[-1]
    z, t = z.reshape(-1, c), t.reshape(-1, c)
    m = z.shape[0]
    shifted = z - z.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -(t * logp).sum(axis=1).mean()
    d = (np.exp(logp) * t.sum(axis=1, keepdims=True) - t) / m
    if logits.ndim == 4:
        n, c, h, w = logits.shape
        return float(loss), np.ascontiguousarray(d.reshape(n, h, w, c).transpose(0, 3, 1, 2))
    return float(loss), d.reshape(logits.shape).astype(logits.dtype, copy=False)


def mse(pred, target):
    """Mean over all elements of (pred - target)**2."""
    if pred.shape != np.shape(target):
        raise ValueError(f"mse: pred shape {pred.shape} != target shape {np.shape(target)}")
    diff = pred - np.asarray(target, dtype=pred.dtype)
    loss = float((diff * diff).mean())
    return loss, (2 / diff.size) * diff


def accuracy(logits, labels):
    """Fraction of samples (and time steps, or positions of a feature map) whose argmax equals the label."""
    z, lab = _flat_logits(_classes_last(logits), labels)
    return float((z.argmax(axis=1) == lab).mean())


def one_hot(labels, pred):
    """Labels (N,) as one-hot float targets shaped like pred (N, K); for K = 1 the label itself (0 or 1)."""
    labels = np.asarray(labels)
    if pred.ndim == 2 and pred.shape[1] == 1:
        return labels.reshape(-1, 1).astype(pred.dtype)
    target = np.zeros(pred.shape, pred.dtype)
    target[np.arange(len(labels)), labels] = 1
    return target


def bce_with_logits(logits, target):
    """Mean over all elements of -t log sigmoid(z) - (1 - t) log(1 - sigmoid(z)), computed as
    max(z, 0) - z t + log(1 + exp(-|z|)) so large |z| neither overflows nor loses precision
    (torch.nn.BCEWithLogitsLoss)."""
    t = np.asarray(target, dtype=logits.dtype)
    if t.shape != logits.shape:
        raise ValueError(f"binary cross-entropy: targets {t.shape} != logits {logits.shape}")
    z = logits
    loss = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
    sig = np.where(z >= 0, 1 / (1 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1 + np.exp(-np.abs(z))))
    return float(loss.mean()), ((sig - t) / z.size).astype(z.dtype)


def half_mse(pred, target):
    """Gluon's L2Loss with trainer.step(batch_size): 0.5 * the mean over all elements of (pred - target)**2."""
    loss, d = mse(pred, target)
    return 0.5 * loss, 0.5 * d
