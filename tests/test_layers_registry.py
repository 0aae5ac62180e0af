"""The layer-kind registry (netdsl/layers/): every IR kind is registered exactly once, by its own
module, and a second registration of a kind or a name is refused."""
import math
import re
from pathlib import Path

import pytest

from netdsl import layers
from netdsl.emit import keras, pytorch
from netdsl.frontend import load
from netdsl.layers import CONSTRUCTORS, FUNCTIONS, KINDS, Constructor, Function, LayerKind, register

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted((ROOT / "models").glob("*.net")) + sorted((ROOT / "tests" / "traps").glob("*.net"))


def test_the_kinds_are_the_ir_kinds_the_targets_emit():
    assert set(KINDS) == set(pytorch.LAYERS) == set(keras.LAYERS)


def test_every_kind_is_registered_once_by_one_module():
    sources = {p.stem: p.read_text() for p in (ROOT / "netdsl" / "layers").glob("*.py")}
    assert set(layers.MODULES) == set(sources) - {"__init__", "common"}, "a kind module is not in layers.MODULES"
    registered = {}
    for module in layers.MODULES:
        text = sources[module]
        for kind in KINDS:
            # a kind is registered by the module that names it in LayerKind("Kind", ...) or pooling("Kind")
            if re.search(rf'(LayerKind|pooling|select)\(\s*"{kind}"', text):
                registered.setdefault(kind, []).append(module)
    assert {k: len(m) for k, m in registered.items()} == {k: 1 for k in KINDS}, registered


def test_every_kind_in_the_models_is_registered():
    kinds = {layer.kind for path in MODELS for layer in load(str(path)).layers}
    assert kinds <= set(KINDS) and len(kinds) >= 10


def test_a_kind_registered_twice_is_refused():
    before = (dict(KINDS), dict(CONSTRUCTORS), dict(FUNCTIONS))
    with pytest.raises(ValueError, match="'Dense' is registered twice"):
        register(LayerKind("Dense", KINDS["Dense"].shape))
    assert (KINDS, CONSTRUCTORS, FUNCTIONS) == before


@pytest.mark.parametrize("kind", [
    LayerKind("Probe", lambda a, ins: None, constructors=(Constructor("Dense", (), {}, dict),)),
    LayerKind("Probe", lambda a, ins: None, constructors=(Constructor("Probe", (), {}, dict, aliases=("Convolution2D",)),)),
    LayerKind("Probe", lambda a, ins: None, function=Function(("splice",), None)),
    LayerKind("Probe", lambda a, ins: None, constructors=(Constructor("Probe", (), {}, dict, aliases=("Probe",)),)),
], ids=["constructor", "alias", "function", "alias-of-itself"])
def test_a_name_registered_twice_is_refused(kind):
    before = (dict(KINDS), dict(CONSTRUCTORS), dict(FUNCTIONS))
    with pytest.raises(ValueError, match="registered twice"):
        register(kind)
    assert (KINDS, CONSTRUCTORS, FUNCTIONS) == before, "a refused registration must leave the registry as it was"


def test_constructor_names_and_attrs_are_consistent():
    for kind in KINDS.values():
        for ctor in kind.constructors:
            assert set(ctor.positional) <= set(ctor.signature), ctor.name
        assert set(kind.floats) <= set(kind.attrs), kind.kind
    # every default_options key reaches at least one kind, and Dense is checked first (messages depend on it)
    assert layers.option_kinds() == {
        "activation": ("Dense", "Convolution"), "init": ("Dense", "Convolution", "Embedding", "LSTM", "GRU"),
        "bias": ("Dense", "Convolution"), "init_bias": ("Dense", "Convolution", "LSTM", "GRU"),
        "pad": ("Convolution", "MaxPooling", "AveragePooling"), "use_peepholes": ("LSTM",),
        # lstm.py imports stabilizer.py, so Stabilizer registers first; Recurrence's options reach the LSTM kind
        # (its constructor's), and a Recurrence(GRU(...)) through evaluate.construct
        "enable_self_stabilization": ("Stabilizer", "LSTM", "GRU"), "go_backwards": ("LSTM",),
        "initial_state": ("LSTM", "Delay"), "map_rank": ("BatchNormalization",),
        "normalization_time_constant": ("BatchNormalization",), "epsilon": ("BatchNormalization", "LayerNormalization"),
        "use_cntk_engine": ("BatchNormalization",)}


