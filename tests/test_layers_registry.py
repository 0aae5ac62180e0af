"""The layer-kind registry (netdsl/layers/): every IR kind is registered exactly once, by its own
module, and a second registration of a kind or a name is refused."""
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
        "enable_self_stabilization": ("LSTM", "GRU")}


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
