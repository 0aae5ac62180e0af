"""BatchNormalization's and LayerNormalization's CNTK arguments (issue 12, seed 004 lines 442-446):
the initial scale and bias start the parameters on every target that initialises by the .net file, and
normalization_time_constant becomes the momentum CNTK blends a minibatch of the training block's size with."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from netdsl.errors import NetdslError
from netdsl.frontend import load_text

NET = """x = Input(6)
b = BatchNormalization(init_scale=2, normalization_time_constant=640)(x)
l = LayerNormalization(initial_scale=0.5, initial_bias=0.25)(b)
output l
train {
    batch_size = 32
}
"""


def test_time_constant_is_the_momentum_at_the_batch_size():
    graph = load_text(NET, "t.net")
    bn = next(layer for layer in graph.layers if layer.kind == "BatchNormalization")
    assert bn.attr("momentum") == pytest.approx(1 - math.exp(-32 / 640), rel=1e-12)
    # the CNTK target turns it back into the time constant it was given
    assert -32 / math.log(1 - bn.attr("momentum")) == pytest.approx(640, rel=1e-9)


@pytest.mark.parametrize("args, message", [
    ("momentum=0.2, normalization_time_constant=100", "not both"),
    ("normalization_time_constant=0", "positive number"),
    ("blend_time_constant=10", "must be 0"),
    ("map_rank=2", "map_rank must be 1 or None"),
    ("init_scale=True", "finite number"),
])
def test_arguments_netdsl_cannot_honour_are_refused(args, message):
    with pytest.raises(NetdslError) as e:
        load_text(f"x = Input(6)\nb = BatchNormalization({args})(x)\noutput b\n", "t.net")
    assert message in str(e.value) and "[E103]" in str(e.value)


def test_per_pixel_statistics_are_refused_on_images():
    with pytest.raises(NetdslError) as e:
        load_text("x = Input((2, 4, 4))\nb = BatchNormalization(map_rank=None)(x)\noutput b\n", "t.net")
    assert "per channel" in str(e.value) and "(2, 4, 4)" in str(e.value)


@pytest.mark.parametrize("target", ["native", "pytorch", "keras", "cntk"])
def test_initial_values_start_the_parameters(tmp_path, target):
    """gluon and tf-estimator start from their own initialisers (docs/targets.md)."""
    from test_emit_legacy import _python
    from test_gru import EXPORT_DRIVER

    from netdsl.emit.base import emit
    from netdsl.exec.weights import init_params

    graph = load_text(NET, "t.net")
    py = _python("cntk") if target == "cntk" else sys.executable
    if target == "cntk" and not py:
        pytest.skip("CNTK NOT EXECUTED: no cntk venv")
    if target == "native":
        params = init_params(graph, 0)
    else:
        (tmp_path / "gen.py").write_text(emit(graph, target))
        (tmp_path / "driver.py").write_text(EXPORT_DRIVER)
        env = dict(os.environ, KERAS_BACKEND="torch", KERAS_HOME=str(tmp_path / "keras-home"), PYTHONDONTWRITEBYTECODE="1")
        proc = subprocess.run([py, "driver.py", "gen.py", "out.npz"], capture_output=True, text=True,
                              timeout=600, env=env, cwd=str(tmp_path))
        assert proc.returncode == 0, proc.stderr[-3000:]
        with np.load(tmp_path / "out.npz") as z:
            params = dict(z)
    np.testing.assert_array_equal(params["batch_normalization_1.scale"], np.full(6, 2, np.float32))
    np.testing.assert_array_equal(params["layer_normalization_1.scale"], np.full(6, 0.5, np.float32))
    np.testing.assert_array_equal(params["layer_normalization_1.bias"], np.full(6, 0.25, np.float32))


def test_layer_normalization_of_an_image(tmp_path):
    """tf-estimator and cntk write their own layer normalization (tf.compat.v1.layers has none, CNTK's has a
    scalar scale and bias): over C, H and W of an image (NHWC on tf-estimator, the scale and bias transposed to
    (H, W, C)); gluon refuses images (E802)."""
    from netdsl import conformance as conf

    net = tmp_path / "ln_image.net"
    net.write_text("image = Input((2, 3, 4))\na = LayerNormalization(epsilon=0.001)(image)\n"
                   "z = Dense(3)(Flatten()(a))\noutput z\ntrain {\n    loss = squared_error\n}\n")
    columns = [c for c in conf.COLUMNS if c.name in ("tf-estimator", "pytorch", "cntk")]
    cells = conf.run([str(net)], columns, workdir=str(tmp_path / "work"), log=lambda m: None)
    for column in columns:
        cell = cells[(str(net), column.name)]
        if cell.status == "not run":
            pytest.skip(f"{column.name.upper()} NOT EXECUTED: {cell.reason}")
        assert cell.status == "pass" and cell.step_status == "pass", f"{column.name}: {cell.short()} {cell.reason}"
