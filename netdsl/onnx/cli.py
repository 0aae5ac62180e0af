"""`netdsl export` (IR -> ONNX), `netdsl import` (ONNX, PyTorch, Keras -> .net + weights), `netdsl graph` (a picture)."""
from __future__ import annotations

import sys

from ..fsutil import OutputPathError, atomic_write, check_output, remove_stale_temps


def register(sub) -> None:
    e = sub.add_parser("export", help="write the model as ONNX, with its weights as initializers")
    e.add_argument("file", metavar="FILE")
    e.add_argument("--weights", metavar="NPZ", help="canonical weights (default: the seeded initialisation)")
    e.add_argument("--seed", type=int, default=0, help="initialisation seed when no --weights (default 0)")
    e.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    e.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    e.set_defaults(func=cmd_export)

    i = sub.add_parser("import", help="turn an ONNX file, a PyTorch module or a Keras model into a .net file "
                                      "and a weight file")
    i.add_argument("source", metavar="SOURCE",
                   help="model.onnx, module.py:ClassName, a TorchScript .pt, or model.keras")
    i.add_argument("-o", "--output", required=True, metavar="OUT.net")
    i.add_argument("--weights-out", metavar="NPZ", help="write every tensor here, by IR parameter name "
                                                       "(default: OUT.npz beside OUT.net)")
    i.add_argument("--input-shape", metavar="DIMS", help="sample shape without the batch, e.g. 1,28,28 "
                                                         "(PyTorch sources)")
    i.add_argument("--state-dict", metavar="PT", help="trained weights for module.py:ClassName (torch.save of "
                                                     "its state_dict)")
    i.set_defaults(func=cmd_import)

    g = sub.add_parser("graph", help="draw the model: .svg, .png or .dot")
    g.add_argument("file", metavar="FILE")
    g.add_argument("-o", "--output", required=True, metavar="OUT")
    g.set_defaults(func=cmd_graph)


def _refuse(cmd: str, e: Exception) -> int:
    print(f"netdsl {cmd}: error: {e}", file=sys.stderr)
    return 2


def cmd_export(args) -> int:
    import onnx.defs

    from ..exec.weights import init_params, load_weights
    from ..frontend import load
    from .export import DEFAULT_OPSET, to_onnx

    newest = onnx.defs.onnx_opset_version()
    if args.opset is not None and not DEFAULT_OPSET <= args.opset <= newest:
        return _refuse("export", ValueError(f"--opset must be from {DEFAULT_OPSET} (LayerNormalization and the "
                                            f"LSTM/Squeeze forms used need it) to {newest} (this onnx), got {args.opset}"))
    try:
        out = check_output(args.output, inputs=[args.file, args.weights], what="ONNX output")
    except OutputPathError as e:
        return _refuse("export", e)
    graph = load(args.file)
    params = load_weights(args.weights, graph) if args.weights else init_params(graph, args.seed)
    model = to_onnx(graph, params, args.opset or DEFAULT_OPSET)
    remove_stale_temps(out)
    atomic_write(out, model.SerializeToString(), mode="wb")
    print(f"wrote {out} (opset {args.opset or DEFAULT_OPSET}, {len(model.graph.initializer)} initializers)",
          file=sys.stderr)
    return 0


def cmd_import(args) -> int:
    from pathlib import Path

    from .sources import import_source

    out = Path(args.output)
    weights_out = Path(args.weights_out) if args.weights_out else out.with_suffix(".npz")
    src = args.source.rsplit(":", 1)[0] if ":" in args.source and not Path(args.source).exists() else args.source
    try:
        check_output(out, inputs=[src, args.state_dict], what=".net output")
        check_output(weights_out, inputs=[src, out, args.state_dict], what="weights output")
    except OutputPathError as e:
        return _refuse("import", e)
    shape = None
    if args.input_shape:
        try:
            shape = tuple(int(d) for d in args.input_shape.split(","))
        except ValueError:
            return _refuse("import", ValueError(f"--input-shape must be integers separated by commas, "
                                               f"got {args.input_shape!r}"))
    text, weights = import_source(args.source, shape, out.stem, args.state_dict)
    import numpy as np

    remove_stale_temps(out)
    remove_stale_temps(weights_out)
    atomic_write(weights_out, lambda f: np.savez(f, **weights), mode="wb")
    atomic_write(out, text)
    print(f"wrote {out} and {weights_out} ({len(weights)} tensors)", file=sys.stderr)
    return 0


def cmd_graph(args) -> int:
    from ..frontend import load
    from .graph import render

    try:
        out = check_output(args.output, inputs=[args.file], what="graph output")
    except OutputPathError as e:
        return _refuse("graph", e)
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in ("svg", "png", "dot"):
        return _refuse("graph", ValueError(f"output must end in .svg, .png or .dot, got {out.name!r}"))
    data = render(load(args.file), fmt)
    remove_stale_temps(out)
    atomic_write(out, data, mode="wb" if isinstance(data, bytes) else "w")
    return 0
