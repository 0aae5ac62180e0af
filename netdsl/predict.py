"""`netdsl predict MODEL --load W.npz INPUT... [-o OUT.csv|OUT.npy]`: inference on new data.

INPUTs are image files or folders of images, .npz files (array `x`), .npy arrays, CSV
files (feature columns; --label-column drops a label column), or, for token models, text
files of one whitespace-tokenised sentence per line (a CoNLL file: its first column).
The weights file supplies what training stored about the data (docs/data.md): the
statistics (data/mean, data/std), the vocabulary and the class or tag names, so inputs
are scaled and encoded exactly as in training.

Classifiers (loss cross_entropy_with_softmax) give the class and its probability per
sample, taggers per token; other models give their raw outputs. Without -o the results
are printed; -o writes a CSV table or a .npy array (probabilities), atomically.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
E_WRITE = "E608"  # an output that cannot be written (as for run --save)


def register(sub) -> None:
    p = sub.add_parser("predict", help="run a trained model on new data",
                       description="Run FILE with the weights of --load on INPUT files (images, image "
                       "folders, .npz/.npy, CSV, text) and print or write the outputs (class and "
                       "probability for classifiers). See docs/data.md.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("--load", metavar="W.npz", required=True, help="trained weights (from netdsl run --save)")
    p.add_argument("-o", "--output", metavar="OUT", help="write OUT.csv (a table) or OUT.npy (the outputs "
                   "or probabilities) instead of printing")
    p.add_argument("--label-column", metavar="COL", help="CSV inputs: a label column to drop (header "
                   "name or 0-based index)")
    p.add_argument("--batch-size", type=int, default=256, metavar="B", help="samples per forward pass")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    from .data import DataError
    from .errors import printable

    if args.output and Path(args.output).suffix.lower() not in (".csv", ".npy"):
        print(f"netdsl predict: error: -o {printable(args.output)}: expected a .csv or .npy file name",
              file=sys.stderr)
        return 2
    if args.batch_size <= 0:
        print("netdsl predict: error: --batch-size must be positive", file=sys.stderr)
        return 2
    try:
        return _predict(args)
    except DataError as e:
        print(f"{printable(args.file)}: error: {e}", file=sys.stderr)
        return 1


def _check_output(args):
    from . import fsutil
    from .errors import Diagnostic, NetdslError, Span

    try:
        fsutil.check_output(args.output, inputs=[args.file, args.load, *args.inputs], what="output")
    except fsutil.OutputPathError as e:
        raise NetdslError(Diagnostic(E_WRITE, str(e), Span(os.fsdecode(args.output), 1, 1, 1, 1))) from None


def _predict(args) -> int:
    from .data import DataError
    from .data.feed import Feed, dense_view
    from .data.spec import saved_data
    from .exec.graph import Executor
    from .exec.weights import load_weights
    from .frontend import load
    from .fsutil import is_regular_readable

    graph = load(args.file)
    if args.output:
        _check_output(args)  # before any work
    for path in (args.load, *args.inputs):
        # Reading a FIFO would block forever; a device is no data file either.
        if os.path.exists(path) and not os.path.isdir(path) and not is_regular_readable(path):
            raise DataError(f"{path}: not a regular file (a FIFO or device); refusing to read it")
    params = load_weights(args.load, graph)
    saved = saved_data(args.load)
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise DataError(f"predict feeds models with one input and one output; {graph.name} has "
                        f"{len(graph.inputs)} and {len(graph.outputs)}")
    inp, out_name = graph.inputs[0], graph.outputs[0]
    t = inp.type
    tokens = t.vocab is not None
    names, samples = _read_inputs(args, tokens, t, saved)
    if not samples:
        raise DataError("no samples in the inputs")
    ex = Executor(graph, params)
    classifier = graph.training is not None and graph.training.loss == "cross_entropy_with_softmax"
    outs = []
    if tokens:
        from .data.text import PAD_ID, pad_batch

        seq_out = bool(graph.value_type(out_name).seq)
        for i in range(0, len(samples), args.batch_size):
            chunk = samples[i:i + args.batch_size]
            x, lengths = pad_batch(chunk, PAD_ID)  # at the end, with lengths (docs/ir.md)
            y = ex.forward({inp.name: x}, training=False, lengths={inp.name: lengths})[out_name]
            for k, n in enumerate(lengths):
                outs.append(y[k, :n] if seq_out else y[k])
    else:
        x_all = np.stack(samples)
        view = dense_view(t, tuple(x_all.shape[1:]))
        if view is None:
            raise DataError(f"inputs have samples of shape {x_all.shape[1:]}, which input '{inp.name}' "
                            f"{t.describe()} cannot take")
        feed = Feed(inp.name, out_name, 0, "dense", view, saved.get("mean"), saved.get("std"))
        for i in range(0, len(x_all), args.batch_size):
            y = ex.forward({inp.name: feed.batch(x_all[i:i + args.batch_size])}, training=False)[out_name]
            outs.extend(y)
    if classifier:
        outs = [_softmax(o) for o in outs]
    _emit(args, names, outs, classifier, saved, bool(graph.value_type(out_name).seq))
    return 0


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# --------------------------------------------------------------------------- reading

def _read_inputs(args, tokens: bool, t, saved: dict):
    """(names, samples): one name per sample; samples are arrays (dense) or id arrays (tokens)."""
    from .data import DataError
    from .data import arrays as arr
    from .data.text import encode, read_conll, read_sentences

    names, samples = [], []
    expect = arr.image_shape_of_type(t)
    for path in args.inputs:
        p = Path(path)
        suffix = p.suffix.lower()
        if tokens:
            if "vocab" not in saved:
                raise DataError(f"{args.load}: holds no vocabulary (data/vocab); weights trained by netdsl "
                                f"run --save on a conll or tsv dataset store it")
            if p.is_dir() or suffix in IMAGE_SUFFIXES + (".npz", ".npy", ".csv"):
                raise DataError(f"{path}: the model reads token sequences: give text files of one sentence "
                                f"per line")
            if suffix in (".conll", ".iob", ".bio"):
                sents = [(toks, line) for toks, _, line in read_conll(p, tagged=False)]
            else:
                sents = read_sentences(p)
            ids = encode([s for s, _ in sents], saved["vocab"])
            for (toks, line), seq in zip(sents, ids):
                names.append((f"{path}:{line}", toks))
                samples.append(seq)
            continue
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not files:
                raise DataError(f"{path}: no .png or .jpg images in this directory")
            for f in files:
                names.append((str(f), None))
                samples.append(arr.read_image(f, expect))
        elif suffix in IMAGE_SUFFIXES:
            names.append((path, None))
            samples.append(arr.read_image(p, expect))
        elif suffix == ".npz":
            x = arr.load_npz_inputs(p)
            names += [(f"{path}[{i}]", None) for i in range(len(x))]
            samples += list(x)
        elif suffix == ".npy":
            x = _load_npy(p)
            names += [(f"{path}[{i}]", None) for i in range(len(x))]
            samples += list(x)
        elif suffix == ".csv":
            x = arr.read_csv(p, args.label_column, labelled=args.label_column is not None)[0]
            names += [(f"{path}[{i}]", None) for i in range(len(x))]
            samples += list(x)
        else:
            raise DataError(f"{path}: cannot tell what this is: give images (.png, .jpg), a folder of "
                            f"them, .npz, .npy or .csv files")
    if not tokens and samples:
        shapes = {s.shape for s in samples}
        if len(shapes) > 1:
            raise DataError(f"the inputs have samples of different shapes: {sorted(shapes)[:4]}")
    return names, samples


def _load_npy(path):
    from .data import DataError

    try:
        x = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npy array ({e})") from None
    if x.dtype.kind not in "biuf" or x.ndim < 2:
        raise DataError(f"{path}: expected a numeric array of shape (N, ...), got {x.dtype} {x.shape}")
    return np.array(x)


# --------------------------------------------------------------------------- writing

def _emit(args, names, outs, classifier, saved, per_token):
    """per_token: the output is a sequence (a row per step); a sample's output can also be a rank-2 tensor."""
    from . import fsutil

    classes = saved.get("classes")

    def cls(k):
        return classes[k] if classes is not None and k < len(classes) else str(k)

    rows = []  # (input, position or None, token or None, class, probability or raw values)
    for (name, toks), o in zip(names, outs):
        if per_token:
            for pos, (tok, v) in enumerate(zip(toks, o)):
                k = int(v.argmax())
                rows.append((name, pos, tok, cls(k), float(v[k]) if classifier else v))
        else:
            k = int(o.argmax())
            rows.append((name, None, None, cls(k), float(o[k]) if classifier else o))

    if args.output and args.output.lower().endswith(".npy"):
        if per_token:
            t = max(len(o) for o in outs)
            a = np.zeros((len(outs), t) + outs[0].shape[1:], np.float32)
            for i, o in enumerate(outs):
                a[i, :len(o)] = o
        else:
            a = np.stack(outs).astype(np.float32)
        fsutil.atomic_write(args.output, lambda f: np.save(f, a, allow_pickle=False), mode="wb")
        print(f"{len(outs)} outputs written to {args.output}", file=sys.stderr)
        return
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    value = "probability" if classifier else "output"
    w.writerow(["input", "position", "token", "class", value] if per_token else ["input", "class", value])
    for name, pos, tok, c, v in rows:
        v = f"{v:.6f}" if classifier else " ".join(f"{x:.6g}" for x in np.ravel(v))
        w.writerow([name, pos, tok, c, v] if per_token else [name, c, v])
    if args.output:
        fsutil.atomic_write(args.output, buf.getvalue())
        print(f"{len(rows)} rows written to {args.output}", file=sys.stderr)
    else:
        from .errors import printable

        sys.stdout.write("\n".join(printable(line) for line in buf.getvalue().splitlines()) + "\n")
