"""Which train-block settings a target's generated script honours; the rest are refused (E802) at the
setting's location, never dropped. A target widens its set through Target.extras["training"]."""
from __future__ import annotations

from .. import ir
from ..errors import Diagnostic
from ..train_block import LOSS_ARGS, OPTIMIZERS

# what every generated script implemented before the train block grew (docs/language.md)
BASELINE = {
    "optimizers": {"SGD": {"lr", "momentum", "nesterov"}, "Adam": set(OPTIMIZERS["Adam"]),
                   "Adadelta": set(OPTIMIZERS["Adadelta"])},
    "losses": {"cross_entropy_with_softmax", "squared_error"},
    "settings": {"seed"},
}
# train-block setting -> is it in use (differs from what a script without it does)
SETTINGS = {
    "lr_schedule": lambda t: t.schedule is not None,
    "lr_unit": lambda t: t.lr_unit != "minibatch",
    "weight_decay": lambda t: bool(t.weight_decay),
    "clip_norm": lambda t: t.clip_norm is not None,
    "clip_value": lambda t: t.clip_value is not None,
    "validation_split": lambda t: bool(t.validation_split),
    "log_every": lambda t: t.log_every is not None,
    "early_stopping": lambda t: t.early_stopping is not None,
    "metrics": lambda t: any(m != "accuracy" for m in t.metrics),
    "seed": lambda t: t.seed is not None,
}


def refusals(target_name: str, training: ir.Training | None, honoured: dict | None = None) -> list:
    """E802 for every setting of `training` that the target's script does not implement."""
    if training is None:
        return []
    honoured = honoured or BASELINE
    out = []

    def refuse(key, what):
        out.append(Diagnostic("E802", f"target '{target_name}' cannot train with {what}: its generated script "
                              "does not implement it", training.span_of(key),
                              "netdsl run implements every setting (docs/language.md lists each target's)"))

    opts = honoured["optimizers"]
    if training.optimizer not in opts:
        refuse("optimizer", f"optimizer {training.optimizer}")
    else:
        defaults = {k: d for k, (d, _) in OPTIMIZERS[training.optimizer].items()}
        for k, v in training.optimizer_attrs:
            if k not in opts[training.optimizer] and v != defaults.get(k):
                refuse("optimizer", f"{training.optimizer}({k}={v!r})")
    if training.loss not in honoured["losses"]:
        refuse("loss", f"loss {training.loss}")
    for k, v in training.loss_attrs:
        if v != LOSS_ARGS[k][0] and f"loss.{k}" not in honoured["settings"]:
            refuse("loss", f"{training.loss}({k}={v})")
    for key, used in SETTINGS.items():
        if used(training) and key not in honoured["settings"]:
            refuse(key, f"the setting {key}")
    return out


def layer_refusals(target_name: str, graph: ir.Graph, honoured: dict | None = None) -> list:
    """E802 at every layer with a training-only attribute (max_norm) the target's script does not implement:
    a target declares it by "max_norm" in extras["training"]["settings"]."""
    honoured = honoured or BASELINE
    if "max_norm" in honoured["settings"] or graph.training is None:
        return []
    return [Diagnostic("E802", f"target '{target_name}' cannot train with max_norm (layer {layer.name}): its "
                       "generated script does not implement it", layer.span or graph.span,
                       "netdsl run implements every setting (docs/language.md lists each target's)")
            for layer in graph.layers if layer.kind in ("Dense", "Convolution") and layer.attr("max_norm") is not None]


# the script-level keys the generated scripts' shared token loop (train_tokens, common/data.py.j2) does not
# implement (it does log_every); a target may refuse more (extras["token_loop_refuses"])
TOKEN_LOOP_KEYS = ("validation_split", "early_stopping", "metrics")


def token_refusals(target_name: str, graph: ir.Graph, keys=TOKEN_LOOP_KEYS) -> list:
    """E802 at each such key of a model fed token ids: its generated main() trains token datasets (CoNLL,
    TSV) through train_tokens, which does not implement it (netdsl run does)."""
    t = graph.training
    if t is None or all(i.type.vocab is None for i in graph.inputs):
        return []
    return [Diagnostic("E802", f"target '{target_name}' cannot train with the setting {key} on token ids: its "
                       "generated script trains token datasets through train_tokens, which does not implement it",
                       t.span_of(key), "netdsl run implements every setting (docs/language.md lists each target's)")
            for key in keys if SETTINGS[key](t)]
