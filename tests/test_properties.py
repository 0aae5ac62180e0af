"""Properties of random VALID models: the front end, the native executor and the generated code agree.

A hypothesis strategy writes random layer stacks as .net text while tracking, by the documented
formulas (docs/ir.md), the shape each layer must produce: convolutions and pooling with every kind
of pad (pad=True at stride 2 and even kernels included), dense, dropout, batch and layer
normalization, flatten, activations, LSTMs over SequenceInput, splice, select_last/first, a shared
layer applied twice, LayerStack with `lambda i`, and default_options scopes. For each model:

- the front end accepts it and infers the tracked output shape;
- the native executor (netdsl.exec.graph.Executor) produces arrays of exactly that shape;
- every available target's generated code parses (ast.parse);
- the generated PyTorch module, loaded with the same canonical weights, predicts arrays of that shape
  and the executor's values.
"""
from __future__ import annotations

import ast
import importlib
import math
import os
import types

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netdsl.emit import TARGETS
from netdsl.errors import NetdslError
from netdsl.frontend import load_text

# CI: 50 fixed examples per property. NETDSL_PROPERTY_EXAMPLES=2000 (and NETDSL_PROPERTY_SEED=random) for a
# longer local run; the numbers of such a run are in bench/RESULTS.md, "Fuzzing".
_N = int(os.environ.get("NETDSL_PROPERTY_EXAMPLES", "50"))
_RANDOM = os.environ.get("NETDSL_PROPERTY_SEED") == "random"
PROPS = settings(max_examples=_N, deadline=None, derandomize=not _RANDOM, database=None,
                 suppress_health_check=list(HealthCheck))
ACTS = ["relu", "sigmoid", "tanh"]


