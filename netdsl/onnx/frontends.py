"""PyTorch and Keras models as ONNX, for importer.py.

PyTorch goes through torch.onnx.export with the TorchScript-based exporter (dynamo=False: the
dynamo exporter needs onnxscript). Keras is converted from the model's own layers and weights
(keras_onnx.py), since tf2onnx is not a dependency.
"""
from __future__ import annotations

import importlib.util
import io
import sys
import warnings
from pathlib import Path

from .sources import source_error


def module_to_onnx(module, input_shape, opset: int = 17):
    """An nn.Module (or ScriptModule) in eval mode as an ONNX model with a dynamic batch axis."""
    import onnx
    import torch

    module.eval()
    dummy = torch.zeros((2,) + tuple(input_shape), dtype=torch.float32)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (dummy,), buf, input_names=["x"], dynamic_axes={"x": {0: "N"}},
                          opset_version=opset, do_constant_folding=True, dynamo=False,
                          training=torch.onnx.TrainingMode.PRESERVE)  # keep BatchNorm (EVAL folds it into the conv)
    return onnx.load_from_string(buf.getvalue())


def load_torch(source: str, state_dict: str | None = None):
    """`module.py:ClassName` (instantiated without arguments, after torch.manual_seed(0)) or a TorchScript file."""
    import torch

    if ":" in source and not Path(source).exists():
        path, cls_name = source.rsplit(":", 1)
        if not Path(path).is_file():
            raise source_error(source, f"no such file {path!r}")
        spec = importlib.util.spec_from_file_location(f"netdsl_import_{Path(path).stem}", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        try:
            spec.loader.exec_module(mod)  # the user's own module: running it is the point
            cls = getattr(mod, cls_name, None)
            if cls is None:
                raise source_error(source, f"{path} defines no {cls_name!r}")
            torch.manual_seed(0)
            module = cls()
        except TypeError as e:
            raise source_error(source, f"cannot build {cls_name}() without arguments: {e}") from None
        except Exception as e:  # noqa: BLE001 -- the user's module failed; say so instead of a traceback
            raise source_error(source, f"running {path} failed: {type(e).__name__}: {e}") from None
        finally:
            sys.modules.pop(spec.name, None)
    else:
        try:
            module = torch.jit.load(source, map_location="cpu")
        except (RuntimeError, ValueError, OSError) as e:
            raise source_error(source, f"not a TorchScript file: {str(e).splitlines()[0][:200]}") from None
    if state_dict:
        try:
            module.load_state_dict(torch.load(state_dict, map_location="cpu", weights_only=True))
        except (RuntimeError, OSError, KeyError) as e:
            raise source_error(state_dict, f"cannot load the state dict: {str(e).splitlines()[0][:200]}") from None
    return module


def torch_to_onnx(source: str, input_shape, state_dict: str | None = None):
    if input_shape is None:
        raise source_error(source, "a PyTorch source needs --input-shape (the sample shape, e.g. 1,28,28)")
    module = load_torch(source, state_dict)
    try:
        return module_to_onnx(module, input_shape)
    except Exception as e:  # noqa: BLE001 -- torch's exporter raises many types; each means "cannot export"
        raise source_error(source, f"torch.onnx.export failed: {str(e).splitlines()[0][:300]}") from None


def keras_to_onnx(source: str):
    from .keras_onnx import keras_model_to_onnx, load_keras

    return keras_model_to_onnx(load_keras(source), source)
