"""`netdsl import module.py:ClassName`: PyTorch modules in the seeds' style, through torch.onnx.export and
the ONNX importer, with their trained weights; the imported model is compiled to every target (pytorch,
keras/torch, keras/tensorflow, tf-estimator, gluon, cntk) and each must reproduce the torch module's own
outputs (max |diff| <= 1e-5 x max(1, max |out|)).
"""
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from netdsl import conformance as conf
from netdsl.cli import main
from netdsl.exec.weights import load_weights
from netdsl.frontend import load

COLUMNS = conf.COLUMNS  # every target

MODULES = textwrap.dedent('''
    import torch
    import torch.nn as nn
    import torch.nn.functional as F


    class CNN(nn.Module):  # seed 000: the BatchNorm CNN
        def __init__(self):
            super().__init__()
            self.layer1 = nn.Sequential(nn.Conv2d(1, 16, kernel_size=5, padding=2), nn.BatchNorm2d(16), nn.ReLU(),
                                        nn.MaxPool2d(2))
            self.layer2 = nn.Sequential(nn.Conv2d(16, 32, kernel_size=5, padding=2), nn.BatchNorm2d(32), nn.ReLU(),
                                        nn.MaxPool2d(2))
            self.fc = nn.Linear(7 * 7 * 32, 10)

        def forward(self, x):
            out = self.layer1(x)
            out = self.layer2(out)
            out = out.view(out.size(0), -1)
            return self.fc(out)


    class ConvNetPyTorch(nn.Module):  # seed 001
        def __init__(self, num_classes=10):
            super().__init__()
            self.layer1 = nn.Sequential(nn.Conv2d(1, 32, kernel_size=(3, 3), stride=(1, 1), padding=1), nn.ReLU(),
                                        nn.MaxPool2d(kernel_size=(2, 2), stride=(2, 2), padding=0))
            self.layer2 = nn.Sequential(nn.Conv2d(32, 64, kernel_size=(3, 3), stride=(1, 1), padding=1), nn.ReLU(),
                                        nn.MaxPool2d(kernel_size=(2, 2), stride=(2, 2), padding=0))
            self.linear_1 = nn.Linear(7 * 7 * 64, num_classes)

        def forward(self, x):
            out = self.layer1(x)
            out = self.layer2(out)
            out = out.reshape(out.size(0), -1)
            logits = self.linear_1(out.view(-1, 7 * 7 * 64))
            probas = F.softmax(logits, dim=1)
            return logits, probas


    def flatten(x):
        N = x.shape[0]
        return x.view(N, -1)


    class ThreeLayerConvNet(nn.Module):  # seed 003
        def __init__(self, in_channel=3, channel_1=12, channel_2=8, num_classes=10):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channel, channel_1, kernel_size=5, padding=2, bias=True)
            nn.init.kaiming_normal_(self.conv1.weight)
            self.conv2 = nn.Conv2d(channel_1, channel_2, kernel_size=3, padding=1, bias=True)
            self.fc = nn.Linear(channel_2 * 32 * 32, num_classes)
            nn.init.kaiming_normal_(self.fc.weight)

        def forward(self, x):
            relu1 = F.relu(self.conv1(x))
            relu2 = F.relu(self.conv2(relu1))
            return self.fc(flatten(relu2))


    class Tagger(nn.Module):  # an LSTM over fixed-length sequences, batch first, and a per-step Linear
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(4, 6, batch_first=True)
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            h, _ = self.lstm(x)
            return self.fc(h)


    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(c)
            self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(c)

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + x)


    class SmallResNet(nn.Module):  # residual adds: Elementwise(add) nodes in the IR
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 8, 3, padding=1)
            self.block1 = Block(8)
            self.block2 = Block(8)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            x = self.block2(self.block1(F.relu(self.stem(x))))
            return self.fc(torch.flatten(self.pool(x), 1))
''')

CASES = [("CNN", (1, 28, 28)), ("ConvNetPyTorch", (1, 28, 28)), ("ThreeLayerConvNet", (3, 32, 32)), ("Tagger", (7, 4)),
         ("SmallResNet", (1, 8, 8))]


