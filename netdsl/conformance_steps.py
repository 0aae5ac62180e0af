"""`netdsl conformance --steps N`: N training steps of the model's own training block on every column.

From the same seeded weights and one batch (conformance.batch_for), each column's generated module makes
its trainer (`make_trainer(model, steps_per_epoch=4)`: a per-epoch schedule changes every 4 steps) and
calls `train_step` N times on that batch; the native executor does the same (exec/steprule.StepRule).
Dropout is off (its masks are random per framework); everything else is the model's training block.
Every step's loss and the final weights are compared, relative to their scale (max(1, |value|)), with
the tolerance of the optimizer below. A column whose generated code refuses a setting (E802) is
"unsupported" with the code and the setting's message; it is never compared with something else.

Targets, by loss: cross_entropy_with_softmax int class labels (shaped like the output without its class
axis) or the same labels as float32 one-hot rows shaped like the output: a seeded choice per model
(label_form), so a run over many models compares both forms; binary_cross_entropy_with_logits uniform
[0, 1]; squared_error and l2 uniform (-1, 1), both float32 shaped like the output.
"""
from __future__ import annotations

import tempfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import ir
from .errors import NetdslError

STEPS_PER_EPOCH = 4
NO_GRADIENT = 1e-6  # x the largest gradient element: a parameter whose gradient never exceeds it has none
# Relative to max(1, |value|), on every step's loss and on the final weights. Over 20 steps float32
# rounding compounds through each optimizer's state; every optimizer of the train block holds 1e-4
# (tests/test_train_settings.py: the executor against torch, 48 combinations).
TOLERANCE = {"SGD": 1e-4, "Adam": 1e-4, "AdamW": 1e-4, "RMSProp": 1e-4, "Adadelta": 1e-4, "Adagrad": 1e-4}


def tolerance(graph: ir.Graph) -> float:
    return TOLERANCE[(graph.training or ir.Training()).optimizer]


@dataclass
class StepsCell:
    status: str  # pass, FAIL, not run, unsupported, n/a
    loss_diff: float | None = None  # worst |loss diff| / max(1, |native loss|) over the steps
    weight_diff: float | None = None  # worst max |diff| / max(1, max |weight|) over the parameters
    tol: float | None = None
    reason: str = ""
    codes: tuple = ()  # the diagnostics' codes of an unsupported cell (E802: the target refuses a setting)
    form: str = ""  # "one-hot" when cross-entropy's targets were one-hot rows

    def short(self) -> str:
        if self.status in ("pass", "FAIL") and self.loss_diff is not None:
            one_hot = " one-hot" if self.form == "one-hot" else ""
            return f"{self.status} loss {self.loss_diff:.1e} w {self.weight_diff:.1e}{one_hot}"
        if self.status == "unsupported":
            return "unsupported " + ",".join(self.codes)
        return self.status


def steps_graph(graph: ir.Graph) -> ir.Graph:
    """The model with its own training block, dropout off."""
    layers = tuple(l.with_attrs(rate=0.0) if l.kind == "Dropout" else l for l in graph.layers)
    return replace(graph, layers=layers, training=graph.training or ir.Training())


def label_form(path: str, seed: int) -> str:
    """"one-hot" or "labels": cross-entropy's targets for a model, seeded by its file's name."""
    return "one-hot" if (zlib.crc32(Path(path).stem.encode()) + seed) % 2 else "labels"


def steps_targets(graph: ir.Graph, outputs: dict, seed: int, one_hot: bool = False) -> np.ndarray:
    """The targets of the loss (see the module's docstring), seeded."""
    rng = np.random.default_rng(seed + 3)
    first = outputs[graph.outputs[0]]
    loss = graph.training.loss
    if loss == "cross_entropy_with_softmax":
        axis = 1 if first.ndim == 4 else -1  # a feature map: one class per position, on the channel axis
        k = first.shape[axis]
        labels = rng.integers(0, k, np.delete(first.shape, axis % first.ndim)).astype(np.int64)
        return np.moveaxis(np.eye(k, dtype=np.float32)[labels], -1, axis) if one_hot else labels
    if loss == "binary_cross_entropy_with_logits":
        return rng.uniform(0, 1, first.shape).astype(np.float32)
    return rng.uniform(-1, 1, first.shape).astype(np.float32)


