"""Checkpoints: everything a resumed run needs to continue bit for bit.

A checkpoint is an .npz holding
- param/<name>: every parameter (the weight-file rule of weights.py applies);
- optim/<hyper>: the optimizer's scalar hyperparameters (lr, momentum, ...);
- optim/step/<name>: how many updates each trainable parameter has had;
- optim/<slot>/<name>: per-parameter optimizer state, float32, the parameter's shape;
- meta: one JSON string (written by Trainer: epoch, step, seed, rng state, ...).

read() validates every array (name, shape, dtype, finiteness, range) and every
meta field before anything runs, headers before data. The numba optimizer
kernels index their state with the parameter's indices, so an unchecked short
array would be written out of bounds: a crafted file must be a diagnostic,
never a crash. Problems are E703 at FILE:1:1 (param/ entries: the weight-file
codes E602-E607, located at the layer).

Writes go through weights.atomic_savez (fsync, rename): a SIGKILL at any
moment leaves the previous checkpoint or the new one, never half of one.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np

from .. import ir
from ..errors import Diagnostic, NetdslError, Span
from .weights import NpzArchive, atomic_savez, check_params

E_CHECKPOINT = "E703"
CHECKPOINT_FORMAT = 1
MAX_META_BYTES = 64 << 20  # the history grows by ~200 bytes an epoch
_MAX_INT = 2**63 - 1

# Valid values of each optimizer hyperparameter (optim.*.hyper).
_HYPER = {
    "lr": (lambda v: 0 < v < math.inf, "a positive number"),
    "momentum": (lambda v: 0 <= v < math.inf, "a number >= 0"),
    "beta1": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "beta2": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "rho": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "eps": (lambda v: 0 < v < math.inf, "a positive number"),
}
_NONNEGATIVE_SLOTS = ("exp_avg_sq", "square_avg", "acc_delta")  # a sqrt is taken of them


@dataclass
class Checkpoint:
    path: str
    params: dict  # canonical name -> float32 array
    optim_state: dict  # optimizer.load_state_dict() input
    meta: dict


def write(path, params: dict, optimizer, meta: dict) -> None:
    arrays = {f"param/{k}": v for k, v in params.items()}
    for k, v in optimizer.state_dict().items():
        arrays[f"optim/{k}"] = np.asarray(v)
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_savez(path, arrays)


class _Reader:
    def __init__(self, path):
        self.path = os.fspath(path)
        self.span = Span(self.path, 1, 1, 1, 1)

    def fail(self, message):
        raise NetdslError(Diagnostic(E_CHECKPOINT, message, self.span))


def read(path, graph: ir.Graph, optimizer, dtype=np.float32) -> Checkpoint:
    """Read and validate the checkpoint at `path` for `graph` trained with
    `optimizer` (an optim.* instance: its class gives the hyperparameters and
    state slots to expect). Raises NetdslError; never returns bad data."""
    r = _Reader(path)
    with NpzArchive(path) as z:
        if "meta" not in z.headers:
            r.fail("not a netdsl checkpoint (no 'meta' entry)")
        h = z.headers["meta"]
        if h.shape != () or h.dtype.kind != "U" or z.nbytes("meta") > MAX_META_BYTES:
            r.fail(f"not a netdsl checkpoint ('meta' is {h.dtype}{h.shape}, expected one JSON string)")
        meta = _check_meta(r, z.read("meta"), graph, optimizer)
        params_h = {k[6:]: v for k, v in z.headers.items() if k.startswith("param/")}
        check_params(params_h, graph, path, dtype)  # names, shapes, dtypes: before reading data
        expect = _expected_state(r, z.headers, graph, optimizer, dtype)
        params = check_params({k: z.read("param/" + k) for k in params_h}, graph, path, dtype)
        state = {k: z.read("optim/" + k) for k in expect}
    _check_state_values(r, state, optimizer)
    return Checkpoint(r.path, params, state, meta)


# ---------------------------------------------------------------------- meta

def _int(r, meta, key, low, allow_none=False):
    v = meta.get(key)
    if v is None and allow_none:
        return
    if type(v) is not int or not low <= v <= _MAX_INT:
        r.fail(f"checkpoint meta: '{key}' must be an integer >= {low}, got {_show(v)}")


def _show(v) -> str:
    text = json.dumps(v) if not isinstance(v, float) or math.isfinite(v) else str(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_meta(r, arr, graph, optimizer) -> dict:
    try:
        meta = json.loads(str(arr[()]))
    except (ValueError, RecursionError) as e:
        r.fail(f"not a netdsl checkpoint (meta is not JSON: {type(e).__name__})")
    if not isinstance(meta, dict):
        r.fail(f"not a netdsl checkpoint (meta is a JSON {type(meta).__name__}, not an object)")
    if meta.get("format") != CHECKPOINT_FORMAT or type(meta.get("format")) is not int:
        r.fail(f"not a netdsl checkpoint (checkpoint format {_show(meta.get('format'))}, "
               f"expected {CHECKPOINT_FORMAT})")
    for key in ("model", "optimizer", "loss"):
        if not isinstance(meta.get(key), str):
            r.fail(f"checkpoint meta: '{key}' must be a string, got {_show(meta.get(key))}")
    if meta["model"] != graph.name:
        r.fail(f"checkpoint is of model {meta['model']}, not {graph.name}")
    opt_name = type(optimizer).__name__.removeprefix("Fused")
    if meta["optimizer"] != opt_name:
        r.fail(f"checkpoint was trained with {meta['optimizer']}, the model now says {opt_name}")
    _int(r, meta, "seed", 0)
    _int(r, meta, "epoch", 0)
    _int(r, meta, "step", 0)
    _int(r, meta, "global_step", 0)
    _int(r, meta, "batch_size", 1)
    _int(r, meta, "n_train", 1)
    _int(r, meta, "threads", 1, allow_none=True)
    steps = -(-meta["n_train"] // meta["batch_size"])
    if meta["step"] >= steps:
        r.fail(f"checkpoint meta: 'step' is {meta['step']}, but an epoch of {meta['n_train']} samples "
               f"in batches of {meta['batch_size']} has {steps} steps")
    rs = meta.get("rng_state")
    if rs is None:
        if meta["step"]:
            r.fail("checkpoint meta: 'rng_state' is missing, but the checkpoint is mid-epoch")
    else:
        bit_gen = np.random.PCG64()
        try:
            if not isinstance(rs, dict) or rs.get("bit_generator") != "PCG64":
                raise ValueError("not a PCG64 state")
            bit_gen.state = rs
        except (ValueError, TypeError, KeyError, OverflowError) as e:
            r.fail(f"checkpoint meta: 'rng_state' is not a valid random generator state ({e})")
    running = meta.get("running")
    if not (isinstance(running, dict) and set(running) == {"loss", "correct", "seen"}
            and _number(running["loss"]) and all(type(running[k]) is int and 0 <= running[k] <= _MAX_INT
                                                 for k in ("correct", "seen"))):
        r.fail(f"checkpoint meta: 'running' must be {{\"loss\": number, \"correct\": int, \"seen\": int}}, "
               f"got {_show(running)}")
    history = meta.get("history")
    if not (isinstance(history, list)
            and all(isinstance(e, dict) and all(_number(v) for v in e.values()) for e in history)):
        r.fail(f"checkpoint meta: 'history' must be a list of objects of numbers, got {_show(history)}")
    return meta


def _number(v) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


# --------------------------------------------------------- optimizer state

def _expected_state(r, headers, graph, optimizer, dtype) -> list:
    """Check every optim/ entry's name, shape and dtype from its header;
    returns the state keys (without 'optim/') to read."""
    shapes = {p.name: tuple(p.shape) for p in graph.params() if p.trainable}
    keys = [k[6:] for k in headers if k.startswith("optim/")]
    unexpected = [k for k in headers if k != "meta" and not k.startswith(("param/", "optim/"))]
    if unexpected:
        r.fail(f"unexpected entry '{unexpected[0]}'")
    slots = (*optimizer.slots, "step")
    for key in keys:
        h = headers["optim/" + key]
        slot, _, name = key.partition("/")
        if key in optimizer.hyper:
            want = "b" if key == "nesterov" else "fiu"
            if h.shape != () or h.dtype.kind not in want:
                r.fail(f"optimizer hyperparameter 'optim/{key}' is {h.dtype}{h.shape}, expected a scalar")
        elif slot in slots and name in shapes:
            if slot == "step":
                if h.shape != () or h.dtype.kind not in "iu":
                    r.fail(f"'optim/{key}' is {h.dtype}{h.shape}, expected an integer scalar")
            elif h.shape != shapes[name] or h.dtype != np.dtype(dtype):
                r.fail(f"optimizer state 'optim/{key}' is {h.dtype}{h.shape}, expected "
                       f"{np.dtype(dtype)}{shapes[name]} like parameter '{name}'")
        else:
            r.fail(f"unexpected optimizer state entry 'optim/{key}' ({type(optimizer).__name__} "
                   f"keeps {', '.join(optimizer.hyper)}, step/<param> and "
                   f"{', '.join(s + '/<param>' for s in optimizer.slots) or 'no other state'})")
    missing = [k for k in optimizer.hyper if k not in keys]
    if missing:
        r.fail(f"optimizer hyperparameter 'optim/{missing[0]}' is missing")
    return keys


def _check_state_values(r, state, optimizer) -> None:
    for key, v in state.items():
        slot, _, name = key.partition("/")
        if key == "nesterov":
            continue
        if key in optimizer.hyper:
            ok, what = _HYPER.get(key, (lambda x: math.isfinite(x), "a finite number"))
            x = float(v)
            if not (math.isfinite(x) and ok(x)):
                r.fail(f"optimizer hyperparameter 'optim/{key}' is {x}, expected {what}")
        elif slot == "step":
            if not 1 <= int(v) <= _MAX_INT:
                r.fail(f"'optim/{key}' is {int(v)}, expected a step count >= 1")
        else:
            if not np.isfinite(v).all():
                r.fail(f"optimizer state 'optim/{key}' holds NaN/Inf")
            if slot in _NONNEGATIVE_SLOTS and (v < 0).any():
                r.fail(f"optimizer state 'optim/{key}' holds negative values (it is a mean of squares)")
    if "nesterov" in state and bool(state["nesterov"]) and not float(state["momentum"]) > 0:
        r.fail("optimizer state has nesterov set without momentum")
    # Each slot holds exactly the stepped parameters (SGD without momentum: none).
    stepped = {k[5:] for k in state if k.startswith("step/")}
    for slot in optimizer.slots:
        names = {k[len(slot) + 1:] for k in state if k.startswith(slot + "/")}
        want = set() if slot == "momentum_buffer" and not float(state["momentum"]) else stepped
        if names != want:
            odd = sorted(names ^ want)[0]
            r.fail(f"optimizer state is inconsistent: parameter '{odd}' has "
                   f"{'a' if odd in names else 'no'} '{slot}' entry, but "
                   f"{'no step count' if odd not in stepped else 'momentum is 0' if not want else 'a step count'}")
