"""GRU, built as Recurrence(GRU(n)): gates r, z, n (PyTorch's order) stacked in W (3n, in), H (3n, n),
an input bias b (3n,) and, with reset_after=True, a recurrent bias bh (3n,).

reset_after=False (CNTK's GRU, the default, and Keras's reset_after=False) applies the reset gate before
the recurrent product: n = tanh(W_n x + b_n + H_n (r * h)). reset_after=True (PyTorch, Gluon, cuDNN,
Keras's default) applies it after: n = tanh(W_n x + b_n + r * (H_n h + bh_n)). docs/ir.md has the layout.
enable_self_stabilization=True (CNTK's) adds one scalar Sdh (Stabilizer's alpha; beta = softplus(4 alpha) / 4)
that scales h_{t-1} wherever the step reads it: in the gates AND in h' = (1 - z) * n + z * (beta h_{t-1}).
"""
from __future__ import annotations

from ..ir import TensorType
from ..shapes import ShapeError, float_features
from ..values import describe
from . import REQUIRED, Constructor, LayerKind, register
from .common import DEFAULT_INIT, bias_init, first_error, positive, weights
from .stabilizer import initial_alpha


def check(a: dict):
    out = dict(a)
    res = first_error(lambda: positive("GRU", "shape", a), lambda: weights(a, out))
    if res is not None:
        return res
    if not isinstance(a.get("reset_after", False), bool):
        return "reset_after", f"GRU reset_after must be True or False, got {describe(a['reset_after'])}"
    if not isinstance(a.get("enable_self_stabilization", False), bool):
        return "enable_self_stabilization", ("GRU enable_self_stabilization must be True or False, got "
                                             f"{describe(a['enable_self_stabilization'])}")
    if a.get("enable_self_stabilization") and a.get("reset_after"):
        # CNTK's GRU is reset_after=False; its stabilizer has no meaning defined for the other cell
        return "enable_self_stabilization", "GRU enable_self_stabilization=True needs reset_after=False (CNTK's GRU)"
    return out


def unapplicable(args: dict):
    if "go_backwards" not in args:  # set by Recurrence, and only there
        return "GRU must be wrapped in Recurrence(...) to run over a sequence"
    return None


def shape(a, ins):
    (t,) = ins
    float_features(t, "Recurrence(GRU)")
    if not t.seq or len(t.shape) != 1:
        raise ShapeError(f"Recurrence(GRU) needs a sequence of feature vectors, got {t.describe()}")
    if a.get("stabilize") and a.get("reset_after"):  # from a default_options scope (explicit: check())
        raise ShapeError("GRU enable_self_stabilization=True (here from default_options) needs reset_after=False "
                         "(CNTK's GRU)", "E103")
    if a.get("stabilize") and a.get("initial_state"):  # as for the LSTM
        raise ShapeError("Recurrence initial_state with a self-stabilized GRU (enable_self_stabilization, here from "
                         "default_options) is not supported yet", "E103")
    u = a["units"]
    params = {"W": (3 * u, t.shape[0]), "H": (3 * u, u), "b": (3 * u,)}
    if a.get("reset_after"):
        params["bh"] = (3 * u,)
    if a.get("stabilize"):
        params["Sdh"] = ()  # a scalar, as CNTK's Parameter((), name='alpha')
    return TensorType((u,), True, t.length), params, {}


def inits(layer):
    init = layer.attr("init", DEFAULT_INIT)
    out = {"W": init, "H": init, "b": bias_init(layer)}  # CNTK's GRU has one bias, b
    if layer.attr("reset_after"):
        out["bh"] = "zeros"
    if layer.attr("stabilize"):  # beta = 1 at the start, as Stabilizer()'s
        out["Sdh"] = f"constant({initial_alpha(4.0)!r})"
    return out


KIND = register(LayerKind(
    "GRU", shape,
    attrs={"units": ("shape", None), "go_backwards": ("go_backwards", False), "init": ("init", DEFAULT_INIT),
           "reset_after": ("reset_after", False), "init_bias": ("init_bias", 0),
           "initial_state": ("initial_state", 0.0), "stabilize": ("enable_self_stabilization", False)},
    floats=("init_bias", "initial_state"),
    inits=inits,
    unapplicable=unapplicable,
    constructors=(
        Constructor("GRU", ("shape",),
                    {"shape": REQUIRED, "init": DEFAULT_INIT, "init_bias": 0, "reset_after": False,
                     "enable_self_stabilization": False}, check,
                    options=("init", "init_bias", "enable_self_stabilization")),
    ),
))
