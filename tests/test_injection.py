"""Code injection through names, strings and paths.

Policy (docs/security.md): a name in a .net file becomes an identifier in generated code, so the
front end REJECTS (error E106) any name that is not a plain ASCII identifier, is a Python keyword or
dunder, or starts with '_'. A valid name equal to one the generated code uses for itself (an import,
helper, constant, local or builtin) is RENAMED by the target's name allocator, never shadowed
(the front end reserves no name for them). Strings (dataset names) and the source path reach generated code only
as literals made by repr, or, for the header comment, in ascii() form on one line.
"""
from __future__ import annotations

import ast
import importlib
import io
import keyword
import tokenize
from pathlib import Path

import numpy as np
import pytest

from netdsl.emit import TARGETS
from netdsl.errors import NetdslError
from netdsl.frontend import load, load_text
from netdsl.lower import invalid_name_reason

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted((ROOT / "models").glob("*.net")) + sorted((ROOT / "tests" / "traps").glob("*.net"))


def available_targets():
    out = []
    for t in sorted(TARGETS):
        try:
            importlib.import_module(TARGETS[t])
        except ModuleNotFoundError:
            continue
        out.append(t)
    return out


TARGET_NAMES = available_targets()


def emit_or_skip(graph, target):
    from netdsl.emit.base import emit

    try:
        return emit(graph, target)
    except NetdslError as e:  # the target cannot express this model (E7xx/E8xx): nothing to inject into
        assert all(d.code[:2] in ("E7", "E8") for d in e.diagnostics), e.format()
        pytest.skip(f"{target} cannot express this model: {e.diagnostics[0].message}")


# ------------------------------------------------------------------ names
IDENTIFIER_SHAPED = [
    # (name, words the message must contain)
    ("__import__", "dunder"), ("__class__", "dunder"), ("__builtins__", "dunder"), ("_private", "underscore"),
    ("class", "keyword"), ("if", "keyword"), ("return", "keyword"), ("yield", "keyword"), ("async", "keyword"),
    ("await", "keyword"), ("match", "keyword"), ("case", "keyword"), ("nonlocal", "keyword"),
    ("\u0430", "non-ASCII"), ("m\u043eodel", "non-ASCII"), ("x\u0455", "non-ASCII"), ("caf\u00e9", "non-ASCII"),
    ("\uff21", "non-ASCII"), ("\u00b5", "non-ASCII"), ("x" * 65, "longer"),
]
SLOTS = {
    "model": "model {n}\n" + "x = Input(4)\nz = Dense(2)(x)\noutput z\n",
    "layer": "x = Input(4)\n{n} = Dense(2)\nz = {n}(x)\noutput z\n",
    "value": "x = Input(4)\n{n} = Dense(2)(x)\noutput {n}\n",
    "input": "{n} = Input(4)\nz = Dense(2)({n})\noutput z\n",
    "block": "def {n}(v) = Dense(2)(v)\nx = Input(4)\nz = {n}(x)\noutput z\n",
    "parameter": "def blk({n}) = Dense(2)({n})\nx = Input(4)\nz = blk(x)\noutput z\n",
    "group": "x = Input(4)\n{n} = Sequential([Dense(2), relu])\nz = {n}(x)\noutput z\n",
}


@pytest.mark.parametrize("slot", sorted(SLOTS))
@pytest.mark.parametrize("name,why", IDENTIFIER_SHAPED, ids=[ascii(n)[1:-1][:20] for n, _ in IDENTIFIER_SHAPED])
def test_bad_identifier_is_rejected_not_renamed(slot, name, why):
    with pytest.raises(NetdslError) as e:
        load_text(SLOTS[slot].format(n=name), "names.net")
    codes = [d.code for d in e.value.diagnostics]
    assert "E106" in codes, e.value.format()
    d = e.value.diagnostics[codes.index("E106")]
    assert why in d.message and name in d.message
    assert d.span.line >= 1 and "generated code" in (d.note or "")


