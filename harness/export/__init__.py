"""PyTorch -> ONNX with a pinned opset and a dynamic batch axis, checked (harness.export.verify) before it is kept.

Importing the package stays cheap (experiment files read the check levels without torch or onnx).
"""

# Bumped whenever the same request exports a different file (2: float files decompose attention as the quantized
# ones do), so the ONNX cache never serves a file made the old way.
EXPORT_REVISION = 2
