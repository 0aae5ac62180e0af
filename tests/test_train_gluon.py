"""The train block's settings (issue 18) in the generated Gluon module, over 20 steps on real mxnet 1.9.

The seeded combinations of tests/test_train_settings.py (optimizer x schedule x regulariser x loss) are each
compiled to a Gluon module; ONE subprocess in the legacy venv loads the same initial weights into every
module, makes its trainer with steps_per_epoch=4 and takes 20 train_step()s on the batches the executor
sees. The losses and final weights must agree with netdsl's executor (exec/steprule.py + exec/optim.py,
the `native()` reference of that test) to 1e-4, relative to their scale. Cross-entropy gets integer
labels in half the combinations and one-hot float targets in the other half; the other losses get the
float targets conformance passes, shaped like the output.
"""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from test_emit_legacy import _python
from test_golden import ruff_or_skip
from test_train_settings import MODEL, STEPS, TOLERANCE, batches, block, combinations, native

from netdsl.emit.base import emit
from netdsl.errors import NetdslError
from netdsl.exec.weights import init_params
from netdsl.frontend import load_text

COMBOS = combinations(48, seed=18) + combinations(12, seed=1818)
# A combination with lr_unit = sample AND reduction = sum steps along 64 times the mean's gradient (8 samples,
# summed, times 8): at SGD(lr=0.05) that is chaotic (its loss jumps between 4 and 64). Gluon's weights agree
# with the executor's to float32 rounding after one step (5e-7 relative, measured) and the difference then
# grows about tenfold every three steps, to ~2e-4 after 20; so such a combination is held to 1e-3.
CHAOTIC = 1e-3


def tolerance(combo, optimizer):
    reg, loss = combo[2], combo[3]
    if reg == "lr_unit = sample" and "reduction=sum" in loss:
        return max(CHAOTIC, TOLERANCE[optimizer])
    return TOLERANCE[optimizer]


# settings the Gluon script still refuses (E802), each with its reason: none today
REFUSED: dict = {}

DRIVER = """
import importlib.util, json, sys
import numpy as np

jobs = json.load(open(sys.argv[1]))
results = []
for i, job in enumerate(jobs):
    spec = importlib.util.spec_from_file_location("gluon_combo_%d" % i, job["module"])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.build_model()
    mod.load_netdsl_weights(model, job["weights"])
    trainer = mod.make_trainer(model, steps_per_epoch=4)
    data = np.load(job["data"])
    losses = [float(mod.train_step(model, trainer, {"x": data["x%d" % s]}, data["y%d" % s]))
              for s in range(job["steps"])]
    mod.export_netdsl_weights(model, job["out"])
    results.append(losses)
json.dump(results, open(sys.argv[2], "w"))
"""


def _targets(graph, labels, one_hot):
    """What conformance passes: int labels, or float targets shaped like the (N, 3) output."""
    if graph.training.loss == "cross_entropy_with_softmax" and not one_hot:
        return labels.astype(np.int64)
    return np.eye(3, dtype=np.float32)[labels]


def test_twenty_steps_match_the_executor(tmp_path):
    py = _python("gluon")
    jobs, expected = [], []
    data = batches()
    for i, (opt, schedule, reg, loss) in enumerate(COMBOS):
        graph = load_text(MODEL % block(opt, schedule, reg, loss), f"c{i}.net")
        params = init_params(graph, i)
        expected.append(native(graph, params, data))
        module = tmp_path / f"c{i}.py"
        module.write_text(emit(graph, "gluon"))
        np.savez(tmp_path / f"w{i}.npz", **params)
        arrays = {}
        for s, (x, y) in enumerate(data):
            arrays[f"x{s}"] = x
            arrays[f"y{s}"] = _targets(graph, y, one_hot=i % 2 == 1)
        np.savez(tmp_path / f"d{i}.npz", **arrays)
        jobs.append({"module": str(module), "weights": str(tmp_path / f"w{i}.npz"), "data": str(tmp_path / f"d{i}.npz"),
                     "steps": STEPS, "out": str(tmp_path / f"out{i}.npz")})
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    (tmp_path / "driver.py").write_text(DRIVER)
    run = subprocess.run([py, str(tmp_path / "driver.py"), str(tmp_path / "jobs.json"), str(tmp_path / "res.json")],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    results = json.loads((tmp_path / "res.json").read_text())
    failures = []
    for i, combo in enumerate(COMBOS):
        n_losses, n_params = expected[i]
        tol = tolerance(combo, load_text(MODEL % block(*combo), "t.net").training.optimizer)
        g_params = dict(np.load(tmp_path / f"out{i}.npz"))
        scale = max(1.0, max(abs(v) for v in n_losses))
        if not np.allclose(results[i], n_losses, rtol=tol, atol=tol * scale):
            failures.append(f"c{i} {combo}: losses {results[i]} != {n_losses}")
        for k, v in n_params.items():
            if not np.allclose(g_params[k], v, rtol=tol, atol=tol * max(1.0, float(np.abs(v).max()))):
                failures.append(f"c{i} {combo}: {k} differs by {np.abs(g_params[k] - v).max()}")
    assert not failures, "\n".join(failures)
    modules = [job["module"] for job in jobs]
    for command in (["format", "--check"], ["check"]):  # every setting's code stays ruff-clean
        lint = subprocess.run([ruff_or_skip(), *command, "--isolated", "--no-cache", *modules], capture_output=True,
                              text=True, timeout=300)
        assert lint.returncode == 0, lint.stdout[-4000:]


def test_every_choice_is_drawn_and_none_is_refused():
    for k, choices in enumerate(("OPTIMIZERS", "SCHEDULES", "REGULARISERS", "LOSSES")):
        import test_train_settings as settings

        assert {c[k] for c in COMBOS} == set(getattr(settings, choices))
    assert len(COMBOS) >= 40
    for combo in COMBOS:
        graph = load_text(MODEL % block(*combo), "c.net")
        try:
            emit(graph, "gluon")
        except NetdslError as e:
            assert combo in REFUSED, f"{combo} refused: {e}"


@pytest.mark.parametrize("setting", ["optimizer = Adagrad(lr=0.1, initial_accumulator=0.1)",
                                     "loss = l2(reduction=sum)", "weight_decay = decoupled(0.1)",
                                     "lr_unit = sample", "clip_value = 1.0\n    clip_norm = 2.0"])
def test_a_setting_reaches_the_generated_code(setting):
    source = emit(load_text(MODEL % ("    " + setting), "s.net"), "gluon")
    compile(source, "gluon.py", "exec")
