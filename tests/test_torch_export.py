"""The generated PyTorch module writes a torch.export program (issue 14: the model still exports to
torch.export and to canonical weights); a fresh process with torch alone (no netdsl, no generated code)
loads it and computes what the module computes, at a batch size and a sequence length other than the
example's."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from netdsl.emit.base import emit  # noqa: E402
from netdsl.frontend import load  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# torch.export for fixed-length models; TorchScript where torch.export fixes a sequence's length (nn.LSTM)
MODELS = {"keras_cnn": ".pt2", "bilstm_tagger": ".torchscript.pt", "dssm": ".pt2", "row_lstm": ".pt2"}

LOADER = """
import sys
import numpy as np
import torch
if sys.argv[1].endswith(".pt2"):
    program = torch.export.load(sys.argv[1]).module()
else:
    program = torch.jit.load(sys.argv[1])
with np.load(sys.argv[2]) as z:
    args = [torch.as_tensor(z[k]) for k in sorted(z.files)]
out = program(*args)
out = out if isinstance(out, tuple) else (out,)
np.savez(sys.argv[3], *[o.detach().numpy() for o in out])
"""


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("stem", MODELS)
def test_export_reloads_without_netdsl(tmp_path, stem):
    graph = load(str(ROOT / "models" / f"{stem}.net"))
    (tmp_path / "gen.py").write_text(emit(graph, "pytorch"))
    mod = _module(tmp_path / "gen.py", f"gen_export_{stem}")
    model = mod.build_model()
    written = mod.export_native(model, str(tmp_path / "m.pt2"))
    assert written == str(tmp_path / ("m" + MODELS[stem]))
    rng = np.random.default_rng(0)
    inputs = {}
    for name, shape in mod.INPUTS.items():  # 5 samples, 7 steps: neither is the example's 2
        dims = [5 if i == 0 else 7 if d is None else d for i, d in enumerate(shape)]
        vocab = next((i.type.vocab for i in graph.inputs if i.name == name), None)
        inputs[name] = rng.integers(0, vocab, dims) if vocab else rng.standard_normal(dims).astype(np.float32)
    want = mod.predict(model, inputs)
    order = {name: f"{i:03d}" for i, name in enumerate(mod.INPUTS)}  # forward()'s argument order
    np.savez(tmp_path / "in.npz", **{order[k]: v for k, v in inputs.items()})
    (tmp_path / "loader.py").write_text(LOADER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "loader.py", written, "in.npz", "out.npz"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(tmp_path / "out.npz") as z:
        got = [z[f"arr_{i}"] for i in range(len(z.files))]
    for name, value in zip(mod.OUTPUTS, got):
        np.testing.assert_allclose(value, want[name], rtol=1e-5, atol=1e-5)