def native_steps(graph: ir.Graph, params: dict, inputs: dict, targets: np.ndarray, steps: int,
                 lengths: dict | None = None) -> tuple[list, dict, set]:
    """(the loss before each step, the parameters after the last, the parameters without a gradient), as
    every target's train_step reports them.

    A parameter the loss does not depend on (a bias before a BatchNormalization: every step's gradient
    within rounding of 0) is moved by rounding noise alone under Adam, RMSProp, Adagrad or Adadelta,
    which divide the gradient by its own size; its weights are not compared, and the cell says so. Nor
    are the running means then (a running mean follows its input's bias), only the running variances."""
    from .conformance_lengths import output_sources, valid
    from .data.feed import masked_loss
    from .exec.feed import make_target_loss
    from .exec.graph import Executor
    from .exec.optim import make_optimizer
    from .exec.steprule import StepRule, max_norms

    tr = graph.training
    ex = Executor(graph, {k: v.copy() for k, v in params.items()})
    loss_fn = make_target_loss(tr)
    opt = make_optimizer(tr)
    rule = StepRule(tr, opt.lr, max_norms(graph))
    trainable = {n: ex.params[n] for n in ex.trainable}
    first = graph.outputs[0]
    batch = len(targets)
    losses, biggest = [], {}
    with np.errstate(over="ignore", invalid="ignore"):
        for s in range(steps):
            outs = ex.forward(inputs, training=True, rng=np.random.default_rng(0), lengths=lengths)
            src = output_sources(graph).get(first)
            mask = valid(lengths[src], outs[first].shape[1]) if lengths and src in lengths else None
            loss, grad = masked_loss(loss_fn, outs[first], targets, mask)
            losses.append(loss + rule.penalty(trainable))
            grads = ex.backward({first: grad})
            for k, g in grads.items():
                if k in trainable and g is not None:
                    biggest[k] = max(biggest.get(k, 0.0), float(np.abs(g).max()) if g.size else 0.0)
            rule.step(opt, trainable, grads, s // STEPS_PER_EPOCH, s, batch)
    top = max(biggest.values(), default=0.0)
    skip = {k for k, v in biggest.items() if v <= NO_GRADIENT * top}
    if skip:
        skip |= {k for k in ex.params if k.endswith(".running_mean")}
    return losses, {k: v.copy() for k, v in ex.params.items()}, skip


def compare(graph: ir.Graph, ref: tuple, losses: list, weights: dict) -> StepsCell:
    from .conformance import max_diffs, scale_of

    tol = tolerance(graph)
    ref_losses, ref_weights, no_gradient = ref
    if len(losses) != len(ref_losses):
        return StepsCell("FAIL", tol=tol, reason=f"{len(losses)} losses for {len(ref_losses)} steps")
    loss_diff = max([abs(a - b) / max(1.0, abs(a)) for a, b in zip(ref_losses, losses)] + [0.0])
    weight_diff, worst = 0.0, ""
    for name, w in ref_weights.items():
        if name in no_gradient:
            continue
        a, _ = max_diffs(w, weights.get(name, np.zeros(0)))
        if a / scale_of([w]) > weight_diff:
            weight_diff, worst = a / scale_of([w]), name
    bad = not (loss_diff <= tol and weight_diff <= tol)  # NaN fails
    reason = ""
    if bad:
        step = int(np.argmax([abs(a - b) for a, b in zip(ref_losses, losses)])) if losses else 0
        reason = f"worst weight {worst}; worst loss at step {step}: native {ref_losses[step]:.6g}, target {losses[step]:.6g}"
    if no_gradient:
        reason += ("; " if reason else "") + "not compared (no gradient): " + ", ".join(sorted(no_gradient))
    return StepsCell("FAIL" if bad else "pass", loss_diff, weight_diff, tol, reason)


def run_steps(models: list[str], columns: list, steps: int, seed: int, tmp: Path, log, forms: dict | None = None) -> dict:
    """{(model, column name): StepsCell}; forms: {model: "labels" or "one-hot"} in place of label_form's choice."""
    from .conformance import batch_for, conformance_params, driver_error, native_predict, run_driver, work_stems
    from .conformance_lengths import TARGETS_WITH_MASKS, draw_lengths
    from .emit.base import emit
    from .exec.weights import save_weights
    from .frontend import load

    cells: dict = {}
    prepared = {}
    stems = work_stems(models)
    for path in models:
        graph = steps_graph(load(path))
        stem = stems[path]
        params = conformance_params(graph, seed)
        inputs = batch_for(graph, seed)
        form = (forms or {}).get(path) or label_form(path, seed)
        if graph.training.loss != "cross_entropy_with_softmax":
            form = ""
        targets = steps_targets(graph, native_predict(graph, params, inputs), seed, form == "one-hot")
        full = native_steps(graph, params, inputs, targets, steps)
        np.savez(tmp / f"{stem}.full.npz", **inputs)
        lengths = draw_lengths(graph, inputs, seed)  # pads the sequences of `inputs` in place
        padded = native_steps(graph, params, inputs, targets, steps, lengths) if lengths else full
        save_weights(tmp / f"{stem}.weights.npz", params)
        np.savez(tmp / f"{stem}.inputs.npz", **inputs)
        np.savez(tmp / f"{stem}.lengths.npz", **lengths)
        np.savez(tmp / f"{stem}.targets.npz", targets=targets)
        prepared[path] = (graph, stem, lengths, full, padded, form)
    for col in columns:
        if col.inference_only:
            for path in models:
                cells[(path, col.name)] = StepsCell("n/a", reason="an inference format: nothing to train")
            continue
        masks = col.target in TARGETS_WITH_MASKS
        python, why = col.python()
        tag = col.name.replace("/", "_")
        jobs = []
        for path, (graph, stem, lengths, full, padded, form) in prepared.items():
            try:  # first: what a target refuses is known without its framework
                code = emit(graph, col.target)
            except ModuleNotFoundError:
                cells[(path, col.name)] = StepsCell("not run", reason=f"target {col.target} is not implemented")
                continue
            except NetdslError as e:
                cells[(path, col.name)] = StepsCell(
                    "unsupported", reason="; ".join(f"{d.message} [{d.code}]" for d in e.diagnostics),
                    codes=tuple(sorted({d.code for d in e.diagnostics})))
                continue
            if python is None:
                cells[(path, col.name)] = StepsCell("not run", reason=why)
                continue
            module = tmp / f"{stem}_{tag}_steps.py"
            module.write_text(code)
            batch = {"inputs": str(tmp / f"{stem}.full.npz")}
            if masks and lengths:
                batch = {"inputs": str(tmp / f"{stem}.inputs.npz"), "lengths": str(tmp / f"{stem}.lengths.npz")}
            jobs.append({"id": path, "module": str(module), **batch, "train_weights": str(tmp / f"{stem}.weights.npz"),
                         "targets": str(tmp / f"{stem}.targets.npz"), "steps": steps,
                         "steps_per_epoch": STEPS_PER_EPOCH, "trained": str(tmp / f"{stem}_{tag}.trained.npz")})
        if not jobs:
            continue
        results = run_driver(python, col, jobs, tmp, log)
        for job in jobs:
            path = job["id"]
            graph, stem, lengths, full, padded, form = prepared[path]
            res = results.get(path)
            if res is None or not res.get("ok"):
                why = driver_error(res, "the driver did not report this job")
                cells[(path, col.name)] = StepsCell("FAIL", tol=tolerance(graph), form=form,
                                                    reason=why + (" (one-hot targets)" if form == "one-hot" else ""))
                continue
            got = dict(np.load(job["trained"], allow_pickle=False))
            cell = compare(graph, padded if masks else full, res["losses"], got)
            cell.form = form
            if lengths and not masks:
                cell.reason += ("; " if cell.reason else "") + "padded batches not checked: this target takes no lengths yet"
            cells[(path, col.name)] = cell
    return cells


def matrix_text(models: list[str], columns: list, cells: dict) -> str:
    names = [Path(m).stem for m in models]
    w0 = max(len(n) for n in names) + 2
    widths = [max(len(c.name), max(len(cells[(m, c.name)].short()) for m in models)) + 2 for c in columns]
    lines = ["".ljust(w0) + "".join(c.name.ljust(w) for c, w in zip(columns, widths))]
    for m, n in zip(models, names):
        lines.append(n.ljust(w0) + "".join(cells[(m, c.name)].short().ljust(w) for c, w in zip(columns, widths)))
    return "\n".join(lines)


def doc_section() -> str:
    """What docs/conformance.md says about --steps N (appended to the generated page)."""
    table = "\n".join(f"| {name} | {tol:g} |" for name, tol in TOLERANCE.items())
    # its table rule is not "|---|", on which tests/test_conformance.py splits off the matrix above
    return ("## Training steps: `netdsl conformance --steps N`\n\n"
            "Not in the matrix above (which is the one-step mode). With `--steps N` each column builds the "
            "model with its OWN training block (dropout rate forced to 0), makes its trainer with "
            f"`steps_per_epoch={STEPS_PER_EPOCH}` and calls `train_step` N times on the same batch; the native "
            "executor does the same (exec/steprule.StepRule). Every step's loss (l2 weight decay's penalty "
            "included) and the final weights are compared with the native ones, relative to max(1, |value|). "
            "Targets: for cross_entropy_with_softmax int class labels, or the same labels as float32 one-hot rows "
            "shaped like the output (`--labels one-hot`; by default a seeded choice per model, so a run over many "
            "models compares both forms; a cell marked `one-hot` used them); uniform [0, 1] for "
            "binary_cross_entropy_with_logits, uniform (-1, 1) for squared_error and l2. A setting a target "
            "does not implement is refused (E802) and the cell says `unsupported E802`. A parameter the loss does "
            f"not depend on (every gradient element of every step within {NO_GRADIENT:g} x the largest: a bias "
            "before a BatchNormalization) moves by rounding noise alone under optimizers that divide by the "
            "gradient's size (Adam, RMSProp, Adagrad, Adadelta): it is not compared, nor then the running means "
            "(which follow it), and the cell names it.\n\n"
            "Tolerance per optimizer (loss and weights, relative):\n\n"
            "| optimizer | tolerance |\n| :-- | :-- |\n" + table + "\n")


def cmd_steps(args, files: list[str], columns: list) -> int:
    import sys

    if args.steps < 1 or args.doc or args.no_step:
        print("netdsl conformance: error: --steps takes N >= 1, and neither --doc nor --no-step", file=sys.stderr)
        return 2
    forms = {f: args.labels for f in files} if args.labels in ("labels", "one-hot") else None

    def log(m):
        print(m, file=sys.stderr)
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        cells = run_steps(files, columns, args.steps, args.seed, Path(args.workdir), log, forms)
    else:  # a temp dir of our own, removed at the end: nothing is left behind
        with tempfile.TemporaryDirectory(prefix="netdsl-conformance-") as d:
            cells = run_steps(files, columns, args.steps, args.seed, Path(d), log, forms)
    print(matrix_text(files, columns, cells))
    for (m, c), cell in sorted(cells.items()):
        if cell.reason and cell.status not in ("pass", "n/a"):
            print(f"{Path(m).stem} / {c}: {cell.status}: {cell.reason}", file=sys.stderr)
    return 1 if any(c.status == "FAIL" for c in cells.values()) else 0


def training_loss(path: str, col, inputs: dict, targets: np.ndarray, seed: int = 0,
                  workdir: str | None = None) -> float | str:
    """The loss a target's train_step reports on one batch, with the model as written (dropout on).

    Returns the loss, or the reason the column cannot run. Used to check dropout's training-mode
    scale, which no inference comparison can see."""
    if not workdir:  # a temp dir of our own, removed at the end: nothing is left behind
        with tempfile.TemporaryDirectory(prefix="netdsl-probe-") as d:
            return training_loss(path, col, inputs, targets, seed, d)
    from .conformance import run_driver
    from .emit.base import emit
    from .exec.weights import save_weights
    from .frontend import load

    python, why = col.python()
    if python is None:
        return why
    graph = load(path)
    try:
        code = emit(graph, col.target)
    except ModuleNotFoundError:
        return f"target {col.target} is not implemented"
    tmp = Path(workdir)
    tag = col.name.replace("/", "_")
    (tmp / f"probe_{tag}.py").write_text(code)
    from .exec.weights import init_params

    save_weights(tmp / "probe.weights.npz", init_params(graph, seed))
    np.savez(tmp / "probe.inputs.npz", **inputs)
    np.savez(tmp / "probe.targets.npz", targets=targets)
    job = {"id": "probe", "module": str(tmp / f"probe_{tag}.py"), "inputs": str(tmp / "probe.inputs.npz"),
           "step_weights": str(tmp / "probe.weights.npz"), "targets": str(tmp / "probe.targets.npz"),
           "stepped": str(tmp / f"probe_{tag}.stepped.npz")}
    res = run_driver(python, col, [job], tmp, lambda m: None).get("probe")
    if res is None or not res.get("ok"):
        raise RuntimeError(f"{col.name}: train_step failed: {(res or {}).get('error', 'no result')}")
    return float(res["loss"])
