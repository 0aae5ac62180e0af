"""Run an exported model on onnxruntime and on onnx's reference evaluator (the two ONNX oracles)."""
from __future__ import annotations

import numpy as np


def run_onnxruntime(model, inputs: dict, outputs: list) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # the machine is shared; one thread is plenty for a test batch
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # not the warning that an optional input (x_lens, onnx/lengths.py) is one
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {i.name: inputs[i.name] for i in sess.get_inputs()}
    # optional inputs (an initializer that a feed may override): the lengths of a padded batch
    feed.update({i.name: inputs[i.name] for i in sess.get_overridable_initializers() if i.name in inputs})
    return dict(zip(outputs, sess.run(list(outputs), feed)))


def run_reference(model, inputs: dict, outputs: list) -> dict:
    from onnx.reference import ReferenceEvaluator

    optional = {t.name for t in model.graph.initializer}
    feed = {i.name: inputs[i.name] for i in model.graph.input if i.name not in optional or i.name in inputs}
    return dict(zip(outputs, ReferenceEvaluator(model).run(list(outputs), feed)))


def both(model, inputs: dict, outputs: list) -> dict:
    """{'onnxruntime': outputs, 'reference': outputs}."""
    return {"onnxruntime": run_onnxruntime(model, inputs, outputs),
            "reference": run_reference(model, inputs, outputs)}


def as_arrays(outs: dict) -> dict:
    return {k: np.asarray(v) for k, v in outs.items()}
