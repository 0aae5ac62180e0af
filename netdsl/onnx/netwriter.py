"""Write an imported graph (importer.Walk) as a readable .net file plus its weights by IR parameter name."""
from __future__ import annotations

import keyword

from ..layers.elementwise import OPS
from ..library import builtin_names

_BUILTINS = {"Input", "SequenceInput", "Recurrence", "LayerStack", "For", "Sequential", "splice", "select_last",
             "select_first", "cosine_distance", "cos_distance", "default_options", "range", "output", "model",
             "train", "with", "def", "import", "lambda", "True", "False", "None", "Convolution2D",
             "MaxPooling2D", "AveragePooling2D"}
_TAKEN = set(builtin_names()) | _BUILTINS | set(keyword.kwlist)


def taken(name: str) -> bool:
    """Names the language or the generated code already uses; an imported name never takes one."""
    return name in _TAKEN or name.lower() in {n.lower() for n in _BUILTINS}


def _tuple(t) -> str:
    return "(" + ", ".join(_num(v) for v in t) + ("," if len(t) == 1 else "") + ")"


def _num(v) -> str:
    if isinstance(v, tuple):
        return _tuple(v)
    if isinstance(v, bool):
        return repr(v)
    if isinstance(v, float):
        return repr(v)
    return str(int(v))


def _input(inp) -> str:
    t = inp.type
    if t.vocab is not None:
        text = f"SequenceInput(vocab={t.vocab}"
    elif t.seq:
        text = f"SequenceInput({t.shape[0]}" + (f", length={t.length}" if t.length is not None else "")
    elif len(t.shape) == 1:
        text = f"Input({t.shape[0]}"
    else:
        text = f"Input({_tuple(t.shape)}"
    if inp.rescale is not None:
        scale, mean, std = inp.rescale
        text += (f", scale={scale!r}" if scale != 1 else "") + (f", mean={mean!r}" if mean else "") + (
            f", std={std!r}" if std != 1 else "")
    return text + ")"


def _window(a: dict) -> str:
    text = ""
    if tuple(a["strides"]) != (1, 1):
        text += f", strides={_tuple(a['strides'])}"
    if a["pad"] is True:
        text += ", pad=True"
    elif a["pad"] is not False:
        text += f", pad={_tuple(a['pad'])}"
    return text


def _common(a: dict) -> str:
    text = f", activation={a['activation']}" if a.get("activation") else ""
    return text + (", bias=False" if a.get("bias") is False else "")


def constructor(layer) -> str:
    a, k = layer.attrs, layer.kind
    if k == "Dense":
        shape = _tuple(a["out_shape"]) if a.get("out_shape") else a["units"]  # Dense((3, 4))
        ranks = f", input_rank={a['input_rank']}" if a.get("input_rank") else ""
        return f"Dense({shape}{ranks}{_common(a)})"
    if k == "Convolution":
        rank0 = ", reduction_rank=0" if a.get("reduction_rank") == 0 else ""  # an input without a channel axis
        filters = "" if a.get("no_filter_axis") else f", {a['filters']}"  # left out: no filter axis
        return f"Convolution({_tuple(a['kernel'])}{filters}{rank0}{_window(a)}{_common(a)})"
    if k in ("MaxPooling", "AveragePooling"):
        return f"{k}({_tuple(a['window'])}{_window(a)})"
    if k == "Dropout":
        return f"Dropout({a['rate']!r})"
    if k == "Embedding":
        return f"Embedding({a['dim']})"
    if k == "LSTM":
        cell = f", cell_shape={a['cell']}" if a.get("cell") is not None else ""
        cell += ", use_peepholes=True" if a.get("peepholes") else ""
        return (f"Recurrence(LSTM({a['units']}{cell})" + (", go_backwards=True" if a["go_backwards"] else "")
                + _state(a) + ")")
    if k == "BatchNormalization":
        return f"BatchNormalization(epsilon={a['epsilon']!r}, momentum={a['momentum']!r})"
    if k == "LayerNormalization":
        return f"LayerNormalization(epsilon={a['epsilon']!r})"
    if k == "Flatten":
        return "Flatten()"
    if k == "Activation":
        return f"Activation({a['activation']})"
    if k == "Stabilizer":
        return f"Stabilizer(steepness={a['steepness']!r})"
    if k == "GRU":
        inner = f"GRU({a['units']}" + (", reset_after=True)" if a.get("reset_after") else ")")
        return f"Recurrence({inner}" + (", go_backwards=True" if a["go_backwards"] else "") + _state(a) + ")"
    if k == "Delay":
        return f"Delay(T={a['T']!r}, initial_state={a['initial_state']!r})"
    if k in ("GlobalAveragePooling", "GlobalMaxPooling"):
        return f"{k}()"
    raise ValueError(k)


