"""bench/difffuzz.py's shrinker reaches the minimal failing model (no framework needed).

The failure is artificial: a predicate on the model text stands in for a column that disagrees with
the native executor. The shrinker must only ever hand the judge models that load and have weights to
train, and must end at a model none of whose one-step simplifications still fails.
"""
import importlib.util
from pathlib import Path

import pytest

from netdsl.frontend import load_text

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def difffuzz():
    spec = importlib.util.spec_from_file_location("difffuzz", ROOT / "bench" / "difffuzz.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BIG = """x = SequenceInput(4, length=5)
v1 = Dense(6)(x)
with default_options(activation=relu) {
    group2 = Sequential([LayerNormalization(), Recurrence(LSTM(3), go_backwards=True), Dropout(0.5)])
}
v3 = group2(v1)
a4 = Dense(2)(v3)
b5 = Dense(3, activation=tanh)(v3)
v6 = splice([a4, b5])
v7 = select_last(v6)
head8 = Dense(4, activation=softmax)(v7)
output head8, v3
train {
    loss = squared_error
}
"""


def judge(predicate, seen):
    """A batch judge that records every model it is shown."""
    def fails(texts):
        seen.extend(texts)
        return [predicate(t) for t in texts]
    return fails


def test_shrinks_to_the_one_failing_layer(difffuzz):
    seen = []
    small = difffuzz.shrink(BIG, judge(lambda t: "go_backwards=True" in t, seen))
    assert small == "x = SequenceInput(4, length=5)\nv3 = Recurrence(LSTM(3), go_backwards=True)(x)\noutput v3\n"
    assert seen and all(difffuzz.trainable_model(t) for t in seen)  # only valid models are ever run


def test_keeps_every_part_the_failure_needs(difffuzz):
    """A failure that needs a splice and the softmax head keeps exactly those (the branches go: splice
    reads the input twice)."""
    small = difffuzz.shrink(BIG, judge(lambda t: "splice" in t and "softmax" in t, []))
    assert small == ("x = SequenceInput(4, length=5)\nv6 = splice([x, x])\n"
                     "head8 = Dense(4, activation=softmax)(v6)\noutput head8\n")
    # one-minimal: no valid simplification of the result still fails
    assert not [c for c in difffuzz.candidates(small)
                if difffuzz.trainable_model(c) and "splice" in c and "softmax" in c]


def test_a_failure_of_every_model_shrinks_to_the_smallest_trainable_model(difffuzz):
    small = difffuzz.shrink(BIG, judge(lambda t: True, []))
    assert len(load_text(small, "small.net").nodes) == 1, small
    assert difffuzz.trainable_model(small)


def test_nothing_smaller_fails_leaves_the_model_as_it_is(difffuzz):
    assert difffuzz.shrink(BIG, judge(lambda t: t == BIG, [])) == BIG


def test_drawn_models_shrink_to_their_failing_construct(difffuzz):
    """Drawn models (scopes, Sequentials, sharing, several outputs) that hold a backward LSTM."""
    import test_properties as props

    drawn = [m["text"] for m in props.drawn_models(40, 5) if "go_backwards=True" in m["text"]]
    assert drawn
    for text in drawn:
        small = difffuzz.shrink(text, judge(lambda t: "go_backwards=True" in t, []))
        g = load_text(small, "small.net")
        assert sorted(layer.kind for layer in g.layers) in (["LSTM"], ["Embedding", "LSTM"]), small
        assert len(g.nodes) == len(g.layers), small


def test_statements_keep_blocks_whole(difffuzz):
    stmts = difffuzz.statements(BIG)
    assert stmts[2].startswith("with default_options") and stmts[2].endswith("}")
    assert stmts[-1] == "train {\n    loss = squared_error\n}"
    assert difffuzz.joined(stmts) == BIG
