"""Which names a .net file may use: they become identifiers in generated code."""
from __future__ import annotations

import keyword

# Names the generated code uses for itself; a user name equal to one is rejected
# rather than renamed, so the name in the .net file is the name in the output.
# The module-level names of every target's generated module are here too (tests/test_injection.py
# checks this against the generated code of every model), so no user name can shadow one.
RESERVED = frozenset("""
    self torch nn F np numpy keras tf mx mxnet gluon nd autograd C cntk os sys math time json
    argparse main super print len range int float str list dict tuple object type model
    Model Sequential Input layers ops
    gzip struct tempfile rnn Net
    MODEL_NAME INPUTS OUTPUTS TRAINING WEIGHTS WEIGHT_SHAPES INPUT OUTPUT ID_INPUTS
    LSTM_HIDDEN_BIASES BN_VARIANCES BN_MOMENTUM FROZEN
    build_model read_netdsl_weights load_netdsl_weights export_netdsl_weights to_tensors predict
    make_trainer train_step compute_loss evaluate read_idx load_mnist load_data model_fn default_params
    find_layer keras_inputs keras_targets to_keras_layout to_netdsl_layout
    AvgPool2dExcludePad AveragePooling2DExcludePad NegInfPadding2D TorchAdam TorchAdamOptimizer
    TorchBatchNormalization LossHook
""".split())


def snake(kind: str) -> str:
    out = []
    for i, c in enumerate(kind):
        if c.isupper() and i and not kind[i - 1].isupper():
            out.append("_")
        out.append(c.lower())
    return "".join(out)


def camel(stem: str) -> str:
    parts = [p for p in "".join(c if c.isalnum() and c.isascii() else "_" for c in stem).split("_") if p]
    name = "".join(p[:1].upper() + p[1:] for p in parts) or "Model"
    return name if name[0].isalpha() else "Model" + name


def default_model_name(stem: str) -> str:
    """The model's name when the file has no `model` statement: the file stem in CamelCase, made valid
    (model.net would give Model, which generated code uses; a 200-character stem is too long)."""
    name = camel(stem)[:58]
    if invalid_name_reason(name):
        name += "Model"
    return name if not invalid_name_reason(name) else "NetdslModel"


def invalid_name_reason(name: str) -> str | None:
    if not name.isascii():
        return "has non-ASCII characters"
    if not name.isidentifier():
        return "is not an identifier"
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return "is a Python keyword"
    if name.startswith("__") or name.endswith("__"):
        return "is a dunder name"
    if name.startswith("_"):
        return "starts with an underscore, which generated code keeps for itself"
    if name in RESERVED:
        return "is reserved for the generated code's own variables"
    if len(name) > 64:
        return "is longer than 64 characters"
    return None
