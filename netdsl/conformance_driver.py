"""Runs generated modules inside a target's own interpreter, for `netdsl conformance`.

This file is executed by the target venv's Python (3.6 for CNTK), so it uses
only the standard library and numpy, and Python 3.6 syntax. It reads a JSON
list of jobs, and for each: imports the generated module, loads canonical
weights, predicts, and optionally takes one training step (or, for --steps N,
N steps of the model's own training block) and exports the weights. Each
job's failure is recorded, not raised, so one bad cell does not hide the others.
"""
import importlib.util
import inspect
import json
import re
import sys
import time
import traceback

import numpy as np


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# the lines of a framework's message that locate rather than say: Python frames (TensorFlow repeats the
# stack where the failing op was defined), C++ frames (CNTK), TensorFlow's [[{{node ...}}]] markers
STACK_LINE = re.compile(r'^\s*(File ".*", line \d+|\[0x[0-9a-fA-F]+\]|\[\[\{\{node .*\}\}\]\])')
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Keras 3 prints its messages in bold


def exception_message(e):
    """The exception's own text, one line, without the stacks some frameworks put into it: CNTK
    appends its C++ call stack, TensorFlow the Python stack of the failing op's definition; cut to
    their tail they hide the message. A long message is cut at 500 characters."""
    text = str(e).split("[CALL STACK]")[0].split("Original stack trace for")[0]
    lines = [line.strip() for line in ANSI.sub("", text).splitlines()]
    text = " ".join(line for line in lines if line and not STACK_LINE.match(line)
                    and not line.endswith("(most recent call last):"))
    if len(text) > 500:
        text = text[:500] + " ..."
    return "{}: {}".format(type(e).__name__, text) if text else type(e).__name__


def make_trainer(mod, model, steps_per_epoch):
    """The trainer with steps_per_epoch when the module takes it (the contract of issue 18); a module
    from before it takes none, and then also refuses every schedule, the only thing that reads it."""
    params = inspect.signature(mod.make_trainer).parameters
    if "steps_per_epoch" in params or any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return mod.make_trainer(model, steps_per_epoch=steps_per_epoch)
    return mod.make_trainer(model)


def run_job(job, index):
    result = {"id": job["id"]}
    t0 = time.time()
    try:
        mod = load_module(job["module"], "netdsl_generated_{}".format(index))
        inputs = dict(np.load(job["inputs"], allow_pickle=False))
        # a padded batch's {sequence input: (N,) lengths} (docs/ir.md), only when the job has one
        more = {"lengths": dict(np.load(job["lengths"], allow_pickle=False))} if job.get("lengths") else {}
        if job.get("predict_weights"):
            model = mod.build_model()
            mod.load_netdsl_weights(model, job["predict_weights"])
            outputs = mod.predict(model, inputs, **more)
            np.savez(job["outputs"], **{k: np.asarray(v) for k, v in outputs.items()})
        if job.get("step_weights"):
            model = mod.build_model()
            mod.load_netdsl_weights(model, job["step_weights"])
            targets = np.load(job["targets"], allow_pickle=False)["targets"]
            trainer = mod.make_trainer(model)
            loss = mod.train_step(model, trainer, inputs, targets, **more)
            result["loss"] = float(loss)
            mod.export_netdsl_weights(model, job["stepped"])
        if job.get("train_weights"):  # --steps N: the model's own training block, N steps on one batch
            model = mod.build_model()
            mod.load_netdsl_weights(model, job["train_weights"])
            targets = np.load(job["targets"], allow_pickle=False)["targets"]
            trainer = make_trainer(mod, model, job["steps_per_epoch"])
            result["losses"] = [float(mod.train_step(model, trainer, inputs, targets, **more))
                                for _ in range(job["steps"])]
            mod.export_netdsl_weights(model, job["trained"])
        result["ok"] = True
    except BaseException as e:  # the cell fails, the run goes on
        result["ok"] = False
        result["error"] = traceback.format_exc(limit=8)[-4000:]
        result["message"] = exception_message(e)
    result["seconds"] = time.time() - t0
    return result


def main():
    jobs_path, results_path = sys.argv[1], sys.argv[2]
    with open(jobs_path) as f:
        jobs = json.load(f)
    results = []
    for i, job in enumerate(jobs):
        results.append(run_job(job, i))
        with open(results_path, "w") as f:  # written after every job: a crash keeps the earlier cells
            json.dump(results, f)


if __name__ == "__main__":
    main()
