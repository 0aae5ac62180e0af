"""Runs generated modules inside a target's own interpreter, for `netdsl conformance`.

This file is executed by the target venv's Python (3.6 for CNTK), so it uses
only the standard library and numpy, and Python 3.6 syntax. It reads a JSON
list of jobs, and for each: imports the generated module, loads canonical
weights, predicts, and optionally takes one training step and exports the
weights. Each job's failure is recorded, not raised, so one bad cell does not
hide the others.
"""
import importlib.util
import json
import sys
import time
import traceback

import numpy as np


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exception_message(e):
    """The exception's own text, one line: CNTK appends its C++ call stack to the message, which is
    noise (and, cut to its tail, hides the message); a long message is cut at 500 characters."""
    text = str(e).split("[CALL STACK]")[0].strip()
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    if len(text) > 500:
        text = text[:500] + " ..."
    return "{}: {}".format(type(e).__name__, text) if text else type(e).__name__


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
