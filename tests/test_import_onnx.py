"""`netdsl import model.onnx`: ONNX back onto the IR.

Round trip: .net -> ONNX -> .net gives the same IR modulo names (same kinds, attributes, parameter
shapes, wiring and sharing) and the same outputs. Unsupported ops are all listed at once.
"""
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper

from netdsl import conformance as conf
from netdsl.cli import main
from netdsl.errors import NetdslError
from netdsl.exec.weights import load_weights
from netdsl.frontend import load, load_text
from netdsl.onnx.export import to_onnx
from netdsl.onnx.sources import from_onnx_model

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "models").glob("*.net"))
# lstm_projection, gru_self_stabilization: ONNX cannot express them (export refuses them, tests/test_onnx_export.py),
# so no round trip
TRAPS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "traps").glob("*.net")
               if p.stem not in ("lstm_projection", "gru_self_stabilization"))
# ONNX export folds an LSTM's self-stabilizers into R and the peepholes: the import is the LSTM without them
# (other weights), computing the same outputs
FOLDED = {"lstm_cntk_options"}
# Attributes ONNX does not carry: initialisers (weights are given), and how 'pad' was spelled
# (the pads themselves, `pads`, are compared).
# ONNX initialisers do not say whether a weight is trained either: Embedding(weights=...)'s constant comes
# back as a plain Embedding with the same E.
NOT_CARRIED = {"init", "init_bias", "pad", "init_scale", "initial_scale", "initial_bias", "weights"}  # initialisers
# Dense's input_rank/map_rank: ONNX's MatMul says how many axes it keeps (map_axes, compared), not how it was spelled
NOT_CARRIED |= {"input_rank", "map_rank"}


def structure(graph):
    """The IR modulo names: inputs, then per node its kind, attrs, param shapes, which layer (by first
    use, so sharing shows) and which values it reads (by position)."""
    pos = {i.name: f"in{k}" for k, i in enumerate(graph.inputs)}
    layer_ids, rows = {}, []
    for k, node in enumerate(graph.nodes):
        layer = graph.layer(node.layer)
        attrs = []
        for key, v in layer.attrs:
            if key not in NOT_CARRIED:
                attrs.append((key, round(v, 5) if isinstance(v, float) else v))
        lid = layer_ids.setdefault(layer.name, len(layer_ids))
        kind, shapes = layer.kind, tuple(p.shape for p in layer.params)
        if kind == "Embedding" and graph.value_type(node.inputs[0]).vocab is None:
            # x @ E of float vectors is ONNX's MatMul, which comes back as the same Dense without bias
            kind, shapes = "Dense", (shapes[0][::-1],)
            attrs = [("activation", None), ("bias", False), ("max_norm", None), ("units", layer.attr("dim"))]
        rows.append((kind, tuple(attrs), shapes, lid,
                     tuple(pos[i] for i in node.inputs), node.type))
        pos[node.name] = f"n{k}"
    return ([(i.type) for i in graph.inputs], rows, [pos[o] for o in graph.outputs])


def unstabilized(struct):
    """structure() of the graph with its LSTMs' stabilizers folded away (their scalars and the attr)."""
    inputs, rows, outputs = struct
    rows = [(kind, tuple((k, False if k == "stabilize" else v) for k, v in attrs),
             tuple(s for s in shapes if s != ()), *rest) for kind, attrs, shapes, *rest in rows]
    return inputs, rows, outputs


def rescale(graph):
    return [tuple(round(v, 5) for v in (l.attr("scale"), l.attr("mean"), l.attr("std")))
            for l in graph.layers if l.kind == "Rescale"]


@pytest.mark.parametrize("path", MODELS + TRAPS, ids=lambda p: Path(p).stem)
def test_round_trip_gives_the_same_ir_and_outputs(path):
    graph = load(str(ROOT / path))
    params = conf.conformance_params(graph, 0)
    text, weights = from_onnx_model(to_onnx(graph, params), path, Path(path).stem)
    back = load_text(text, "back.net")
    assert structure(back) == (unstabilized(structure(graph)) if Path(path).stem in FOLDED else structure(graph))
    assert rescale(back) == rescale(graph)
    inputs = conf.batch_for(graph, 0)
    ref = conf.native_predict(graph, params, inputs)
    got = conf.native_predict(back, weights, {b.name: inputs[a.name] for a, b in zip(graph.inputs, back.inputs)})
    for a, b in zip(graph.outputs, back.outputs):
        diff, _ = conf.max_diffs(ref[a], got[b])
        assert diff <= conf.INFER_TOL * conf.scale_of(ref.values())


