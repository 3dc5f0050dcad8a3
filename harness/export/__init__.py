"""PyTorch -> ONNX with a pinned opset, a dynamic batch axis, and a numerical check before the file is kept."""

from harness.export.onnx_export import INPUT_NAME, OPSET, OUTPUT_NAME, export_onnx

__all__ = ["INPUT_NAME", "OPSET", "OUTPUT_NAME", "export_onnx"]
