"""Optimizers of the native executor, step for step the same as torch.optim.

They update dict[str, ndarray] parameters in place from a dict of gradients
with the same keys (a missing or None gradient leaves that parameter and its
state alone, like a torch parameter whose .grad is None).

state_dict() is flat so it can go straight into np.savez: hyperparameters
as scalars, per-parameter state as "<slot>/<param name>" arrays (copies).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .. import ir
from ..errors import Diagnostic, NetdslError, NO_SPAN

E_UNSUPPORTED = "E704"  # the training block names an optimizer the executor lacks


class _Optimizer:
    hyper = ()   # names of the scalar hyperparameters kept in state_dict
    slots = ()   # names of the per-parameter state arrays

    def __init__(self):
        self.state = {slot: {} for slot in self.slots}
        self.steps = {}  # parameter name -> number of updates, like torch's "step"

    def step(self, params, grads):
        for name, p in params.items():
            g = grads.get(name)
            if g is None:
                continue
            if g.shape != p.shape:
                raise ValueError(f"gradient of {name} has shape {g.shape}, parameter {p.shape}")
            self.steps[name] = self.steps.get(name, 0) + 1
            self._update(name, p, g.astype(p.dtype, copy=False))

    def _slot(self, slot, name, like):
        buf = self.state[slot].get(name)
        if buf is None:
            buf = np.zeros_like(like)
            self.state[slot][name] = buf
        return buf

    def state_dict(self):
        out = {k: getattr(self, k) for k in self.hyper}
        for name, n in self.steps.items():
            out[f"step/{name}"] = n
        for slot, bufs in self.state.items():
            for name, buf in bufs.items():
                out[f"{slot}/{name}"] = buf.copy()
        return out

    def load_state_dict(self, sd):
        self.state = {slot: {} for slot in self.slots}
        self.steps = {}
        for key, value in sd.items():
            if key in self.hyper:
                setattr(self, key, type(getattr(self, key))(value))
                continue
            slot, sep, name = key.partition("/")
            if not sep:
                raise KeyError(f"unexpected optimizer state key {key!r}")
            if slot == "step":
                self.steps[name] = int(value)
            elif slot in self.state:
                self.state[slot][name] = np.array(value, copy=True)
            else:
                raise KeyError(f"unexpected optimizer state key {key!r}")


class SGD(_Optimizer):
    """torch.optim.SGD without dampening or weight decay: the first step's
    buffer is the gradient itself, later buf = momentum*buf + g; nesterov
    steps along g + momentum*buf."""

    hyper = ("lr", "momentum", "nesterov")
    slots = ("momentum_buffer",)

    def __init__(self, lr, momentum=0.0, nesterov=False):
        if nesterov and momentum <= 0:
            raise ValueError("nesterov momentum needs momentum > 0")
        self.lr, self.momentum, self.nesterov = float(lr), float(momentum), bool(nesterov)
        super().__init__()

    def _update(self, name, p, g):
        if self.momentum:
            bufs = self.state["momentum_buffer"]
            buf = bufs.get(name)
            if buf is None:
                buf = bufs[name] = g.copy()
            else:
                buf *= self.momentum
                buf += g
            g = g + self.momentum * buf if self.nesterov else buf
        p -= self.lr * g


class Adam(_Optimizer):
    """torch.optim.Adam defaults (no amsgrad, no weight decay)."""

    hyper = ("lr", "beta1", "beta2", "eps")
    slots = ("exp_avg", "exp_avg_sq")

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.beta1, self.beta2, self.eps = float(lr), float(beta1), float(beta2), float(eps)
        super().__init__()

    def _update(self, name, p, g):
        m = self._slot("exp_avg", name, p)
        v = self._slot("exp_avg_sq", name, p)
        t = self.steps[name]
        m += (1 - self.beta1) * (g - m)  # torch uses lerp, same formula
        v *= self.beta2
        v += (1 - self.beta2) * g * g
        step_size = self.lr / (1 - self.beta1 ** t)
        denom = np.sqrt(v) / math.sqrt(1 - self.beta2 ** t) + self.eps
        p -= step_size * m / denom


class Adadelta(_Optimizer):
    """torch.optim.Adadelta (no weight decay)."""

    hyper = ("lr", "rho", "eps")
    slots = ("square_avg", "acc_delta")

    def __init__(self, lr=1.0, rho=0.9, eps=1e-6):
        self.lr, self.rho, self.eps = float(lr), float(rho), float(eps)
        super().__init__()

    def _update(self, name, p, g):
        sq = self._slot("square_avg", name, p)
        acc = self._slot("acc_delta", name, p)
        sq *= self.rho
        sq += (1 - self.rho) * g * g
        delta = np.sqrt(acc + self.eps) / np.sqrt(sq + self.eps) * g
        acc *= self.rho
        acc += (1 - self.rho) * delta * delta
        p -= self.lr * delta


class RMSProp(_Optimizer):
    """torch.optim.RMSprop: v = rho*v + (1-rho)*g*g, with centered a = rho*a + (1-rho)*g and
    v - a*a in place of v; the step divides g by sqrt(v) + eps (PyTorch) or, with eps_inside_sqrt,
    by sqrt(v + eps) (TensorFlow and Keras); momentum keeps buf = momentum*buf + g/denominator and
    steps lr*buf."""

    hyper = ("lr", "rho", "eps", "momentum", "centered", "eps_inside_sqrt")
    slots = ("square_avg", "grad_avg", "momentum_buffer")

    def __init__(self, lr=0.01, rho=0.99, eps=1e-8, momentum=0.0, centered=False, eps_inside_sqrt=False):
        self.lr, self.rho, self.eps, self.momentum = float(lr), float(rho), float(eps), float(momentum)
        self.centered, self.eps_inside_sqrt = bool(centered), bool(eps_inside_sqrt)
        super().__init__()

    def _update(self, name, p, g):
        v = self._slot("square_avg", name, p)
        v *= self.rho
        v += (1 - self.rho) * g * g
        var = v
        if self.centered:
            a = self._slot("grad_avg", name, p)
            a += (1 - self.rho) * (g - a)  # torch's lerp
            var = v - a * a
        denom = np.sqrt(var + self.eps) if self.eps_inside_sqrt else np.sqrt(var) + self.eps
        if self.momentum:
            buf = self._slot("momentum_buffer", name, p)
            buf *= self.momentum
            buf += g / denom
            p -= self.lr * buf
        else:
            p -= self.lr * g / denom


class Adagrad(_Optimizer):
    """torch.optim.Adagrad without lr_decay: s += g*g (s starts at initial_accumulator);
    p -= lr * g / (sqrt(s) + eps)."""

    hyper = ("lr", "eps", "initial_accumulator")
    slots = ("sum",)

    def __init__(self, lr=0.01, eps=1e-10, initial_accumulator=0.0):
        self.lr, self.eps, self.initial_accumulator = float(lr), float(eps), float(initial_accumulator)
        super().__init__()

    def _update(self, name, p, g):
        s = self.state["sum"].get(name)
        if s is None:
            s = self.state["sum"][name] = np.full_like(p, self.initial_accumulator)
        s += g * g
        p -= self.lr * g / (np.sqrt(s) + self.eps)


# ------------------------------------------------------------ fused (numba)
# What training uses: the same operations in one pass per parameter.

class FusedSGD(SGD):
    """SGD with each parameter's update in one numba pass instead of
    three or four numpy passes; the same float32 operations in the same order,
    so the results are bit-identical (tests/test_exec_train.py checks it)."""

    def _update(self, name, p, g):
        if not (p.flags.c_contiguous and p.dtype == g.dtype):
            return super()._update(name, p, g)
        bufs = self.state["momentum_buffer"]
        t = p.dtype.type
        if self.momentum and name not in bufs:
            bufs[name] = g.copy()
            first = True
        else:
            first = False
        buf = bufs.get(name, p)  # unused without momentum
        _check_slot(name, p, buf)
        _sgd_kernel(p.reshape(-1), np.ascontiguousarray(g).reshape(-1), buf.reshape(-1), t(self.lr),
                    t(self.momentum), bool(self.momentum), bool(self.nesterov), first)


class FusedAdam(Adam):
    """Adam in one numba pass per parameter, bit-identical to it."""

    def _update(self, name, p, g):
        if not (p.flags.c_contiguous and p.dtype == g.dtype):
            return super()._update(name, p, g)
        m = self._slot("exp_avg", name, p)
        v = self._slot("exp_avg_sq", name, p)
        _check_slot(name, p, m)
        _check_slot(name, p, v)
        n = self.steps[name]
        t = p.dtype.type
        _adam_kernel(p.reshape(-1), np.ascontiguousarray(g).reshape(-1), m.reshape(-1), v.reshape(-1),
                     t(1 - self.beta1), t(self.beta2), t(1 - self.beta2),
                     t(self.lr / (1 - self.beta1 ** n)), t(math.sqrt(1 - self.beta2 ** n)), t(self.eps))


def _check_slot(name, p, buf):
    # The kernels index buf with p's indices: a short or strided state array
    # (a crafted checkpoint) would be written out of bounds, not rejected.
    if buf.shape != p.shape or buf.dtype != p.dtype or not buf.flags.c_contiguous:
        raise ValueError(f"optimizer state of {name} is {buf.dtype}{buf.shape}, the parameter {p.dtype}{p.shape}")


@njit(cache=True)
def _sgd_kernel(p, g, buf, lr, momentum, use_momentum, nesterov, first):
    # Mirrors SGD: buf = momentum*buf + g (buf = g on the first step),
    # the step is g + momentum*buf with nesterov, else buf; p -= lr*step.
    for k in range(p.shape[0]):
        d = g[k]
        if use_momentum:
            b = buf[k] if first else buf[k] * momentum + d
            buf[k] = b
            d = d + momentum * b if nesterov else b
        p[k] = p[k] - lr * d


@njit(cache=True, error_model="numpy")  # IEEE division: no zero check, so it vectorises (7x)
def _adam_kernel(p, g, m, v, one_minus_b1, b2, one_minus_b2, step_size, bc2_sqrt, eps):
    # Mirrors Adam operation for operation (float32 rounding included):
    # m += (1-b1)*(g-m); v = v*b2 + ((1-b2)*g)*g; p -= (step*m) / (sqrt(v)/bc2 + eps)
    for k in range(p.shape[0]):
        gk = g[k]
        mk = m[k] + one_minus_b1 * (gk - m[k])
        vk = v[k] * b2 + one_minus_b2 * gk * gk
        m[k] = mk
        v[k] = vk
        p[k] = p[k] - step_size * mk / (np.sqrt(vk) / bc2_sqrt + eps)


def make_optimizer(training: ir.Training, lr: float | None = None):
    o = dict(training.optimizer_attrs)
    if lr is not None:
        o["lr"] = lr
    name = training.optimizer
    if name == "SGD":
        return FusedSGD(o.get("lr", 0.01), o.get("momentum", 0.0), o.get("nesterov", False))
    if name == "Adam":
        return FusedAdam(o.get("lr", 1e-3), o.get("beta1", 0.9), o.get("beta2", 0.999), o.get("eps", 1e-8))
    if name == "Adadelta":
        return Adadelta(o.get("lr", 1.0), o.get("rho", 0.9), o.get("eps", 1e-6))
    if name == "AdamW":  # Adam; its decoupled weight decay is applied by steprule.StepRule
        return FusedAdam(o.get("lr", 1e-3), o.get("beta1", 0.9), o.get("beta2", 0.999), o.get("eps", 1e-8))
    if name == "RMSProp":
        return RMSProp(o.get("lr", 0.01), o.get("rho", 0.99), o.get("eps", 1e-8), o.get("momentum", 0.0),
                       o.get("centered", False), o.get("eps_inside_sqrt", False))
    if name == "Adagrad":
        return Adagrad(o.get("lr", 0.01), o.get("eps", 1e-10), o.get("initial_accumulator", 0.0))
    raise NetdslError(Diagnostic(E_UNSUPPORTED, f"unsupported optimizer '{name}'", training.span or NO_SPAN))
