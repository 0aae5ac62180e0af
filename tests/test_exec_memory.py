"""Memory bounds of `netdsl run` (issue 17, item 3): the activation and workspace
memory of a step is estimated from the shapes before anything is allocated,
and a model over the limit is a located E609 naming the estimate and the limit."""
from __future__ import annotations

import time

import numpy as np
import pytest

from netdsl.cli import main
from netdsl.errors import NetdslError
from netdsl.exec import memory, train
from netdsl.exec.weights import init_params
from netdsl.frontend import load_text

from test_exec_train import synthetic

HUGE = """model Huge
x = Input((1000, 1000, 1000))
p = MaxPooling((1000, 1000), strides=1000)(x)
f = Flatten()(p)
z = Dense(10)(f)
output z
train {
    dataset = "mnist"
}
"""

WIDE = """model Wide
x = Input((1, 28, 28), scale=1/255)
c = Convolution((3, 3), 16, pad=True, activation=relu)(x)
p = MaxPooling((2, 2))(c)
z = Dense(10)(p)
output z
train {
    dataset = "mnist"
    batch_size = 32
}
"""


def test_a_billion_element_input_is_refused_before_allocating(tmp_path, capsys):
    (tmp_path / "huge.net").write_text(HUGE)
    t0 = time.perf_counter()
    rc = main(["run", str(tmp_path / "huge.net"), "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1 and time.perf_counter() - t0 < 30
    first = err.splitlines()[0]
    assert first.startswith(f"{tmp_path / 'huge.net'}:3:5: error: training of model Huge at batch 64 needs about ")
    assert "GiB of memory, over the limit of" in first and first.endswith("[E609]")
    assert "--max-memory" in err


def test_eval_only_checks_the_warm_up_batch(tmp_path, capsys):
    (tmp_path / "huge.net").write_text(HUGE)
    rc = main(["run", str(tmp_path / "huge.net"), "--eval-only", "--max-memory", "1G"])
    err = capsys.readouterr().err
    assert rc == 1 and "warm-up of model Huge at batch 2" in err and "over the limit of 1.00 GiB [E609]" not in err
    assert "over the limit of 1.00 GiB" in err and "[E609]" in err


@pytest.mark.parametrize("text, size", [("2G", 2 << 30), ("512M", 512 << 20), ("1000000", 10**6),
                                        ("1.5k", 1536), ("3GiB", 3 << 30), (" 4 T ", 4 << 40)])
def test_parse_size(text, size):
    assert memory.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1G", "0", "2X", "1e9"])
def test_bad_sizes_are_usage_errors(text, capsys):
    with pytest.raises(ValueError):
        memory.parse_size(text)
    with pytest.raises(SystemExit) as e:
        main(["run", "m.net", "--max-memory", text])
    assert e.value.code == 2 and "--max-memory" in capsys.readouterr().err


def test_the_default_limit_is_half_the_machine():
    total = memory.physical_memory()
    assert total and memory.default_limit() == total // 2


def test_estimate_grows_with_the_batch_and_names_the_biggest_part():
    g = load_text(WIDE, "wide.net")
    e1, e64 = memory.estimate(g, 1), memory.estimate(g, 64)
    assert 0 < e1.total < e64.total
    # The convolution keeps its im2col buffer (3x3 patches of 1 channel) for backward, and
    # backward makes another; its output has 16 channels.
    assert "Convolution" in e64.label and e64.largest >= 4 * 64 * 28 * 28 * (2 * 9 + 16)


def _trainer(**opts):
    g = load_text(WIDE, "wide.net")
    return train.Trainer(g, init_params(g, 0), synthetic(n_train=64, n_test=300), train.Options(seed=0, **opts),
                         log=lambda s: None)


def test_a_tight_limit_shrinks_the_evaluation_batch_not_the_results():
    free = _trainer()
    assert free.eval_batch == 500
    need = memory.estimate(free.graph, 32).total
    tight = _trainer(max_memory=need)  # room for the training batch of 32, not for 500
    assert 32 <= tight.eval_batch < 500
    assert free.evaluate()[1:] == tight.evaluate()[1:]
    tight.fit()


def test_a_training_batch_over_the_limit_is_refused(capsys):
    g = load_text(WIDE, "wide.net")
    t = _trainer(max_memory=memory.estimate(g, 8).total)
    with pytest.raises(NetdslError) as e:
        t.fit()
    msg = e.value.format()
    assert "wide.net:3:5: error: training of model Wide at batch 32 needs about" in msg and "[E609]" in msg
    assert np.isfinite(t.ex.params["dense_1.W"]).all()