def trained(module, seed):
    """Weights a training run could have left: every parameter and BatchNorm statistic moved off its init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
    return module.eval()


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return load_source(tmp_path_factory.mktemp("torch"))


def load_source(workdir):
    """MODULES written to workdir/seeds.py and imported: (path, module)."""
    import importlib.util

    path = Path(workdir) / "seeds.py"
    path.write_text(MODULES)
    spec = importlib.util.spec_from_file_location("seeds_for_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return path, mod


def compare(name, shape, path, mod, workdir):
    """Import class `name` of MODULES (written at `path`, loaded as `mod`) with trained weights through
    `netdsl import module.py:Class`, and run it on every target against the torch module itself.

    Returns ({target: max |diff|}, {target: why it did not run}, tolerance), the tolerance being
    INFER_TOL x max(1, max |torch output|). Used by bench/imports.py for the table in docs/onnx.md."""
    workdir = Path(workdir)
    torch.manual_seed(0)
    module = trained(getattr(mod, name)(), 1)
    state = workdir / "state.pt"
    torch.save(module.state_dict(), state)
    out = workdir / "imported.net"
    assert main(["import", f"{path}:{name}", "--input-shape", ",".join(map(str, shape)), "--state-dict", str(state),
                 "-o", str(out)]) == 0
    graph = load(str(out))
    weights = load_weights(workdir / "imported.npz", graph)
    x = np.random.default_rng(2).uniform(-1, 1, (3,) + shape).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x))
    want = [w.numpy() for w in (want if isinstance(want, tuple) else (want,))]
    inputs = {graph.inputs[0].name: x}
    worst, skipped = conf.check_against(want, graph, weights, inputs, COLUMNS, str(workdir))
    scale = conf.scale_of(want)
    return {c: d * scale for c, d in worst.items()}, skipped, conf.INFER_TOL * scale


@pytest.mark.parametrize("name,shape", CASES, ids=[c[0] for c in CASES])
def test_torch_module_imports_and_every_target_reproduces_it(source, tmp_path, name, shape, record_property):
    diffs, skipped, tol = compare(name, shape, *source, tmp_path)
    record_property("max_abs_diff", diffs)  # per target, in a --junitxml report too
    print(f"{name}: max |diff| per target (tolerance {tol:.1e}): {diffs}; not run: {skipped}")
    assert set(diffs) | set(skipped) == {"native"} | {c.name for c in COLUMNS}
    for column, diff in diffs.items():
        assert diff <= tol, f"{name} on {column}: differs from the source by {diff:.2e}"
    unavailable = {c: why for c, why in skipped.items() if not why.startswith("unsupported")}
    if unavailable:
        pytest.skip("NOT EXECUTED: " + "; ".join(f"{c}: {why}" for c, why in unavailable.items()))


def test_torchscript_file_imports(source, tmp_path):
    _, mod = source
    torch.manual_seed(0)
    module = trained(mod.ConvNetPyTorch(), 3)
    scripted = tmp_path / "convnet.pt"
    torch.jit.trace(module, torch.zeros(1, 1, 28, 28)).save(str(scripted))
    out = tmp_path / "convnet.net"
    assert main(["import", str(scripted), "--input-shape", "1,28,28", "-o", str(out)]) == 0
    graph = load(str(out))
    weights = load_weights(tmp_path / "convnet.npz", graph)
    x = np.random.default_rng(4).uniform(-1, 1, (2, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        want = [w.numpy() for w in module(torch.from_numpy(x))]
    got = conf.native_predict(graph, weights, {graph.inputs[0].name: x})
    for w, o in zip(want, graph.outputs):
        assert conf.max_diffs(w, got[o])[0] <= conf.INFER_TOL * conf.scale_of(want)


def test_residual_adds_import_as_elementwise_adds(source, tmp_path):
    """Each block's `out + x` is one `a + b` in the .net written, read back as an Elementwise add."""
    path, _ = source
    out = tmp_path / "resnet.net"
    assert main(["import", f"{path}:SmallResNet", "--input-shape", "1,8,8", "-o", str(out)]) == 0
    adds = [layer for layer in load(str(out)).layers if layer.kind == "Elementwise"]
    assert [layer.attr("op") for layer in adds] == ["add", "add"]
    assert sum(" + " in line for line in out.read_text().splitlines()) == 2


def test_pytorch_source_needs_an_input_shape(source, tmp_path, capsys):
    path, _ = source
    assert main(["import", f"{path}:CNN", "-o", str(tmp_path / "m.net")]) == 1
    assert "--input-shape" in capsys.readouterr().err