NOT_A_NAME = [
    'a"b', "a'b", "a\\b", "a\nb", "a b", "a;b", "a.b", "a-b", "a(b)", "a#b", "a\x00b", "a\x1bb", "1a", "a\u2028b",
    "a\u202eb", "e\u0301", "import", "lambda", "True", "None", "def", "with", "output", "train", "model",
]


@pytest.mark.parametrize("slot", ["model", "layer", "input", "block"])
@pytest.mark.parametrize("name", NOT_A_NAME, ids=[ascii(n)[1:-1] for n in NOT_A_NAME])
def test_text_that_is_no_name_never_becomes_one(slot, name):
    """Quotes, newlines, backslashes and netdsl keywords cannot even be written as a name: the file
    does not parse, or the name is rejected; nothing with such a name ever reaches an emitter."""
    text = SLOTS[slot].format(n=name)
    try:
        g = load_text(text, "names.net")
    except NetdslError as e:
        assert all(d.code[0] == "E" and len(d.code) == 4 for d in e.diagnostics)
        return
    # it parsed: then every name in the graph is a valid identifier (e.g. "a b" was two statements)
    for n in [g.name] + [i.name for i in g.inputs] + [l.name for l in g.layers] + [x.name for x in g.nodes]:
        assert invalid_name_reason(n) is None, n


def test_invalid_name_reason_matches_python():
    for kw in keyword.kwlist + list(getattr(keyword, "softkwlist", [])):
        assert invalid_name_reason(kw) is not None, kw
    for ok in ("conv1", "Dense_2", "image", "z", "x0", "LeNet5"):
        assert invalid_name_reason(ok) is None


# ------------------------------------------- the generated code's own names
def module_level_names(code: str) -> set:
    names = set()
    for node in ast.parse(code).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for tgt in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names |= {n.id for n in ast.walk(tgt) if isinstance(n, ast.Name)}
        for sub in ast.walk(node) if isinstance(node, (ast.Try, ast.If, ast.Import, ast.ImportFrom)) else ():
            if isinstance(sub, (ast.Import, ast.ImportFrom)):
                names |= {(a.asname or a.name).split(".")[0] for a in sub.names}
    return names


def user_names(g) -> set:
    return ({g.name} | {i.name for i in g.inputs} | {l.name for l in g.layers} | {n.name for n in g.nodes}
            | {gr.name for gr in g.groups})


# names the generated code uses for itself, which the front end once refused and the emitters now rename
OWN_NAMES = """
    self torch nn F np numpy keras tf mx mxnet gluon nd autograd C cntk os sys math time json argparse main super
    print len range int float str list dict tuple object type isinstance Model layers ops gzip
    struct tempfile rnn Net x x_ xs i net features labels mode params training logits loss predictions
    MODEL_NAME INPUTS OUTPUTS TRAINING WEIGHTS INPUT OUTPUT ID_INPUTS LSTM_HIDDEN_BIASES BN_VARIANCES
    BN_MOMENTUM FROZEN build_model read_netdsl_weights load_netdsl_weights export_netdsl_weights to_tensors
    predict make_trainer train_step evaluate read_idx load_mnist load_data model_fn default_params find_layer
    keras_inputs keras_targets to_keras_layout to_netdsl_layout AvgPool2dExcludePad AveragePooling2DExcludePad
    NegInfPadding2D TorchAdam TorchAdamOptimizer TorchBatchNormalization LossHook forward collect_params
""".split()


