"""The front end on the real models: check, IR round trip, and parameter counts against PyTorch."""
import subprocess
import sys
from pathlib import Path

import pytest

from netdsl import ir
from netdsl.frontend import load, load_text
from netdsl.errors import NetdslError

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted((ROOT / "models").glob("*.net"))


def test_at_least_12_models():
    assert len(MODELS) >= 12


def test_check_models_exits_0():
    proc = subprocess.run([sys.executable, "-m", "netdsl", "check", *[str(m.relative_to(ROOT)) for m in MODELS]],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("path", MODELS, ids=[m.stem for m in MODELS])
def test_ir_round_trip_is_byte_identical(path, tmp_path):
    rel = str(path.relative_to(ROOT))
    first = subprocess.run([sys.executable, "-m", "netdsl", "ir", rel], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    saved = tmp_path / "ir.json"
    saved.write_text(first.stdout)
    again = subprocess.run([sys.executable, "-m", "netdsl", "ir", "--load", str(saved)], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    assert ir.from_json(first.stdout) == load(rel)


def test_summary_prints_a_table():
    proc = subprocess.run([sys.executable, "-m", "netdsl", "summary", "models/keras_cnn.net"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Total params: 34,826" in proc.stdout
    assert "(32, 13, 13)" in proc.stdout


def test_sharing_means_one_set_of_weights():
    shared = load_text("inp = Input(64)\nlay = Dense(64, activation=sigmoid)\nh1 = lay(inp)\nh2 = Dense(64)(h1)\n"
                       "h3 = lay(h2)\noutput h3\n", "s.net")
    separate = load_text("inp = Input(64)\nh1 = Dense(64, activation=sigmoid)(inp)\nh2 = Dense(64)(h1)\n"
                         "h3 = Dense(64, activation=sigmoid)(h2)\noutput h3\n", "s.net")
    # the shared layer sees 784 then 64 inputs: that is the shape error of sharing
    with pytest.raises(NetdslError) as e:
        load_text("inp = Input(784)\nlay = Dense(64)\nh1 = lay(inp)\nh2 = lay(h1)\noutput h2\n", "s.net")
    assert e.value.diagnostics[0].code == "E203"
    assert len(shared.layers) == 2 and len(separate.layers) == 3
    assert sum(p.size for p in shared.params()) + 64 * 65 == sum(p.size for p in separate.params())
    assert [n.layer for n in shared.nodes] == ["lay", "dense_1", "lay"]


def test_layerstack_builds_distinct_layers_with_the_index():
    g = load_text("inp = Input(16)\nnet = LayerStack(3, lambda i: Dense(128 * 2**i))\nz = net(inp)\noutput z\n", "l.net")
    assert [l.attr("units") for l in g.layers] == [128, 256, 512]
    assert len({l.name for l in g.layers}) == 3


def test_default_options_nest_and_explicit_wins():
    g = load_text("""inp = Input(16)
with default_options(activation=relu, bias=False) {
    with default_options(activation=tanh) {
        a = Dense(4)(inp)
    }
    b = Dense(4)(a)
    c = Dense(4, activation=None, bias=True)(b)
}
output c
""", "d.net")
    acts = [(l.attr("activation"), l.attr("bias")) for l in g.layers]
    assert acts == [("tanh", False), ("relu", False), (None, True)]


def test_pad_true_puts_the_odd_pixel_at_the_end_and_follows_cntk_at_stride_2():
    g = load_text("image = Input((1, 4, 4))\na = Convolution((2, 2), 1, pad=True)(image)\n"
                  "b = Convolution((3, 3), 1, pad=True, strides=2)(image)\noutput a, b\n", "p.net")
    a, b = g.layers
    assert a.attr("pads") == ((0, 1), (0, 1))
    assert b.attr("pads") == ((1, 0), (1, 0))
    assert g.value_type("b").shape == (1, 2, 2)


# ------------------------------------------------ against PyTorch, built by hand
torch = pytest.importorskip("torch")
nn = torch.nn


def torch_trainable(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def netdsl_trainable(g) -> int:
    return sum(p.size for p in g.params() if p.trainable)


def shapes_of(g, names):
    return [g.value_type(n).shape for n in names]


def test_mlp_matches_torch():
    g = load("models/mlp_relu.net")
    m = nn.Sequential(nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 10))
    assert netdsl_trainable(g) == torch_trainable(m)
    x = torch.zeros(2, 784)
    outs = [m[0](x).shape[1:], m[2](m[1](m[0](x))).shape[1:]]
    assert [tuple(s) for s in outs] == shapes_of(g, ["h", "z"])


def test_bn_cnn_matches_torch():
    g = load("models/bn_cnn.net")

    class ConvNet(nn.Module):  # seed 000, as written there
        def __init__(self):
            super().__init__()
            self.layer1 = nn.Sequential(nn.Conv2d(1, 16, kernel_size=5, padding=2), nn.BatchNorm2d(16), nn.ReLU(),
                                        nn.MaxPool2d(2))
            self.layer2 = nn.Sequential(nn.Conv2d(16, 32, kernel_size=5, padding=2), nn.BatchNorm2d(32), nn.ReLU(),
                                        nn.MaxPool2d(2))
            self.fc = nn.Linear(7 * 7 * 32, 10)

    m = ConvNet()
    assert netdsl_trainable(g) == torch_trainable(m)
    buffers = sum(b.numel() for name, b in m.named_buffers() if "running" in name)
    assert sum(p.size for p in g.params() if not p.trainable) == buffers
    x = torch.zeros(2, 1, 28, 28)
    got = []
    for layer in list(m.layer1) + list(m.layer2):
        x = layer(x)
        got.append(tuple(x.shape[1:]))
    got.append(tuple(m.fc(x.flatten(1)).shape[1:]))
    assert got == [n.type.shape for n in g.nodes[1:]]


def test_vgg9_matches_torch():
    g = load("models/vgg9.net")
    layers, c, size = [], 3, 32
    for width in (64, 96, 128):
        layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                   nn.MaxPool2d(3, stride=2)]
        c, size = width, (size - 3) // 2 + 1
    layers += [nn.Flatten(), nn.Linear(c * size * size, 1024), nn.ReLU(), nn.Dropout(0.5), nn.Linear(1024, 1024),
               nn.ReLU(), nn.Dropout(0.5), nn.Linear(1024, 10)]
    m = nn.Sequential(*layers)
    assert netdsl_trainable(g) == torch_trainable(m)
    x = torch.zeros(2, 3, 32, 32)
    got = []
    for layer in m:
        x = layer(x)
        if not isinstance(layer, (nn.ReLU, nn.Flatten)):
            got.append(tuple(x.shape[1:]))
    assert got == [n.type.shape for n in g.nodes]


def test_slot_tagger_matches_torch():
    g = load("models/slot_tagger.net")
    emb, lstm, dense = nn.Embedding(943, 150), nn.LSTM(150, 300, batch_first=True), nn.Linear(300, 129)
    lstm.bias_hh_l0.requires_grad_(False)  # the IR has one bias per gate, as CNTK and Keras do
    m = nn.ModuleList([emb, lstm, dense])
    assert netdsl_trainable(g) == torch_trainable(m)
    ids = torch.zeros(2, 7, dtype=torch.long)
    e = emb(ids)
    h, _ = lstm(e)
    z = dense(h)
    assert [tuple(t.shape[2:]) for t in (e, h, z)] == [n.type.shape for n in g.nodes]
    assert all(n.type.seq for n in g.nodes)


def test_dssm_matches_torch():
    g = load("models/dssm.net")
    image_to_vec = nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, stride=2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, stride=2),
        nn.Flatten(), nn.Linear(64 * 6 * 6, 64), nn.ReLU(), nn.Linear(64, 10))
    assert netdsl_trainable(g) == torch_trainable(image_to_vec)  # applied twice, counted once
    doc = torch.zeros(2, 1, 28, 28)
    sim = nn.functional.cosine_similarity(image_to_vec(doc), image_to_vec(doc), dim=1)
    assert g.value_type("sim").shape == (1,) and sim.shape == (2,)
    assert g.value_type("z_doc").shape == g.value_type("z_query").shape == (10,)
    assert len([n for n in g.nodes if n.layer == g.nodes[-2].layer]) == 2


def test_row_lstm_and_bilstm_shapes():
    g = load("models/bilstm_tagger.net")
    assert g.value_type("h").shape == (300,) and g.value_type("h").seq
    g = load("models/row_lstm.net")
    assert g.value_type("last").shape == (128,) and not g.value_type("last").seq