# ---------------------------------------------------------------- strategy
class Builder:
    """Writes statements and tracks the type of the current value: ('image', (C, H, W)), ('vector', (F,))
    or ('seq', (F,)) with a sequence length T."""

    def __init__(self, draw):
        self.draw = draw
        self.lines: list = []
        self.k = 0
        self.features: set = set()

    def fresh(self, base="v"):
        self.k += 1
        return f"{base}{self.k}"

    def emit(self, line):
        self.lines.append(line)

    # -------------------------------------------------------- image layers
    def pad_choice(self, size_hw, window, strides, pooling):
        """(text for pad=..., or None for the default False; output H, W); always a valid choice."""
        d = self.draw
        kind = d(st.sampled_from(["default", "false", "true", "int", "pair", "explicit"]))
        (h, w), (kh, kw), (sh, sw) = size_hw, window, strides

        def out(n, k, s, before, after):
            return (n + before + after - k) // s + 1 if n + before + after >= k else 0

        if kind == "true":
            self.features.add(f"pad=True s={sh}{sw} k={kh}{kw}")
            return "True", (-(-h // sh), -(-w // sw))
        if kind in ("default", "false"):
            pads = ((0, 0), (0, 0))
            text = None if kind == "default" else "False"
        elif kind == "int":
            p = d(st.integers(0, min(kh, kw) - 1))
            pads, text = ((p, p), (p, p)), str(p)
        elif kind == "pair":
            ph, pw = d(st.integers(0, kh - 1)), d(st.integers(0, kw - 1))
            pads, text = ((ph, ph), (pw, pw)), f"({ph}, {pw})"
        else:
            t, b = d(st.integers(0, kh - 1)), d(st.integers(0, kh - 1))
            l, r = d(st.integers(0, kw - 1)), d(st.integers(0, kw - 1))
            pads, text = ((t, b), (l, r)), f"(({t}, {b}), ({l}, {r}))"
        ho, wo = out(h, kh, sh, *pads[0]), out(w, kw, sw, *pads[1])
        if ho < 1 or wo < 1:
            return "True", (-(-h // sh), -(-w // sw))  # that window does not fit: fall back to "same"
        self.features.add(f"pad={kind}")
        return text, (ho, wo)

    def window(self):
        d = self.draw
        if d(st.booleans()):
            k = d(st.integers(1, 5))
            return (k, k), str(k) if d(st.booleans()) else f"({k}, {k})"
        kh, kw = d(st.integers(1, 4)), d(st.integers(1, 4))
        return (kh, kw), f"({kh}, {kw})"

    def strides(self, default_text_ok=True):
        d = self.draw
        s = d(st.sampled_from([1, 2, (1, 2), (2, 1)]))
        pair = (s, s) if isinstance(s, int) else s
        if pair == (1, 1) and default_text_ok and d(st.booleans()):
            return pair, None
        return pair, str(s)

    def conv(self, t, default_pad=None, with_act=True):
        c, h, w = t
        d = self.draw
        (kh, kw), ktext = self.window()
        (sh, sw), stext = self.strides()
        filters = d(st.integers(1, 6))
        pad_text, (ho, wo) = self.pad_choice((h, w), (kh, kw), (sh, sw), pooling=False)
        if pad_text is None and default_pad is not None:  # the scope's pad applies
            pad_text, (ho, wo) = self.pad_choice_fixed(default_pad, (h, w), (kh, kw), (sh, sw))
            args = [ktext, str(filters)]
        else:
            args = [ktext, str(filters)] + ([f"pad={pad_text}"] if pad_text is not None else [])
        if stext:
            args.append(f"strides={stext}")
        if with_act and d(st.booleans()):
            args.append(f"activation={d(st.sampled_from(ACTS + ['None']))}")
        self.features.add("conv")
        return f"Convolution({', '.join(args)})", (filters, ho, wo)

    def pad_choice_fixed(self, pad, hw, k, s):
        (h, w), (kh, kw), (sh, sw) = hw, k, s
        if pad == "True":
            return None, (-(-h // sh), -(-w // sw))
        p = int(pad)
        ho, wo = (h + 2 * p - kh) // sh + 1, (w + 2 * p - kw) // sw + 1
        if h + 2 * p < kh or w + 2 * p < kw or ho < 1 or wo < 1 or p >= kh or p >= kw:
            return "True", (-(-h // sh), -(-w // sw))  # explicit override where the scope's pad cannot fit
        return None, (ho, wo)

    def pool(self, t, default_pad=None):
        c, h, w = t
        d = self.draw
        kind = d(st.sampled_from(["MaxPooling", "AveragePooling"]))
        (kh, kw), ktext = self.window()
        (sh, sw), stext = self.strides()
        pad_text, (ho, wo) = self.pad_choice((h, w), (kh, kw), (sh, sw), pooling=True)
        if pad_text is None and default_pad is not None:
            pad_text, (ho, wo) = self.pad_choice_fixed(default_pad, (h, w), (kh, kw), (sh, sw))
            args = [ktext]
        else:
            args = [ktext] + ([f"pad={pad_text}"] if pad_text is not None else [])
        if pad_text is not None and pad_text not in args[-1]:
            args.append(f"pad={pad_text}")
        if stext:
            args.append(f"strides={stext}")
        self.features.add(kind)
        return f"{kind}({', '.join(args)})", (c, ho, wo)

    def image_layer(self, t, default_pad=None):
        """A layer constructor text and its output type, for an image input of shape t."""
        d = self.draw
        what = d(st.sampled_from(["conv", "conv", "pool", "bn", "ln", "dropout", "act", "Activation"]))
        if what == "conv":
            return self.conv(t, default_pad)
        if what == "pool":
            return self.pool(t, default_pad)
        self.features.add(what)
        return {"bn": "BatchNormalization()", "ln": "LayerNormalization()", "dropout": f"Dropout({d(st.sampled_from([0.1, 0.5]))})",
                "act": d(st.sampled_from(ACTS)), "Activation": f"Activation({d(st.sampled_from(ACTS))})"}[what], t

    # -------------------------------------------------------- vector / seq layers
    def vector_layer(self, t):
        d = self.draw
        what = d(st.sampled_from(["dense", "dense", "bn", "ln", "dropout", "act"]))
        self.features.add("v-" + what)
        if what == "dense":
            units = d(st.integers(1, 8))
            act = d(st.sampled_from([None] + ACTS + ["softmax"]))
            return f"Dense({units}" + (f", activation={act})" if act else ")"), (units,)
        return {"bn": "BatchNormalization()", "ln": "LayerNormalization()", "dropout": "Dropout(0.25)",
                "act": d(st.sampled_from(ACTS))}[what], t

    def seq_layer(self, t):
        d = self.draw
        what = d(st.sampled_from(["lstm", "lstm", "dense", "ln", "dropout", "act"]))
        self.features.add("s-" + what)
        if what == "lstm":
            units = d(st.integers(1, 6))
            back = d(st.booleans())
            return f"Recurrence(LSTM({units})" + (", go_backwards=True)" if back else ")"), (units,)
        if what == "dense":
            units = d(st.integers(1, 6))
            return f"Dense({units})", (units,)
        return {"ln": "LayerNormalization()", "dropout": "Dropout(0.5)", "act": d(st.sampled_from(ACTS))}[what], t

    # ---------------------------------------------------------------- steps
    def step(self, kind, t, v):
        """Apply one construct to value v of (kind, shape t); returns (kind, t, new value name)."""
        d = self.draw
        shape_fixed = {"image": lambda: f"Convolution((3, 3), {t[0]}, pad=True)", "vector": lambda: f"Dense({t[0]})",
                       "seq": lambda: f"Dense({t[0]})"}
        construct = d(st.sampled_from(["layer", "layer", "layer", "sequential", "scope", "stack", "shared", "splice",
                                       "change"]))
        out = self.fresh()
        if construct == "shared":
            # one definition applied twice to inputs of the same shape: one set of weights; applied as two
            # calls, listed twice in one Sequential, or repeated by LayerStack(2, lambda: layer)
            name = self.fresh("shared")
            self.emit(f"{name} = {shape_fixed[kind]()}")
            how = d(st.sampled_from(["calls", "sequential", "stack"]))
            self.emit(f"{out} = " + {"calls": f"{name}({name}({v}))", "sequential": f"Sequential([{name}, {name}])({v})",
                                     "stack": f"LayerStack(2, lambda: {name})({v})"}[how])
            self.features.add("shared" if how == "calls" else "shared-" + how)
            return kind, t, out
        if construct == "splice":
            a, b = self.fresh("a"), self.fresh("b")
            if kind == "image":
                f1, f2 = d(st.integers(1, 4)), d(st.integers(1, 4))
                self.emit(f"{a} = Convolution((3, 3), {f1}, pad=True)({v})")
                self.emit(f"{b} = Convolution((1, 1), {f2})({v})")
                nt = (f1 + f2,) + t[1:]
            else:
                f1, f2 = d(st.integers(1, 4)), d(st.integers(1, 4))
                self.emit(f"{a} = Dense({f1})({v})")
                self.emit(f"{b} = Dense({f2}, activation=tanh)({v})")
                nt = (f1 + f2,)
            self.emit(f"{out} = splice([{a}, {b}])" if d(st.booleans()) else f"{out} = splice({a}, {b})")
            self.features.add("splice-" + kind)
            return kind, nt, out
        if construct == "stack":
            n = d(st.integers(1, 3))
            if kind == "image":
                sizes = [d(st.integers(1, 5)) for _ in range(3)]
                body = f"Convolution((3, 3), {sizes}[i], pad=True, activation=relu)"
                nt = (sizes[n - 1],) + t[1:]
            else:
                sizes = [d(st.integers(1, 6)) for _ in range(3)]
                body = f"[Dense({sizes}[i]), relu]" if d(st.booleans()) else f"Dense({sizes}[i], activation=tanh)"
                nt = (sizes[n - 1],)
            self.emit(f"{out} = LayerStack({n}, lambda i: {body})({v})")
            self.features.add("stack")
            return kind, nt, out
        if construct in ("sequential", "scope"):
            members, cur = [], t
            default_pad = None
            scope = None
            if construct == "scope":
                opts = []
                if kind == "image" and d(st.booleans()):
                    default_pad = d(st.sampled_from(["True", "0", "1"]))
                    opts.append(f"pad={default_pad}")
                if d(st.booleans()):
                    opts.append(f"activation={d(st.sampled_from(ACTS))}")
                if d(st.booleans()):
                    opts.append("init=he_normal()")
                scope = ", ".join(opts)
                self.features.add("scope")
            for _ in range(d(st.integers(1, 3))):
                if kind == "image":
                    text, cur = self.image_layer(cur, default_pad)
                elif kind == "vector":
                    text, cur = self.vector_layer(cur)
                else:
                    text, cur = self.seq_layer(cur)
                members.append(text)
            g = self.fresh("group")
            stmt = f"{g} = Sequential([{', '.join(members)}])"
            if scope is not None:
                self.emit(f"with default_options({scope}) {{\n    {stmt}\n}}")
            else:
                self.emit(stmt)
            self.emit(f"{out} = {g}({v})")
            return kind, cur, out
        if construct == "change":
            if kind == "image":
                if d(st.booleans()):
                    self.emit(f"{out} = Flatten()({v})")
                    self.features.add("flatten")
                    return "vector", (math.prod(t),), out
                units = d(st.integers(1, 8))
                self.emit(f"{out} = Dense({units})({v})")  # Dense flattens an image in C, H, W order
                self.features.add("dense-on-image")
                return "vector", (units,), out
            if kind == "seq":
                fn = d(st.sampled_from(["select_last", "select_first"]))
                self.emit(f"{out} = {fn}({v})")
                self.features.add(fn)
                return "vector", t, out
        # a single layer
        if kind == "image":
            text, nt = self.image_layer(t)
        elif kind == "vector":
            text, nt = self.vector_layer(t)
        else:
            text, nt = self.seq_layer(t)
        self.emit(f"{out} = {text}({v})")
        return kind, nt, out


@st.composite
def models(draw):
    b = Builder(draw)
    kind = draw(st.sampled_from(["image", "image", "vector", "seq"]))
    T = None
    if kind == "image":
        t = (draw(st.integers(1, 3)), draw(st.integers(3, 12)), draw(st.integers(3, 12)))
        b.emit(f"x = Input({t})")
    elif kind == "vector":
        t = (draw(st.integers(1, 12)),)
        b.emit(f"x = Input({t[0]})" if draw(st.booleans()) else f"x = Input(({t[0]},))")
    else:
        t = (draw(st.integers(1, 6)),)
        T = draw(st.integers(1, 5))
        fixed = draw(st.booleans())
        b.emit(f"x = SequenceInput({t[0]}, length={T})" if fixed else f"x = SequenceInput({t[0]})")
    v = "x"
    for _ in range(draw(st.integers(1, 6))):
        kind, t, v = b.step(kind, t, v)
    b.emit(f"output {v}")
    return {"text": "\n".join(b.lines) + "\n", "kind": kind, "shape": t, "T": T if T is not None else 3,
            "features": b.features}


# ------------------------------------------------------------------ checks
def inputs_for(g, T, n=2, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for i in g.inputs:
        shape = (n,) + ((i.type.length or T,) if i.type.seq else ()) + tuple(i.type.shape)
        out[i.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def expected_batch_shape(m, n=2):
    return (n,) + ((m["T"],) if m["kind"] == "seq" else ()) + tuple(m["shape"])


def load_ok(m):
    try:
        return load_text(m["text"], "prop.net")
    except NetdslError as e:  # pragma: no cover - the message is the point
        pytest.fail(f"the front end rejected a valid model:\n{m['text']}\n{e.format()}")


@PROPS
@given(models())
def test_front_end_infers_the_documented_shape(m):
    g = load_ok(m)
    (out,) = g.outputs
    node = next(n for n in g.nodes if n.name == out)
    assert node.type.shape == tuple(m["shape"]), m["text"]
    assert node.type.seq == (m["kind"] == "seq"), m["text"]


def _executor():
    try:
        from netdsl.exec.graph import Executor
        from netdsl.exec.weights import init_params
    except ImportError as e:  # pragma: no cover
        pytest.skip(f"the native executor is not importable yet: {e}")
    return Executor, init_params


@PROPS
@given(models())
def test_native_executor_produces_the_inferred_shape(m):
    Executor, init_params = _executor()
    g = load_ok(m)
    ex = Executor(g, init_params(g, 0))
    out = ex.forward(inputs_for(g, m["T"]))
    (y,) = out.values()
    assert y.shape == expected_batch_shape(m), m["text"]
    assert np.isfinite(y).all(), m["text"]


def available_targets():
    out = []
    for t in sorted(TARGETS):
        try:
            importlib.import_module(TARGETS[t])
        except ModuleNotFoundError:
            continue
        out.append(t)
    return out


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_target_is_importable(target):
    if target not in available_targets():
        pytest.skip(f"netdsl/emit target {target} ({TARGETS[target]}) does not exist yet")


@PROPS
@given(models())
def test_every_target_generates_parseable_code(m):
    from netdsl.emit.base import emit

    g = load_ok(m)
    for target in available_targets():
        try:
            code = emit(g, target)
        except NetdslError as e:  # the target cannot express a layer of this model: documented, not a bug
            assert all(d.code[:2] in ("E7", "E8") for d in e.diagnostics), e.format()
            continue
        ast.parse(code)


def _torch():
    try:
        import torch  # noqa: F401
    except ImportError:  # pragma: no cover
        pytest.skip("torch is not installed")
    if "pytorch" not in available_targets():
        pytest.skip("netdsl/emit/pytorch.py does not exist yet")


@PROPS
@given(m=models())
def test_generated_pytorch_agrees_with_the_executor(tmp_path_factory, m):
    _torch()
    Executor, init_params = _executor()
    from netdsl.emit.base import emit
    from netdsl.exec.weights import save_weights

    g = load_ok(m)
    code = emit(g, "pytorch")
    module = types.ModuleType("netdsl_prop_generated")
    exec(compile(code, "<generated pytorch>", "exec"), module.__dict__)
    model = module.build_model()
    params = init_params(g, 0)
    path = tmp_path_factory.mktemp("w") / "w.npz"
    save_weights(path, params)
    module.load_netdsl_weights(model, str(path))
    xs = inputs_for(g, m["T"])
    got = module.predict(model, xs)
    (y,) = got.values()
    assert y.shape == expected_batch_shape(m), m["text"]
    want = next(iter(Executor(g, params).forward(xs).values()))
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())),
                               err_msg=m["text"])


def test_the_strategy_covers_what_it_claims():
    """Over a fixed sample, every construct the docstring lists is generated at least once."""
    seen = set()

    @settings(max_examples=600, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(models())
    def collect(m):
        seen.update(m["features"])

    collect()
    want = {"conv", "MaxPooling", "AveragePooling", "bn", "ln", "dropout", "act", "Activation", "v-dense", "flatten",
            "dense-on-image", "s-lstm", "select_last", "select_first", "splice-image", "splice-vector", "shared",
            "stack", "scope", "pad=int", "pad=pair", "pad=explicit", "pad=default", "shared-sequential",
            "shared-stack"}
    assert want <= seen, sorted(want - seen)
    assert any(f.startswith("pad=True s=22 k=2") or f.startswith("pad=True s=22 k=4") for f in seen), \
        "pad=True at stride 2 with an even kernel"


# ------------------------------------------------------------------ all six columns
CROSS_N = int(os.environ.get("NETDSL_CROSS_MODELS", "30"))


def trainable(m) -> bool:
    """A model with a weight to train: one without has nothing a training step could compare (every
    framework's optimizer refuses an empty parameter list).

    Also left out: LayerNormalization over one feature, whose output is 0 up to float32 rounding of
    x - mean times 1 / sqrt(eps) (~1.5e-5 on keras/tensorflow, over the 1e-5 tolerance); not a difference
    of meaning, and reported as such in the conformance work of issue 11.
    """
    g = load_text(m["text"], "prop.net")
    types = {n.name: n.type for n in g.nodes} | {i.name: i.type for i in g.inputs}
    layers = {layer.name: layer for layer in g.layers}
    for n in g.nodes:
        if layers[n.layer].kind == "LayerNormalization" and math.prod(types[n.inputs[0]].shape) == 1:
            return False
    return any(p.trainable for p in g.params())


def drawn_models(n: int, seed: int) -> list:
    """n distinct models with weights to train, drawn by the strategy, the same for the same seed."""
    from hypothesis import seed as hseed

    texts: dict = {}

    @hseed(seed)
    @settings(max_examples=6 * n, deadline=None, derandomize=False, database=None,
              suppress_health_check=list(HealthCheck))
    @given(models())
    def collect(m):
        if len(texts) < n and m["text"] not in texts and trainable(m):
            texts[m["text"]] = m

    collect()
    return list(texts.values())


def test_drawn_models_agree_on_all_six_columns(tmp_path, monkeypatch):
    """A fixed seeded sample of drawn models through `netdsl conformance`: inference and one SGD step on
    pytorch, keras/torch, keras/tensorflow, tf-estimator, gluon and cntk against the native executor. A cell
    may be refused at compile time (E8xx, the target cannot express it), never wrong."""
    from netdsl import conformance as conf

    paths = []
    for k, m in enumerate(drawn_models(CROSS_N, 11)):
        path = tmp_path / f"drawn_{k:03d}.net"
        path.write_text(m["text"])
        paths.append(str(path))
    monkeypatch.chdir(tmp_path)
    cells = conf.run(paths, conf.COLUMNS, workdir=str(tmp_path / "work"), log=lambda m: None)
    bad = [f"{p} / {col}: {cell.short()}: {cell.reason}\n{open(p).read()}" for (p, col), cell in cells.items()
           if cell.status not in ("pass", "not run", "unsupported")
           or (cell.status == "pass" and cell.step_status not in ("pass", "n/a"))]
    assert len(paths) == CROSS_N
    assert not bad, "\n".join(bad)
