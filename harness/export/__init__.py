"""PyTorch -> ONNX with a pinned opset and a dynamic batch axis, checked (harness.export.verify) before it is kept.

Importing the package stays cheap (experiment files read the check levels without torch or onnx).
"""
