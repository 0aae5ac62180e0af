"""`netdsl conformance`: the same .net must compute the same function on every target.

For each model and target column: generate the code, load the same seeded
canonical weights into the real framework (in its own venv), run the same
batch in inference mode, and compare with the native executor. Then, from the
same weights and batch, take one plain-SGD step (dropout disabled) there and
natively, and compare the exported weights. A cell whose framework cannot run
here is "not run" with its reason, never "pass".
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import ir
from .errors import NetdslError
from .conformance_steps import training_loss  # noqa: F401  (moved there; conf.training_loss stays)

ROOT = Path(__file__).resolve().parent.parent
DRIVER = Path(__file__).resolve().parent / "conformance_driver.py"
INFER_TOL = 1e-5  # x max(1, max|output|), float32
STEP_TOL = 1e-4  # x max(1, max|weight|), on the weights after one SGD step
STEP_LR = 0.1


@dataclass(frozen=True)
class Column:
    name: str
    target: str  # netdsl.emit target
    python_env: str | None  # env var naming the interpreter; None: this one
    default_python: str | None
    env: dict = field(default_factory=dict)
    inference_only: bool = False  # no training step to compare (ONNX is an inference format)

    def python(self) -> tuple[str | None, str]:
        """The interpreter for this column, or None and the reason it cannot run here."""
        if self.python_env is None:
            return sys.executable, ""
        path = os.environ.get(self.python_env)
        if path is None:
            path = str(ROOT / self.default_python)
        if not path:
            return None, os.environ.get("NETDSL_CNTK_UNAVAILABLE", f"{self.python_env} is empty")
        if not os.path.exists(path):
            return None, f"{path} does not exist (run scripts/setup.sh)"
        return path, ""


COLUMNS = [
    Column("pytorch", "pytorch", None, None),
    Column("keras/torch", "keras", None, None, {"KERAS_BACKEND": "torch"}),
    Column("keras/tensorflow", "keras", None, None, {"KERAS_BACKEND": "tensorflow"}),
    Column("tf-estimator", "tf-estimator", "NETDSL_LEGACY_PYTHON", ".venvs/legacy/bin/python"),
    Column("gluon", "gluon", "NETDSL_LEGACY_PYTHON", ".venvs/legacy/bin/python"),
    Column("cntk", "cntk", "NETDSL_CNTK_PYTHON", ".venvs/cntk/bin/python-cntk"),
]
# Formats without a trainer: compared in inference only, and kept out of COLUMNS, which the
# tests of training (traps, transfer, dropout) iterate.
INFERENCE_COLUMNS = [Column("onnx", "onnx", None, None, inference_only=True)]
ALL_COLUMNS = COLUMNS + INFERENCE_COLUMNS


def driver_error(res, missing: str) -> str:
    """A failed job's reason: the exception's own text (the driver's message), else the traceback's last line."""
    if res is None:
        return missing
    if res.get("message"):
        return res["message"]
    lines = res.get("error", missing).strip().splitlines()
    return lines[-1] if lines else ""


@dataclass
class Cell:
    status: str  # pass, FAIL, not run, unsupported
    abs_diff: float | None = None
    rel_diff: float | None = None
    step_diff: float | None = None
    step_status: str = ""
    reason: str = ""

    def short(self) -> str:
        if self.status in ("pass", "FAIL"):
            step = f" step {self.step_status} {self.step_diff:.1e}" if self.step_diff is not None else (
                f" step {self.step_status}" if self.step_status else "")
            return f"{self.status} {self.abs_diff:.1e}{step}"
        return self.status


# ------------------------------------------------------------------ inputs
def conformance_params(graph: ir.Graph, seed: int) -> dict:
    """Seeded weights in which every parameter matters: no zero biases, no identity BatchNorm."""
    from .exec.weights import init_params

    params = init_params(graph, seed)
    rng = np.random.default_rng(seed + 1)
    for p in graph.params():
        short = p.name.rsplit(".", 1)[1]
        if short in ("b", "bias"):
            params[p.name] = rng.uniform(-0.3, 0.3, p.shape).astype(np.float32)
        elif short == "scale":
            params[p.name] = rng.uniform(0.5, 1.5, p.shape).astype(np.float32)
        elif short == "running_mean":
            params[p.name] = rng.uniform(-0.5, 0.5, p.shape).astype(np.float32)
        elif short == "running_var":
            params[p.name] = rng.uniform(0.5, 1.5, p.shape).astype(np.float32)
        elif short in ("alpha", "Sdh", "Sdc", "Sct", "Sht"):  # a Stabilizer's (an LSTM's) factor is 1 at its initial alpha: move it away
            params[p.name] = rng.uniform(0.2, 1.5, p.shape).astype(np.float32)
    return params


def batch_for(graph: ir.Graph, seed: int, n: int = 3, steps: int = 5) -> dict:
    rng = np.random.default_rng(seed + 2)
    rescaled = {node.inputs[0] for node in graph.nodes if graph.layer(node.layer).kind == "Rescale"}
    out = {}
    for inp in graph.inputs:
        t = inp.type
        shape = tuple(n if d is None else d for d in t.batch_shape(n))
        shape = tuple(steps if d is None else d for d in shape)
        if t.vocab is not None:
            ids = rng.integers(0, t.vocab, shape).astype(np.int64)
            ids.flat[0], ids.flat[-1] = 0, t.vocab - 1  # both ends of the vocabulary, always
            out[inp.name] = ids
        elif inp.name in rescaled:
            out[inp.name] = rng.uniform(0, 255, shape).astype(np.float32)
        else:
            out[inp.name] = rng.uniform(-1, 1, shape).astype(np.float32)
    return out


def step_graph(graph: ir.Graph) -> ir.Graph:
    """The graph for the one-step check: plain SGD, dropout off (masks are random per framework)."""
    layers = tuple(l.with_attrs(rate=0.0) if l.kind == "Dropout" else l for l in graph.layers)
    training = graph.training or ir.Training()
    training = replace(training, optimizer="SGD",
                       optimizer_attrs=(("lr", STEP_LR), ("momentum", 0.0), ("nesterov", False)))
    return replace(graph, layers=layers, training=training)


def targets_for(graph: ir.Graph, outputs: dict, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 3)
    first = outputs[graph.outputs[0]]
    loss = (graph.training or ir.Training()).loss
    if loss == "cross_entropy_with_softmax":
        if first.ndim == 4:  # a feature map: one class per position, on the channel axis (docs/ir.md)
            return rng.integers(0, first.shape[1], first.shape[:1] + first.shape[2:]).astype(np.int64)
        return rng.integers(0, first.shape[-1], first.shape[:-1]).astype(np.int64)
    return rng.uniform(-1, 1, first.shape).astype(np.float32)


# ------------------------------------------------------------------ native
def native_predict(graph: ir.Graph, params: dict, inputs: dict, lengths: dict | None = None) -> dict:
    from .exec.graph import Executor

    return Executor(graph, params).forward(inputs, training=False, lengths=lengths)


def native_step(graph: ir.Graph, params: dict, inputs: dict, targets: np.ndarray, lengths: dict | None = None) -> dict:
    from .conformance_lengths import output_sources, valid
    from .data.feed import masked_loss
    from .exec import losses
    from .exec.graph import Executor
    from .exec.steprule import apply_max_norm, max_norms

    ex = Executor(graph, {k: v.copy() for k, v in params.items()})
    outs = ex.forward(inputs, training=True, rng=np.random.default_rng(0), lengths=lengths)
    first = graph.outputs[0]
    src = output_sources(graph).get(first)
    mask = valid(lengths[src], outs[first].shape[1]) if lengths and src in lengths else None
    if graph.training.loss == "cross_entropy_with_softmax":
        _, grad = masked_loss(losses.softmax_cross_entropy, outs[first], targets, mask)
    else:
        _, grad = masked_loss(losses.mse, outs[first], targets, mask)
    grads = ex.backward({first: grad})
    new = {k: v.copy() for k, v in ex.params.items()}
    for name, g in grads.items():
        new[name] = new[name] - np.float32(STEP_LR) * g
    for name, m in max_norms(graph).items():  # the targets constrain after every step, as the trainer does
        apply_max_norm(new[name], m)
    return new


# ------------------------------------------------------------------ running
def max_diffs(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    if ref.shape != got.shape:
        return float("inf"), float("inf")
    diff = np.abs(ref - got)
    abs_diff = float(diff.max()) if diff.size else 0.0
    rel = float((diff / np.maximum(np.abs(ref), 1e-6)).max()) if diff.size else 0.0
    return abs_diff, rel


def scale_of(arrays) -> float:
    return max([1.0] + [float(np.abs(a).max()) for a in arrays if np.asarray(a).size])


def work_stems(models) -> dict:
    """{model path: the stem its work files are named by}, unique within one run: a/model.net and
    b/model.net would otherwise write the same files, and one would be checked against the other's."""
    stems, seen = {}, set()
    for path in models:
        stem, k = Path(path).stem, 1
        while stem in seen:
            k += 1
            stem = f"{Path(path).stem}_{k}"
        seen.add(stem)
        stems.setdefault(path, stem)
    return stems


def run(models: list[str], columns: list[Column], seed: int = 0, step: bool = True, workdir: str | None = None,
        log=print) -> dict:
    """Returns {(model, column name): Cell}."""
    from .conformance_lengths import checks_padding, draw_lengths, zero_padding
    from .emit.base import emit
    from .exec.weights import save_weights
    from .frontend import load

    if not workdir:  # a temp dir of our own, removed at the end: nothing is left behind
        with tempfile.TemporaryDirectory(prefix="netdsl-conformance-") as d:
            return run(models, columns, seed, step, d, log)
    tmp = Path(workdir)
    tmp.mkdir(parents=True, exist_ok=True)
    cells: dict = {}
    prepared = {}
    stems = work_stems(models)
    for path in models:
        graph = load(path)
        stem = stems[path]
        params = conformance_params(graph, seed)
        inputs = batch_for(graph, seed)
        full_ref = native_predict(graph, params, inputs)  # for the columns without masks
        sgraph = step_graph(graph)
        targets = targets_for(sgraph, full_ref, seed)
        full_stepped = native_step(sgraph, params, inputs, targets) if step else None
        np.savez(tmp / f"{stem}.full.npz", **inputs)
        lengths = draw_lengths(graph, inputs, seed)  # pads the sequences of `inputs` in place
        ref = zero_padding(graph, native_predict(graph, params, inputs, lengths), lengths)
        stepped = native_step(sgraph, params, inputs, targets, lengths) if step else None
        save_weights(tmp / f"{stem}.weights.npz", params)
        np.savez(tmp / f"{stem}.inputs.npz", **inputs)
        np.savez(tmp / f"{stem}.lengths.npz", **lengths)
        np.savez(tmp / f"{stem}.targets.npz", targets=targets)
        prepared[path] = (graph, sgraph, ref, stepped, stem, lengths, full_ref, full_stepped)
    for col in columns:
        if col.target == "onnx":
            for path, (graph, sgraph, ref, stepped, stem, lengths, full_ref, _) in prepared.items():
                masks = checks_padding(col.target, graph)
                cells[(path, col.name)] = onnx_cell(graph, tmp / f"{stem}.weights.npz",
                                                    tmp / f"{stem}.{'inputs' if masks else 'full'}.npz",
                                                    ref if masks else full_ref, lengths if masks else None)
                cells[(path, col.name)].reason += _unpadded_note(lengths, masks)
            continue
        python, why = col.python()
        jobs = []
        for path, (graph, sgraph, ref, stepped, stem, lengths, full_ref, full_stepped) in prepared.items():
            masks = checks_padding(col.target, graph)
            if python is None:
                cells[(path, col.name)] = Cell("not run", reason=why)
                continue
            try:
                code = emit(graph, col.target)
                step_code = emit(sgraph, col.target) if step else None
            except ModuleNotFoundError:
                cells[(path, col.name)] = Cell("not run", reason=f"target {col.target} is not implemented")
                continue
            except NetdslError as e:
                cells[(path, col.name)] = Cell("unsupported", reason="; ".join(d.message for d in e.diagnostics))
                continue
            tag = col.name.replace("/", "_")
            module = tmp / f"{stem}_{tag}.py"
            module.write_text(code)
            batch = {"inputs": str(tmp / f"{stem}.full.npz")}
            if masks and lengths:
                batch = {"inputs": str(tmp / f"{stem}.inputs.npz"), "lengths": str(tmp / f"{stem}.lengths.npz")}
            jobs.append({"id": path, "module": str(module), **batch,
                         "predict_weights": str(tmp / f"{stem}.weights.npz"),
                         "outputs": str(tmp / f"{stem}_{tag}.outputs.npz")})
            if step:
                smodule = tmp / f"{stem}_{tag}_step.py"
                smodule.write_text(step_code)
                jobs.append({"id": path + "#step", "module": str(smodule), **batch,
                             "step_weights": str(tmp / f"{stem}.weights.npz"),
                             "targets": str(tmp / f"{stem}.targets.npz"),
                             "stepped": str(tmp / f"{stem}_{tag}.stepped.npz")})
        if not jobs:
            continue
        results = run_driver(python, col, jobs, tmp, log)
        for path, (graph, sgraph, ref, stepped, stem, lengths, full_ref, full_stepped) in prepared.items():
            if (path, col.name) in cells:
                continue
            masks = checks_padding(col.target, graph)
            if not masks:
                ref, stepped = full_ref, full_stepped
            tag = col.name.replace("/", "_")
            res = results.get(path)
            if res is None or not res.get("ok"):
                reason = driver_error(res, "the driver did not report this job")
                cells[(path, col.name)] = Cell("FAIL", float("inf"), float("inf"), reason=reason)
                continue
            got = dict(np.load(tmp / f"{stem}_{tag}.outputs.npz", allow_pickle=False))
            if masks:
                got = zero_padding(graph, got, lengths)
            worst_abs, worst_rel = 0.0, 0.0
            for name, r in ref.items():
                a, rl = max_diffs(r, got.get(name, np.zeros(0)))
                worst_abs, worst_rel = max(worst_abs, a), max(worst_rel, rl)
            ok = worst_abs <= INFER_TOL * scale_of(ref.values())
            cell = Cell("pass" if ok else "FAIL", worst_abs, worst_rel)
            if step:
                sres = results.get(path + "#step")
                if sres is None or not sres.get("ok"):
                    cell.step_status = "FAIL"
                    cell.reason = "step: " + driver_error(sres, "no result")
                    cell.status = "FAIL"
                else:
                    mine = dict(np.load(tmp / f"{stem}_{tag}.stepped.npz", allow_pickle=False))
                    worst = 0.0
                    for name, w in stepped.items():
                        a, _ = max_diffs(w, mine.get(name, np.zeros(0)))
                        worst = max(worst, a / scale_of([w]))
                    cell.step_diff = worst
                    cell.step_status = "pass" if worst <= STEP_TOL else "FAIL"
                    if worst > STEP_TOL:
                        cell.status = "FAIL"
            cell.reason += _unpadded_note(lengths, masks)
            cells[(path, col.name)] = cell
    return cells


def _unpadded_note(lengths: dict, masks: bool) -> str:
    return "" if masks or not lengths else "padded batches not checked: this target takes no lengths yet"


def predict_on(columns: list[Column], graph: ir.Graph, params: dict, inputs: dict, workdir: str) -> dict:
    """{column name: outputs, or the reason it cannot run}: `graph` with `params` on each real framework.

    For checks whose reference is not the native executor (an imported model against its source)."""
    from .emit.base import emit
    from .exec.weights import save_weights

    tmp = Path(workdir)
    save_weights(tmp / "predict.weights.npz", params)
    np.savez(tmp / "predict.inputs.npz", **inputs)
    out = {}
    for col in columns:
        python, why = col.python()
        if python is None:
            out[col.name] = why
            continue
        tag = col.name.replace("/", "_")
        module = tmp / f"predict_{tag}.py"
        try:
            module.write_text(emit(graph, col.target))
        except NetdslError as e:
            out[col.name] = "unsupported: " + "; ".join(d.message for d in e.diagnostics)
            continue
        job = {"id": "predict", "module": str(module), "inputs": str(tmp / "predict.inputs.npz"),
               "predict_weights": str(tmp / "predict.weights.npz"), "outputs": str(tmp / f"predict_{tag}.npz")}
        res = run_driver(python, col, [job], tmp, lambda m: None).get("predict")
        if res is None or not res.get("ok"):
            raise RuntimeError(f"{col.name}: predict failed: {(res or {}).get('error', 'no result')}")
        out[col.name] = dict(np.load(tmp / f"predict_{tag}.npz", allow_pickle=False))
    return out


def single_output(graph: ir.Graph, name: str) -> ir.Graph:
    """The part of `graph` that computes output `name`, as a graph of its own (for one-output targets)."""
    by_name = {n.name: n for n in graph.nodes}
    keep, todo = set(), [name]
    while todo:
        v = todo.pop()
        if v in by_name and v not in keep:
            keep.add(v)
            todo.extend(by_name[v].inputs)
    nodes = tuple(n for n in graph.nodes if n.name in keep)
    used = {n.layer for n in nodes}
    inputs = {i for n in nodes for i in n.inputs}
    return replace(graph, outputs=(name,), nodes=nodes, layers=tuple(l for l in graph.layers if l.name in used),
                   inputs=tuple(i for i in graph.inputs if i.name in inputs))


def check_against(want: list, graph: ir.Graph, params: dict, inputs: dict, columns: list[Column],
                  workdir: str) -> tuple[dict, dict]:
    """Run `graph` natively and on `columns`; compare each output with `want` (the source framework's).

    Returns ({column: worst |diff|}, {column: why it did not run}). A target that can hold only one
    output is run once per output."""
    tol_scale = scale_of(want)
    results = {"native": native_predict(graph, params, inputs)}
    results.update(predict_on(columns, graph, params, inputs, workdir))
    worst, skipped = {}, {}
    for col in columns:
        got = results[col.name]
        if isinstance(got, str) and got.startswith("unsupported") and len(graph.outputs) > 1:
            merged = {}
            for k, name in enumerate(graph.outputs):
                sub = single_output(graph, name)
                one = predict_on([col], sub, {p.name: params[p.name] for p in sub.params()},
                                 {i.name: inputs[i.name] for i in sub.inputs}, str(Path(workdir)))[col.name]
                if isinstance(one, str):
                    merged = one
                    break
                merged[name] = one[name]
            results[col.name] = merged
    for column, got in results.items():
        if isinstance(got, str):
            skipped[column] = got
            continue
        worst[column] = max(max_diffs(w, got[o])[0] for w, o in zip(want, graph.outputs)) / tol_scale
    return worst, skipped


def onnx_cell(graph: ir.Graph, weights: Path, inputs: Path, ref: dict, lengths: dict | None = None) -> Cell:
    """Export with the same weights, run on onnxruntime and on onnx's reference evaluator; the worse one counts.
    A padded batch's lengths are fed as the optional inputs <input>_lens (onnx/lengths.py)."""
    try:
        from .onnx import check
        from .onnx.export import to_onnx
    except ImportError as e:  # the optional extra netdsl[onnx]
        return Cell("not run", reason=f"onnx is not installed ({e})")
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return Cell("not run", reason=f"onnx/onnxruntime are not installed ({e})")
    params = dict(np.load(weights, allow_pickle=False))
    batch = dict(np.load(inputs, allow_pickle=False))
    batch.update({f"{k}_lens": np.asarray(v, np.int64) for k, v in (lengths or {}).items()})
    try:
        model = to_onnx(graph, params)
    except NetdslError as e:
        return Cell("unsupported", reason="; ".join(d.message for d in e.diagnostics))
    worst_abs, worst_rel, reason = 0.0, 0.0, ""
    try:
        for oracle, outs in check.both(model, batch, list(graph.outputs)).items():
            if lengths:  # only valid positions are compared (conformance_lengths.zero_padding)
                from .conformance_lengths import zero_padding

                outs = zero_padding(graph, outs, lengths)
            for name, r in ref.items():
                a, rl = max_diffs(r, outs[name])
                if a > worst_abs:
                    reason = f"worst on {oracle}"
                worst_abs, worst_rel = max(worst_abs, a), max(worst_rel, rl)
    except Exception as e:  # noqa: BLE001 -- a runtime that rejects the model fails the cell, with its message
        return Cell("FAIL", float("inf"), float("inf"), reason=f"{type(e).__name__}: {e}".splitlines()[0])
    ok = worst_abs <= INFER_TOL * scale_of(ref.values())
    return Cell("pass" if ok else "FAIL", worst_abs, worst_rel, step_status="n/a", reason="" if ok else reason)


def run_driver(python: str, col: Column, jobs: list, tmp: Path, log) -> dict:
    """{job id: result} of `jobs` run in the column's interpreter, one framework process for all of them.

    A framework that crashes its process (a signal, not an exception) takes the jobs after the one it
    died in along: those are run again in a fresh process, and the job it died in once more on its own,
    so that a crash is charged to the model that causes it, not to the ones batched after it (nor to the
    state a long batch accumulates: a job that passes on its own passes)."""
    out: dict = {}
    todo, attempt = list(jobs), 0
    while todo:
        attempt += 1
        results, code, stderr = run_driver_once(python, col, todo, tmp, log, attempt)
        out.update(results)
        if code == 0:
            break
        unreported = [j for j in todo if j["id"] not in results]
        if not unreported:
            break
        died_in, rest = unreported[0], unreported[1:]
        if len(todo) > 1:  # once more alone: does this job itself crash the framework?
            alone, code, stderr = run_driver_once(python, col, [died_in], tmp, log, f"{attempt}_alone")
            out.update(alone)
        if died_in["id"] not in out:
            out[died_in["id"]] = {"id": died_in["id"], "ok": False, "message": driver_exit(code, stderr)}
        todo = rest
    return out


def run_driver_once(python: str, col: Column, jobs: list, tmp: Path, log, attempt=1) -> tuple:
    tag = col.name.replace("/", "_") + ("" if attempt == 1 else f"_{attempt}")
    jobs_path, results_path = tmp / f"jobs_{tag}.json", tmp / f"results_{tag}.json"
    jobs_path.write_text(json.dumps(jobs, indent=1))
    env = dict(os.environ, **col.env)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("KERAS_HOME", str(tmp / "keras-home"))
    # the driver's temp files (tf-estimator model dirs) go in a scratch dir removed here: a driver that
    # crashes never runs its own atexit cleanup
    scratch = tmp / f"scratch_{tag}"
    scratch.mkdir(exist_ok=True)
    env["TMPDIR"] = str(scratch)
    log(f"[conformance] {col.name}: {len(jobs)} jobs in {python}")
    try:
        proc = subprocess.run([python, str(DRIVER), str(jobs_path), str(results_path)], env=env,
                              capture_output=True, text=True, timeout=3600)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if proc.returncode != 0:
        log(f"[conformance] {col.name}: driver exited {proc.returncode}: {proc.stderr[-2000:]}")
    try:
        results = json.loads(results_path.read_text())
    except (OSError, ValueError):
        results = []
    return {r["id"]: r for r in results}, proc.returncode, proc.stderr


def driver_exit(code: int, stderr: str) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"the framework's process died with signal {name} (a crash inside the framework)"
    last = [line for line in stderr.strip().splitlines() if line.strip()]
    return f"the framework's process exited {code}" + (f": {last[-1].strip()}" if last else "")


# ------------------------------------------------------------------ reporting
def matrix_text(models: list[str], columns: list[Column], cells: dict) -> str:
    names = [Path(m).stem for m in models]
    w0 = max(len(n) for n in names) + 2
    widths = [max(len(c.name), max(len(cells[(m, c.name)].short()) for m in models)) + 2 for c in columns]
    lines = ["".ljust(w0) + "".join(c.name.ljust(w) for c, w in zip(columns, widths))]
    for m, n in zip(models, names):
        lines.append(n.ljust(w0) + "".join(cells[(m, c.name)].short().ljust(w) for c, w in zip(columns, widths)))
    return "\n".join(lines)


def matrix_markdown(models: list[str], columns: list[Column], cells: dict, command: str) -> str:
    out = ["# Conformance", "",
           "Generated by `" + command + "`; do not edit.", "",
           f"Each cell: the same seeded canonical weights and the same batch (3 samples; sequences of 5 steps) in "
           f"inference mode on the target's real framework, against netdsl's native executor. "
           f"**Inference** passes when max |diff| <= {INFER_TOL:g} x max(1, max |output|) (float32). "
           f"**Step**: one plain-SGD step (lr {STEP_LR}, dropout off) from the same weights and batch; passes when "
           f"every updated weight is within {STEP_TOL:g} x max(1, max |weight|) of the native step. "
           f"`rel` is the largest elementwise |diff| / max(|native|, 1e-6): large where an output is near 0, "
           f"so it is shown, not judged. The **onnx** column is inference only: the model exported by `netdsl export` "
           f"runs on onnxruntime and on onnx's reference evaluator, and the worse of the two is shown. "
           f"A cell a framework fails shows the framework's own exception, type and text, without the stacks "
           f"some put into their messages (CNTK's C++ call stack, TensorFlow's op-definition stack).", "",
           "| model | " + " | ".join(c.name for c in columns) + " |",
           "|---|" + "---|" * len(columns)]
    notes = []
    for m in models:
        row = []
        for c in columns:
            cell = cells[(m, c.name)]
            if cell.status in ("pass", "FAIL"):
                txt = f"{cell.status}: abs {cell.abs_diff:.1e}, rel {cell.rel_diff:.1e}"
                if cell.step_diff is not None:
                    txt += f"; step {cell.step_status} {cell.step_diff:.1e}"
                elif cell.step_status:
                    txt += f"; step {cell.step_status}"
                if cell.reason:
                    notes.append(f"- {Path(m).stem} on {c.name}: {cell.reason}")
            else:
                txt = f"{cell.status}: {cell.reason}" if cell.status == "unsupported" else f"not run: {cell.reason}"
            row.append(txt.replace("|", "\\|"))
        out.append(f"| {Path(m).stem} | " + " | ".join(row) + " |")
    if notes:
        out += ["", "## Failures and notes", ""] + notes  # notes: e.g. padded batches not checked
    from .conformance_steps import doc_section

    return "\n".join(out) + "\n\n" + doc_section()


def register(sub) -> None:
    p = sub.add_parser("conformance", help="compare every target with the native executor, numerically")
    p.add_argument("files", nargs="*", metavar="FILE", help="models (default: models/*.net)")
    p.add_argument("--targets", "--columns", dest="targets", help="comma-separated columns: " + ",".join(c.name for c in ALL_COLUMNS))
    p.add_argument("--no-step", action="store_true", help="skip the one-SGD-step comparison")
    p.add_argument("--steps", type=int, metavar="N", help="instead: N steps of each model's own training block "
                   "on every column (losses and weights; docs/conformance.md)")
    p.add_argument("--labels", choices=("seeded", "labels", "one-hot"), default="seeded",
                   help="--steps, cross-entropy: int labels, one-hot rows, or a seeded choice per model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--doc", metavar="PATH", help="also write the matrix as markdown (e.g. docs/conformance.md)")
    p.add_argument("--workdir", metavar="DIR", help="keep generated code and arrays here")
    p.set_defaults(func=cmd_conformance)


def cmd_conformance(args) -> int:
    files = args.files or sorted(str(p.relative_to(Path.cwd())) if p.is_relative_to(Path.cwd()) else str(p)
                                 for p in (ROOT / "models").glob("*.net"))
    columns = ALL_COLUMNS
    if args.targets:
        wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
        unknown = [t for t in wanted if t not in {c.name for c in ALL_COLUMNS}]
        if unknown:
            print(f"netdsl conformance: error: unknown target(s) {', '.join(unknown)}; "
                  f"choose from {', '.join(c.name for c in ALL_COLUMNS)}", file=sys.stderr)
            return 2
        columns = [c for c in ALL_COLUMNS if c.name in wanted]
    if args.steps is not None:
        from .conformance_steps import cmd_steps

        return cmd_steps(args, files, columns)
    cells = run(files, columns, seed=args.seed, step=not args.no_step, workdir=args.workdir,
                log=lambda m: print(m, file=sys.stderr))
    print(matrix_text(files, columns, cells))
    for (m, c), cell in sorted(cells.items()):
        if cell.reason and cell.status != "pass":
            print(f"{Path(m).stem} / {c}: {cell.status}: {cell.reason}", file=sys.stderr)
    if args.doc:
        command = "netdsl conformance" + (f" --targets {args.targets}" if args.targets else "") + f" --doc {args.doc}"
        from .fsutil import atomic_write

        atomic_write(args.doc, matrix_markdown(files, columns, cells, command))
    failed = [k for k, c in cells.items() if c.status == "FAIL"]
    return 1 if failed else 0
