"""Weight initializers of the native executor.

Every function takes (shape, rng, ...) with rng a numpy Generator and
returns a new array of dtype float32 unless told otherwise.  Fans default to
the canonical layouts: dense W (out, in) has fan_in = in, fan_out = out;
conv W OIHW has fan_in = I*kh*kw, fan_out = O*kh*kw.  Layers whose fans are
not those of their shape (e.g. the stacked LSTM gate matrices) pass them.
"""

import math

import numpy as np


def fans(shape):
    """(fan_in, fan_out) of a weight in canonical layout."""
    shape = tuple(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _fans(shape, fan_in, fan_out):
    fi, fo = fans(shape)
    return (fi if fan_in is None else fan_in), (fo if fan_out is None else fan_out)


def glorot_uniform(shape, rng, fan_in=None, fan_out=None, dtype=np.float32):
    fi, fo = _fans(shape, fan_in, fan_out)
    limit = math.sqrt(6 / (fi + fo))
    return rng.uniform(-limit, limit, shape).astype(dtype)


def glorot_normal(shape, rng, fan_in=None, fan_out=None, dtype=np.float32):
    fi, fo = _fans(shape, fan_in, fan_out)
    return (rng.standard_normal(shape) * math.sqrt(2 / (fi + fo))).astype(dtype)


def he_uniform(shape, rng, fan_in=None, fan_out=None, dtype=np.float32):
    """kaiming_uniform for ReLU: limit sqrt(6/fan_in)."""
    fi, _ = _fans(shape, fan_in, fan_out)
    limit = math.sqrt(6 / fi)
    return rng.uniform(-limit, limit, shape).astype(dtype)


def he_normal(shape, rng, fan_in=None, fan_out=None, dtype=np.float32):
    fi, _ = _fans(shape, fan_in, fan_out)
    return (rng.standard_normal(shape) * math.sqrt(2 / fi)).astype(dtype)


def uniform(shape, rng, scale=0.05, dtype=np.float32, **_fans_unused):
    """U(-scale, scale), like CNTK's uniform(scale)."""
    return rng.uniform(-scale, scale, shape).astype(dtype)


def normal(shape, rng, std=0.05, dtype=np.float32, **_fans_unused):
    return (rng.standard_normal(shape) * std).astype(dtype)


def constant(shape, rng=None, value=0.0, dtype=np.float32, **_fans_unused):
    return np.full(shape, value, dtype=dtype)


def zeros(shape, rng=None, dtype=np.float32, **_fans_unused):
    return np.zeros(shape, dtype=dtype)


def ones(shape, rng=None, dtype=np.float32, **_fans_unused):
    return np.ones(shape, dtype=dtype)


INITIALIZERS = {
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "he_uniform": he_uniform,
    "kaiming_uniform": he_uniform,
    "he_normal": he_normal,
    "kaiming_normal": he_normal,
    "uniform": uniform,
    "normal": normal,
    "constant": constant,
    "zeros": zeros,
    "ones": ones,
}


def initialize(name, shape, rng, **kwargs):
    """INITIALIZERS[name](shape, rng, **kwargs) with a clear error for unknown names."""
    try:
        fn = INITIALIZERS[name]
    except KeyError:
        raise ValueError(f"unknown initializer {name!r}; known: {sorted(INITIALIZERS)}") from None
    return fn(shape, rng, **kwargs)