def _bound_in_functions(code: str) -> dict:
    """function name -> the names it binds locally (parameters and assignments)."""
    out = {}
    for fn in ast.walk(ast.parse(code)):
        if isinstance(fn, (ast.FunctionDef, ast.Lambda)):
            bound = {a.arg for a in fn.args.args + fn.args.kwonlyargs}
            if fn.args.vararg:
                bound.add(fn.args.vararg.arg)
            bound |= {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            out.setdefault(getattr(fn, "name", "<lambda>"), set()).update(bound)
    return out


def shadowed(code: str, g) -> dict:
    """Module-level names of the generated code that a function rebinds locally to a user's value."""
    module = module_level_names(code)
    users = user_names(g)
    return {fn: sorted(bound & module & users) for fn, bound in _bound_in_functions(code).items()
            if bound & module & users}


@pytest.mark.parametrize("target", TARGET_NAMES)
def test_no_user_name_shadows_a_name_of_the_generated_code(target):
    """Every name the generated code uses for itself, given to an input, a value, a layer and a group in one
    model: each target renames the user's, so no function rebinds one of the module's own names to it.
    (tests/traps/reserved_names.net and name_clash.net check the numbers on every column.)"""
    from netdsl.emit.base import emit

    for k in range(0, len(OWN_NAMES), 12):
        chunk = OWN_NAMES[k:k + 12]
        lines = [f"{chunk[0]} = Input(4)"]
        prev = chunk[0]
        for j, n in enumerate(chunk[1:]):
            if j % 3 == 0:
                lines.append(f"{n} = Dense(4, activation=relu)({prev})")
            elif j % 3 == 1:
                lines += [f"{n} = Dense(4)", f"v{j} = {n}({prev})"]
                n = f"v{j}"
            else:
                lines += [f"{n} = Sequential([Dense(4), relu])", f"w{j} = {n}({prev})"]
                n = f"w{j}"
            prev = n
        g = load_text("\n".join(lines + [f"output {prev}", ""]), "own_names.net")
        code = emit(g, target)
        assert not shadowed(code, g), (chunk, shadowed(code, g))


def test_model_name_from_the_file_stem_is_valid():
    for stem, expect in [("model", "Model"), ("INPUTS", "INPUTS"), ("net", "Net"),
                         ("keras_cnn", "KerasCnn"), ("9lives", "Model9lives"), ("__init__", "Init")]:
        g = load_text("x = Input(4)\nz = Dense(2)(x)\noutput z\n", f"dir/{stem}.net")
        assert g.name == expect and invalid_name_reason(g.name) is None


# ------------------------------------------------------- strings and paths
PAYLOADS = [
    "mnist\"); import os; os.system('x') #",
    "mnist'''); __import__('os').system('x') #",
    'mnist"""\nimport os\nos.system("x")\n"""',
    "mnist\\",
    "mnist\\\"); exec('1') #",
    "mnist\n# -*- coding: latin-1 -*-",
    "mnist\x00\x1b[31m\u202e",
    "{{ x }}{% raw %}${x}%s{0}",
]
BENIGN = "somedata"  # not "mnist": main() reads MNIST only, so the code around differs
CARRIER = ROOT / "models" / "mlp_relu.net"


def outside_strings(code: str) -> list:
    """The token stream with string literals and comments blanked: what the code does."""
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type == tokenize.STRING:
            out.append(("STRING", "..."))
        elif tok.type == tokenize.COMMENT:
            out.append(("COMMENT", "..."))
        else:
            out.append((tokenize.tok_name[tok.type], tok.string))
    return out


def string_values(code: str) -> list:
    out = []
    for t in tokenize.generate_tokens(io.StringIO(code).readline):
        if t.type == tokenize.STRING:
            try:
                out.append(ast.literal_eval(t.string))
            except ValueError:  # an f-string of the template: no user text is ever formatted into one
                pass
    return out


def with_dataset(name: str):
    text = CARRIER.read_text(encoding="utf-8")
    assert 'dataset = "mnist"' in text
    escaped = name.encode("unicode_escape").decode("ascii").replace('"', '\\"')
    return load_text(text.replace('dataset = "mnist"', f'dataset = "{escaped}"'), "models/mlp_relu.net")


@pytest.mark.parametrize("target", TARGET_NAMES)
@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_dataset_name_reaches_generated_code_only_as_a_literal(target, payload):
    g = with_dataset(payload)
    assert g.training.dataset == payload  # the front end keeps the string exactly
    code = emit_or_skip(g, target)
    benign = emit_or_skip(with_dataset(BENIGN), target)
    ast.parse(code)
    # the payload changed no token outside string literals and comments...
    assert outside_strings(code) == outside_strings(benign)
    # ...and it is there, intact, as the value of a literal
    assert payload in string_values(code)
    for line in code.splitlines():
        if line.lstrip().startswith("#"):
            assert "os.system" not in line and "__import__" not in line


@pytest.mark.parametrize("target", TARGET_NAMES)
@pytest.mark.parametrize("source", [
    'evil\n"""\nimport os\nos.system("x")\n#.net',
    "evil\r\nimport os #.net",
    "/abs/dir/evil\u2028import os.net",
    "dir/it's \"quoted\" \\ back.net",
    "/home/user/secret/model.net",
], ids=["newlines", "crlf", "line-separator", "quotes", "absolute"])
def test_source_path_cannot_break_out_of_the_header(target, source):
    text = CARRIER.read_text(encoding="utf-8")
    code = emit_or_skip(load_text(text, source), target)
    benign = emit_or_skip(load_text(text, "models/mlp_relu.net"), target)
    first, rest = code.split("\n", 1)
    assert first.startswith("# generated by netdsl from ")
    assert "\r" not in first and "\u2028" not in first and "\x0c" not in first
    assert "/home/user" not in code and "/abs/dir" not in code  # never an absolute path
    assert outside_strings(code) == outside_strings(benign)
    assert "import os #" not in rest and "os.system" not in rest


@pytest.mark.parametrize("target", TARGET_NAMES)
def test_user_names_appear_only_as_validated_identifiers(target):
    """Every occurrence of a user's name outside literals and comments is a NAME token equal to it
    (or to its renamed form name_ / name_2 where an emitter avoids a clash in one scope)."""
    text = ("model Injected\nimage = Input((1, 8, 8))\nconvo = Convolution((3, 3), 4, pad=True)\n"
            "feats = Sequential([convo, relu, Flatten()])\nhidden = feats(image)\nlogits = Dense(3)(hidden)\n"
            "output logits\n")
    g = load_text(text, "injected.net")
    code = emit_or_skip(g, target)
    names = ["Injected", "image", "convo", "feats", "hidden", "logits"]
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type in (tokenize.STRING, tokenize.COMMENT, tokenize.NAME):
            continue
        for n in names:
            assert n not in tok.string, (tok, n)


# ------------------------------------------------------------------ weights
@pytest.mark.parametrize("target", TARGET_NAMES)
def test_generated_code_loads_weights_without_pickle(target):
    code = emit_or_skip(load(str(CARRIER)), target)
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            assert func not in ("eval", "exec", "pickle.load", "pickle.loads", "compile"), func
            if func == "torch.load":  # a checkpoint: torch's restricted unpickler (tensors, plain containers)
                kws = {k.arg: ast.unparse(k.value) for k in node.keywords}
                assert kws.get("weights_only") == "True", ast.unparse(node)
            if func in ("np.load", "numpy.load"):
                kws = {k.arg: ast.unparse(k.value) for k in node.keywords}
                assert kws.get("allow_pickle") == "False", ast.unparse(node)
    assert "pickle.load" not in code  # (the PyTorch script imports pickle for UnpicklingError only)


def test_native_weights_refuse_pickled_arrays(tmp_path):
    from netdsl.exec.weights import read_npz

    path = tmp_path / "w.npz"
    np.savez(path, **{"dense_1.W": np.array([{"x": 1}], dtype=object)})
    with pytest.raises(NetdslError) as e:
        read_npz(path)
    assert e.value.diagnostics[0].code == "E606"