def chains(walk, outputs) -> list:
    """Runs of applications where each feeds only the next one: they become one Sequential.

    A run of shared layers (the same layers applied in the same order to two inputs, like DSSM's
    image_to_vec) is one Sequential applied twice; a layer also used outside its run stays alone."""
    readers: dict = {}
    for app in walk.apps:
        for i in app.inputs:
            readers[i] = readers.get(i, 0) + 1
    runs, run = [], []
    for app in walk.apps:
        single = app.layer is not None and len(app.inputs) == 1
        if run and single and app.inputs == [run[-1].out] and readers.get(run[-1].out) == 1 \
                and run[-1].out not in outputs and app.layer not in {a.layer for a in run}:
            run.append(app)
            continue
        if len(run) > 1:
            runs.append(run)
        run = [app] if single else []
    if len(run) > 1:
        runs.append(run)
    count: dict = {}
    for r in runs:
        key = tuple(a.layer for a in r)
        count[key] = count.get(key, 0) + 1
    return [r for r in runs if all(walk.layers[a.layer].uses == count[tuple(a.layer for a in r)] for a in r)]


def write(walk, outputs: list, model_name: str, source: str) -> tuple[str, dict]:
    lines = [f"# Imported from {source!s} by `netdsl import`.".replace("\n", " "), f"model {model_name}", ""]
    for inp in walk.inputs:
        lines.append(f"{inp.name} = {_input(inp)}")
    lines.append("")
    for layer in walk.layers.values():
        lines.append(f"{layer.name} = {constructor(layer)}")
    if walk.layers:
        lines.append("")
    grouped, seqs = {}, {}
    for run in chains(walk, outputs):
        key = tuple(a.layer for a in run)
        if key not in seqs:
            seqs[key] = walk.fresh(f"{run[0].layer}_block")
            lines.append(f"{seqs[key]} = Sequential([{', '.join(key)}])")
        grouped[run[0].out] = (seqs[key], run)
    skip = set()
    for app in walk.apps:
        if app.out in skip:
            continue
        g = grouped.get(app.out)
        if g:
            name, run = g
            lines.append(f"{run[-1].out} = {name}({run[0].inputs[0]})")
            skip.update(a.out for a in run)
            continue
        if app.func == "splice":
            lines.append(f"{app.out} = splice([{', '.join(app.inputs)}])")
        elif app.func in OPS:
            lines.append(f"{app.out} = {app.inputs[0]} {OPS[app.func]} {app.inputs[1]}")
        elif app.func is not None:
            lines.append(f"{app.out} = {app.func}({', '.join(app.inputs)})")
        else:
            lines.append(f"{app.out} = {app.layer}({', '.join(app.inputs)})")
    lines += [f"output {', '.join(outputs)}", ""]
    weights = {f"{layer.name}.{short}": arr for layer in walk.layers.values() for short, arr in layer.params.items()}
    return "\n".join(lines), weights


def _state(a: dict) -> str:
    """Recurrence's initial_state, written when not 0."""
    return f", initial_state={a['initial_state']!r}" if a.get("initial_state") else ""
