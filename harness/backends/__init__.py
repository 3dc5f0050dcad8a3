"""Backends turn a verified ONNX file into a runnable artifact: cpu (ONNX Runtime), tensorrt, torch."""

from harness.backends.base import Backend, BuildOptions, Runner, Timing, backend_names, get_backend

__all__ = ["Backend", "BuildOptions", "Runner", "Timing", "backend_names", "get_backend"]