# Every argument CNTK 2.7 declares default_override_or(...) in cntk/layers/{layers,blocks,sequence}.py, by the
# constructor netdsl has for it. Left out, as netdsl has no such argument: LSTM/GRU activation (netdsl's cells
# use CNTK's default tanh), Activation()'s activation (netdsl has no identity activation), BatchNormalization's
# disable_regularization, PastValueWindow, Fold, RecurrenceFrom, RNNStep, the Convolution variants netdsl
# lacks; Convolution1D's options belong to layers/convolution.py.
CNTK_OPTIONS = {
    "Dense": {"activation", "init", "bias", "init_bias"},
    "Convolution": {"activation", "init", "pad", "bias", "init_bias"},
    "MaxPooling": {"pad"}, "AveragePooling": {"pad"}, "Embedding": {"init"},
    "Stabilizer": {"enable_self_stabilization"},
    "LSTM": {"use_peepholes", "init", "init_bias", "enable_self_stabilization"},
    "GRU": {"init", "init_bias", "enable_self_stabilization"},
    "Recurrence": {"go_backwards", "initial_state"}, "Delay": {"initial_state"},
    "BatchNormalization": {"map_rank", "normalization_time_constant", "epsilon", "use_cntk_engine"},
    "LayerNormalization": {"epsilon"},
}


def test_every_cntk_default_override_argument_netdsl_takes_is_an_option():
    assert {name: set(ctor.options) for name, (_, ctor) in CONSTRUCTORS.items() if name in CNTK_OPTIONS} == CNTK_OPTIONS


SCOPED = """w = SequenceInput(vocab=20)
with default_options(go_backwards=True, initial_state=0.25, enable_self_stabilization=False, epsilon=0.01,
                     normalization_time_constant=1000, use_cntk_engine=False, map_rank=1):
    e = Stabilizer()(Embedding(5)(w))
    a = Recurrence(LSTM(4))(e)
    b = Recurrence(GRU(3), go_backwards=False, initial_state=-0.5)(e)
    d = Delay()(e)
    n = LayerNormalization()(select_last(a))
    m = BatchNormalization(momentum=0.2)(select_last(b))
    k = BatchNormalization(epsilon=0.001)(select_last(d))
s = Stabilizer(enable_self_stabilization=True)(select_last(a))
c = Recurrence(LSTM(2))(e)
output n, m, k, s, c
"""


def test_default_options_scope_explicit_wins_then_scope_then_default():
    # CNTK 2.7 (checked with its own layers): Stabilizer() in an enable_self_stabilization=False scope has no
    # parameter, an explicit True has one; Recurrence reads go_backwards and initial_state from the scope
    from netdsl.frontend import load_text
    g = load_text(SCOPED)
    attrs = {layer.name: dict(layer.attrs) for layer in g.layers}
    assert [layer.kind for layer in g.layers].count("Stabilizer") == 1  # only the explicit one
    assert [n.inputs for n in g.nodes if n.layer == "lstm_1"] == [("e",)]  # the identity left no node
    assert (attrs["lstm_1"]["go_backwards"], attrs["lstm_1"]["initial_state"]) == (True, 0.25)
    assert (attrs["gru_1"]["go_backwards"], attrs["gru_1"]["initial_state"]) == (False, -0.5)
    assert (attrs["lstm_2"]["go_backwards"], attrs["lstm_2"]["initial_state"]) == (False, 0.0)
    assert attrs["delay_1"]["initial_state"] == 0.25
    assert attrs["layer_normalization_1"]["epsilon"] == 0.01
    # an explicit momentum wins over the scope's time constant; the time constant sets it otherwise
    assert attrs["batch_normalization_1"]["momentum"] == pytest.approx(0.2)
    assert attrs["batch_normalization_2"]["momentum"] == pytest.approx(1 - math.exp(-64 / 1000))
    assert attrs["batch_normalization_2"]["epsilon"] == 0.001


