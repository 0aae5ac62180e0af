"""LSTM, built as Recurrence(LSTM(n)): gates i, f, g, o stacked in W (4n, in), H (4n, n), b (4n,).
With cell_shape=c (CNTK's projected LSTM) the cell has c units: W (4c, in), H (4c, n), b (4c,), and
h = P @ (o * tanh(c)) with P (n, c), no bias; the projected h is what the recurrence feeds back.
With use_peepholes=True (CNTK's peepholes) three elementwise vectors Ci, Cf, Co (c,) join the
gates: i and f read Ci * c_{t-1}, Cf * c_{t-1}, and o reads Co * c_t, the NEW cell.
With enable_self_stabilization=True (CNTK's) scalar self-stabilizers (Stabilizer's alpha and beta) scale
h_{t-1} before H (Sdh), and with peepholes c_{t-1} and c_t before them (Sdc, Sct), and with a projection
o * tanh(c) before P (Sht): only the ones used exist, as in CNTK.

The recurrence and its cell are one layer definition: Recurrence returns the LSTM it is given
with go_backwards set, and the weights live on the LSTM.
"""
from __future__ import annotations

import math

from ..ir import TensorType
from ..shapes import ShapeError, float_features
from ..values import describe, is_number
from . import REQUIRED, Constructor, LayerKind, register
from .common import DEFAULT_INIT, bias_init, first_error, positive, weights
from .stabilizer import initial_alpha

FLOAT32_MAX = 3.4028234663852886e38


def check(a: dict):
    out = dict(a)
    res = first_error(lambda: positive("LSTM", "shape", a), lambda: weights(a, out),
                      lambda: None if a.get("cell_shape") is None else positive("LSTM", "cell_shape", a))
    if res is not None:
        return res
    for key in ("use_peepholes", "enable_self_stabilization"):
        if not isinstance(a.get(key, False), bool):
            return key, f"{key} must be True or False, got {describe(a[key])}"
    return out


def check_recurrence(a: dict):
    """Also sees the default_options values (evaluate.construct adds them), so the refusals hold for them too."""
    if not isinstance(a.get("go_backwards", False), bool):
        return "go_backwards", f"go_backwards must be True or False, got {describe(a['go_backwards'])}"
    v = a.get("initial_state", 0)
    # a constant only: CNTK also takes a tensor or a layer output, which no other target's h0 matches
    if not is_number(v) or not math.isfinite(v) or abs(v) > FLOAT32_MAX:
        return "initial_state", ("Recurrence initial_state must be a constant finite number (float32), the value every "
                                 f"state component starts from; a tensor or a computed value is not supported, got {describe(v)}")
    over = getattr(a.get("over"), "args", {})
    if v != 0 and over.get("cell_shape") is not None:
        # the targets' initial states are built at one size for h and c; a projection makes them two
        return "initial_state", "Recurrence initial_state with a projected LSTM (cell_shape) is not supported yet"
    if v != 0 and over.get("use_peepholes"):
        return "initial_state", "Recurrence initial_state with a peephole LSTM (use_peepholes) is not supported yet"
    if v != 0 and over.get("enable_self_stabilization"):
        return "initial_state", (f"Recurrence initial_state with a self-stabilized {a['over'].kind} "
                                 "(enable_self_stabilization) is not supported yet")
    out = dict(a)
    out["initial_state"] = float(v)
    return out


def unapplicable(args: dict):
    if "go_backwards" not in args:  # set by Recurrence, and only there
        return "LSTM must be wrapped in Recurrence(...) to run over a sequence"
    return None


def shape(a, ins):
    (t,) = ins
    float_features(t, "Recurrence(LSTM)")
    if not t.seq or len(t.shape) != 1:
        raise ShapeError(f"Recurrence(LSTM) needs a sequence of feature vectors, got {t.describe()}")
    if a.get("initial_state") and (a.get("peepholes") or a.get("stabilize")):  # from a default_options scope
        raise ShapeError("Recurrence initial_state with use_peepholes or enable_self_stabilization (here from "
                         "default_options) is not supported yet", "E103")
    u = a["units"]
    c = u if a.get("cell") is None else a["cell"]
    params = {"W": (4 * c, t.shape[0]), "H": (4 * c, u), "b": (4 * c,)}
    if a.get("cell") is not None:
        params["P"] = (u, c)
    if a.get("peepholes"):
        params.update(Ci=(c,), Cf=(c,), Co=(c,))
    if a.get("stabilize"):  # scalars, as CNTK's Parameter((), name='alpha'); only the ones used
        params["Sdh"] = ()
        if a.get("peepholes"):
            params.update(Sdc=(), Sct=())
        if a.get("cell") is not None:
            params["Sht"] = ()
    return TensorType((u,), True, t.length), params, {}


def inits(layer):
    init = layer.attr("init", DEFAULT_INIT)
    out = {"W": init, "H": init, "b": bias_init(layer)}
    if layer.attr("cell") is not None:
        out["P"] = init
    if layer.attr("peepholes"):
        peep = peephole_init(init, layer.attr("cell") or layer.attr("units"))
        out.update(Ci=peep, Cf=peep, Co=peep)
    if layer.attr("stabilize"):  # beta = 1 at the start, as Stabilizer()'s (CNTK's LSTM uses steepness 4)
        alpha = f"constant({initial_alpha(4.0)!r})"
        out["Sdh"] = alpha
        if layer.attr("peepholes"):
            out.update(Sdc=alpha, Sct=alpha)
        if layer.attr("cell") is not None:
            out["Sht"] = alpha
    return out


def peephole_init(init: str, n: int) -> str:
    """The LSTM's init as CNTK 2.7 applies it to a (n,) peephole: its fan-based initialisers see a
    vector with fan_in 1 and fan_out n (measured: glorot_uniform's limit is sqrt(6 / (n + 1)), he_uniform's
    sqrt(6)). Written as the explicit distribution, so that every target draws the same one."""
    fan_based = {"glorot_uniform": ("uniform", 6 / (n + 1)), "glorot_normal": ("normal", 2 / (n + 1)),
                 "he_uniform": ("uniform", 6.0), "he_normal": ("normal", 2.0)}
    if init not in fan_based:
        return init  # uniform(s), normal(s), constant(v): no fans
    kind, square = fan_based[init]
    return f"{kind}({math.sqrt(square)!r})"


KIND = register(LayerKind(
    "LSTM", shape,
    attrs={"units": ("shape", None), "go_backwards": ("go_backwards", False), "init": ("init", DEFAULT_INIT),
           "init_bias": ("init_bias", 0), "cell": ("cell_shape", None), "initial_state": ("initial_state", 0.0),
           "peepholes": ("use_peepholes", False), "stabilize": ("enable_self_stabilization", False)},
    floats=("init_bias", "initial_state"),
    inits=inits,
    unapplicable=unapplicable,
    constructors=(
        Constructor("LSTM", ("shape",),
                    {"shape": REQUIRED, "init": DEFAULT_INIT, "init_bias": 0, "use_peepholes": False,
                     "cell_shape": None, "enable_self_stabilization": False}, check,
                    options=("init", "init_bias", "use_peepholes", "enable_self_stabilization")),
        Constructor("Recurrence", ("over",), {"over": REQUIRED, "go_backwards": False, "initial_state": 0.0}, check_recurrence,
                    options=("go_backwards", "initial_state"), wraps=("LSTM", "GRU"), wraps_what="an LSTM(...) or a GRU(...)"),
    ),
))