def test_cli_round_trip_writes_a_readable_net_and_one_weight_file(tmp_path):
    src = str(ROOT / "models/dssm.net")
    graph = load(src)
    params = conf.conformance_params(graph, 0)
    (tmp_path / "dssm.onnx").write_bytes(to_onnx(graph, params).SerializeToString())
    out = tmp_path / "back.net"
    assert main(["import", str(tmp_path / "dssm.onnx"), "-o", str(out), "--weights-out", str(tmp_path / "w.npz")]) == 0
    text = out.read_text()
    assert "Sequential([" in text  # the chain of image_to_vec
    back = load(str(out))
    assert structure(back) == structure(graph)
    weights = load_weights(tmp_path / "w.npz", back)  # every tensor, by IR parameter name
    assert set(weights) == {p.name for p in back.params()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.net", "dssm.onnx", "w.npz"]


def _model(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_three_unsupported_ops_are_all_named():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])
    W = numpy_helper.from_array(np.eye(8, dtype=np.float32), "W")
    nodes = [helper.make_node("Gemm", ["x", "W"], ["h"], name="fc"),
             helper.make_node("Erf", ["h"], ["e"], name="gelu_erf"),
             helper.make_node("Relu", ["e"], ["r"], name="act"),
             helper.make_node("HardSwish", ["r"], ["s"], name="swish"),
             helper.make_node("Einsum", ["s", "s"], ["y"], name="outer", equation="ni,ni->ni")]
    with pytest.raises(NetdslError) as e:
        from_onnx_model(_model(nodes, [x], [y], [W]), "m.onnx", "m")
    message = e.value.format()
    assert e.value.diagnostics[0].code == "E821"
    for name, op in (("gelu_erf", "Erf"), ("swish", "HardSwish"), ("outer", "Einsum")):
        assert f"'{name}' ({op})" in e.value.diagnostics[0].message
        assert name in message and op in message
    assert "fc" not in e.value.diagnostics[0].message and len(e.value.diagnostics) == 4


def test_residual_add_sub_mul_of_two_tensors_import_as_elementwise():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    W = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32), "W")
    nodes = [helper.make_node("Gemm", ["x", "W"], ["h"], name="fc"),
             helper.make_node("Add", ["h", "x"], ["r"], name="block1/add"),
             helper.make_node("Sub", ["x", "r"], ["s"], name="block1/sub"),
             helper.make_node("Mul", ["s", "h"], ["y"], name="block1/mul")]
    model = _model(nodes, [x], [y], [W])
    text, weights = from_onnx_model(model, "m.onnx", "m")
    graph = load_text(text, "m.net")
    assert [graph.layer(n.layer).attr("op") for n in graph.nodes[1:]] == ["add", "sub", "mul"]
    feed = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    from netdsl.onnx.check import run_onnxruntime

    want = run_onnxruntime(model, {"x": feed}, ["y"])["y"]
    got = conf.native_predict(graph, weights, {graph.inputs[0].name: feed})[graph.outputs[0]]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_div_of_two_tensors_is_refused_by_name():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    W = numpy_helper.from_array(np.eye(4, dtype=np.float32), "W")
    nodes = [helper.make_node("Gemm", ["x", "W"], ["h"], name="fc"),
             helper.make_node("Div", ["h", "x"], ["y"], name="block1/div")]
    with pytest.raises(NetdslError) as e:
        from_onnx_model(_model(nodes, [x], [y], [W]), "m.onnx", "m")
    assert "'block1/div' (Div)" in e.value.diagnostics[0].message
    assert "Div of two tensors" in e.value.diagnostics[1].message


def test_exporter_spellings_fold_and_fuse():
    """Constant folding (a Transpose of the weight), MatMul + Add bias, Identity, Dropout, Reshape flatten."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    rng = np.random.default_rng(0)
    Wt = rng.standard_normal((4, 18)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    inits = [numpy_helper.from_array(Wt, "fc.weight"), numpy_helper.from_array(b, "fc.bias"),
             numpy_helper.from_array(np.array([0, -1], np.int64), "shape")]
    nodes = [helper.make_node("Identity", ["x"], ["x1"], name="id"),
             helper.make_node("Reshape", ["x1", "shape"], ["flat"], name="/flatten/Reshape"),
             helper.make_node("Transpose", ["fc.weight"], ["wt"], name="/fc/T", perm=[1, 0]),
             helper.make_node("MatMul", ["flat", "wt"], ["mm"], name="/fc/MatMul"),
             helper.make_node("Add", ["mm", "fc.bias"], ["z"], name="/fc/Add"),
             helper.make_node("Dropout", ["z"], ["d"], name="/drop/Dropout"),
             helper.make_node("Sigmoid", ["d"], ["y"], name="/act/Sigmoid")]
    model = _model(nodes, [x], [y], inits)
    text, weights = from_onnx_model(model, "m.onnx", "m")
    graph = load_text(text, "m.net")
    assert [graph.layer(n.layer).kind for n in graph.nodes] == ["Flatten", "Dense", "Dropout", "Activation"]
    np.testing.assert_array_equal(weights["fc.W"], Wt)
    np.testing.assert_array_equal(weights["fc.b"], b)
    feed = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    from netdsl.onnx.check import run_onnxruntime

    want = run_onnxruntime(model, {"x": feed}, ["y"])["y"]
    got = conf.native_predict(graph, weights, {graph.inputs[0].name: feed})[graph.outputs[0]]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_not_an_onnx_file_is_a_user_error(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    assert main(["import", str(bad), "-o", str(tmp_path / "o.net")]) == 1
    err = capsys.readouterr().err
    assert "[E820]" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]
