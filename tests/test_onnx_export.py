"""`netdsl export`: every model and trap, exported to ONNX, computes what the native executor computes.

Two oracles run each exported model: onnxruntime and onnx's reference evaluator (pure numpy, an
independent reading of the ONNX spec). Both must match the native executor within the
conformance rule: max |diff| <= 1e-5 x max(1, max |output|).
"""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from netdsl import conformance as conf
from netdsl.cli import main
from netdsl.errors import NetdslError
from netdsl.frontend import load, load_text
from netdsl.onnx import check
from netdsl.onnx.export import CONVERTERS, converter, to_onnx
from netdsl.layers import KINDS as RULES

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "models").glob("*.net"))
TRAPS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "traps").glob("*.net"))
# traps ONNX cannot express: export refuses them at the layer (E802), the reason in the message
ONNX_REFUSED = {"lstm_projection": "LSTM operator has no projection",
                "gru_self_stabilization": "GRU operator has no self-stabilizer"}

# What models/ and the traps do not already cover: LayerNormalization on an image, a vector and a
# sequence, BatchNormalization on a sequence, softmax over channels and over features, select_first,
# Activation layers, a sigmoid Convolution with an even 'same' kernel, Dense without bias, two outputs,
# a Stabilizer on an image and on a sequence.
KINDS = """
image = Input((3, 6, 5), mean=0.5, std=2)
seq = SequenceInput(4)
c = Convolution((2, 3), 4, pad=True, activation=sigmoid)(image)
n = LayerNormalization(epsilon=0.001)(c)
p = AveragePooling((2, 2), strides=(1, 2), pad=True)(n)
ps = Stabilizer(steepness=1.5)(p)
sm = Activation(softmax)(ps)
f = Flatten()(sm)
v = Dense(5, activation=softmax, bias=False)(f)
vn = LayerNormalization()(v)
b = BatchNormalization(epsilon=0.01, momentum=0.3)(seq)
sb = Stabilizer()(b)
sl = LayerNormalization()(sb)
r = Recurrence(LSTM(3))(sl)
d = Dense(4, activation=tanh)(r)
t = Activation(relu)(d)
first = select_first(t)
dr = Dropout(0.3)(first)
j = splice([vn, dr])
output j, t
"""


def graph_of(path):
    return load_text(KINDS, "kinds.net") if path == "kinds" else load(str(ROOT / path))


def compare(graph, params, inputs, model):
    ref = conf.native_predict(graph, params, inputs)
    tol = conf.INFER_TOL * conf.scale_of(ref.values())
    for oracle, outs in check.both(model, inputs, list(graph.outputs)).items():
        for name in graph.outputs:
            diff, _ = conf.max_diffs(ref[name], outs[name])
            assert diff <= tol, f"{oracle}: output {name} differs by {diff:.2e} (tolerance {tol:.1e})"


def test_every_ir_kind_has_a_converter():
    assert set(CONVERTERS) == set(RULES)


def test_a_second_converter_for_a_kind_is_refused():
    with pytest.raises(ValueError, match="twice"):
        converter("Dense")(lambda *a: None)


@pytest.mark.parametrize("path", MODELS + TRAPS + ["kinds"], ids=lambda p: Path(p).stem)
def test_exported_model_matches_native(path):
    graph = graph_of(path)
    params = conf.conformance_params(graph, 0)
    if Path(path).stem in ONNX_REFUSED:
        with pytest.raises(NetdslError) as refused:
            to_onnx(graph, params)
        spans = {layer.span for layer in graph.layers if layer.kind in ("LSTM", "GRU")}
        assert refused.value.diagnostics and all(
            d.code == "E802" and ONNX_REFUSED[Path(path).stem] in d.message and d.span in spans
            for d in refused.value.diagnostics)
        return
    model = to_onnx(graph, params)  # runs onnx.checker.check_model(full_check=True)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    inits = {t.name for t in model.graph.initializer}
    assert {p.name for p in graph.params()} <= inits  # canonical names, one initializer per parameter
    compare(graph, params, conf.batch_for(graph, 0), model)


@pytest.mark.parametrize("path", ["models/bilstm_tagger.net", "models/cnn_pad.net"])
def test_batch_and_time_are_dynamic(path):
    graph = load(str(ROOT / path))
    params = conf.conformance_params(graph, 1)
    model = to_onnx(graph, params)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] == "N"
    if graph.inputs[0].type.seq:
        assert dims[1] == "T"
    compare(graph, params, conf.batch_for(graph, 1, n=5, steps=9), model)


def test_unexportable_kinds_are_all_listed_with_locations():
    graph = load(str(ROOT / "models/dssm.net"))
    fake = tuple(replace(l, kind="Mystery") if l.kind in ("MaxPooling", "CosineDistance") else l for l in graph.layers)
    with pytest.raises(NetdslError) as e:
        to_onnx(replace(graph, layers=fake), conf.conformance_params(graph, 0))
    diags = e.value.diagnostics
    assert len(diags) == 3 and {d.code for d in diags} == {"E801"}
    assert all(d.span.file.endswith("dssm.net") and d.span.line > 1 for d in diags)


def test_cli_export_seeded_and_with_weights(tmp_path):
    from netdsl.exec.weights import init_params, save_weights

    src = str(ROOT / "models/mlp_relu.net")
    out = tmp_path / "m.onnx"
    assert main(["export", src, "-o", str(out)]) == 0
    graph = load(src)
    seeded = init_params(graph, 0)
    model = onnx.load(str(out))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for name, value in seeded.items():
        np.testing.assert_array_equal(inits[name], value)
    weights = tmp_path / "w.npz"
    save_weights(weights, conf.conformance_params(graph, 3))
    assert main(["export", src, "--weights", str(weights), "-o", str(out), "--opset", "18"]) == 0
    model = onnx.load(str(out))
    assert model.opset_import[0].version == 18
    compare(graph, conf.conformance_params(graph, 3), conf.batch_for(graph, 0), model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "w.npz"]  # no temp files left


def test_cli_export_refuses_to_overwrite_its_input(tmp_path, capsys):
    src = tmp_path / "m.net"
    src.write_text((ROOT / "models/mlp_relu.net").read_text())
    assert main(["export", str(src), "-o", str(src)]) == 2
    assert "also an input" in capsys.readouterr().err
    assert src.read_text() == (ROOT / "models/mlp_relu.net").read_text()


@pytest.mark.parametrize("opset", ["13", "99"])
def test_cli_export_opset_out_of_range_is_a_usage_error(tmp_path, capsys, opset):
    assert main(["export", str(ROOT / "models/mlp_relu.net"), "-o", str(tmp_path / "m.onnx"), "--opset", opset]) == 2
    assert "--opset must be from 17" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