@pytest.mark.parametrize("src, message", [
    # the Recurrence refusals hold when initial_state (or the LSTM option) comes from a scope
    ("with default_options(initial_state=0.5):\n    h = Recurrence(LSTM(3, use_peepholes=True))(x)\n",
     "Recurrence initial_state with a peephole LSTM (use_peepholes) is not supported yet"),
    ("with default_options(initial_state=0.5):\n    h = Recurrence(LSTM(3, cell_shape=4))(x)\n",
     "Recurrence initial_state with a projected LSTM (cell_shape) is not supported yet"),
    ("with default_options(initial_state=0.5, enable_self_stabilization=True):\n    h = Recurrence(LSTM(3))(x)\n",
     "Recurrence initial_state with use_peepholes or enable_self_stabilization (here from default_options)"),
    ("with default_options(go_backwards=1):\n    h = Recurrence(LSTM(3))(x)\n", "go_backwards must be True or False"),
    ("with default_options(initial_state=[1]):\n    h = Recurrence(LSTM(3))(x)\n", "must be a constant finite number"),
    ("with default_options(enable_self_stabilization=0):\n    h = Stabilizer()(x)\n", "must be True or False"),
    ("h = Stabilizer(enable_self_stabilization=None)(x)\n", "must be True or False"),
])
def test_default_options_refusals(src, message):
    from netdsl.errors import NetdslError
    from netdsl.frontend import load_text
    with pytest.raises(NetdslError) as info:
        load_text("x = SequenceInput(4)\n" + src + "output h\n")
    (d,) = info.value.diagnostics
    assert d.code == "E103" and message in d.message, d.message
    assert d.span.line >= 2


def test_a_builtin_called_through_another_name_keeps_its_meaning():
    # the builtin, not the name it is called by, decides the kind: `s = select_last; s(h)` once built
    # a SelectFirst, and `[select_first][0](h)` or `[Input][0](3)` raised AttributeError
    from netdsl.frontend import load_text
    g = load_text("w = SequenceInput(vocab=10)\ne = Embedding(4)(w)\nh = Recurrence(LSTM(5))(e)\n"
                  "s = select_last\nl = s(h)\nf = [select_first][0](h)\nq = [Input][0](3)\n"
                  "c = [cos_distance][0](l, f)\noutput l, f, c\n")
    assert [layer.kind for layer in g.layers][-3:] == ["SelectLast", "SelectFirst", "CosineDistance"]
    assert [i.name for i in g.inputs] == ["w", "q"]


def test_the_builtin_names():
    from netdsl.evaluate import Evaluator
    from netdsl.library import builtin_names
    names = set(Evaluator("t.net", {}).genv.vars)
    assert names == builtin_names()
    assert names == {
        "Dense", "Convolution", "Convolution2D", "MaxPooling", "MaxPooling2D", "AveragePooling", "AveragePooling2D",
        "Dropout", "Embedding", "LSTM", "Recurrence", "BatchNormalization", "LayerNormalization", "Flatten",
        "Activation", "relu", "sigmoid", "tanh", "softmax", "glorot_uniform", "glorot_normal", "he_uniform",
        "he_normal", "uniform", "normal", "zeros", "ones", "Sequential", "LayerStack", "For", "range", "Input",
        "SequenceInput", "splice", "select_last", "select_first", "cosine_distance", "cos_distance", "Stabilizer", "GRU", "Delay"} | {
        # issue 12: global pooling and the activations beyond the first four
        "GlobalAveragePooling", "GlobalMaxPooling", "elu", "leaky_relu", "gelu", "softplus", "silu", "swish",
        "hard_sigmoid"} | {
        # issue 12: CNTK's name for a 1-D convolution over a sequence
        "Convolution1D"}
