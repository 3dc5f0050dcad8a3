"""harness: quantize, export, build, benchmark and compare PyTorch models on TensorRT and ONNX Runtime."""

__version__ = "0.1.0"
