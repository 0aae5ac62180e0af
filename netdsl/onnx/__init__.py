"""ONNX interchange: export the IR to ONNX, import ONNX (and PyTorch/Keras models through it) to the IR."""
