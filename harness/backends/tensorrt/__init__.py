"""TensorRT backend: explicit-precision engines built from the verified ONNX, run through harness.cuda.

tensorrt and a CUDA binding (cuda-python, pycuda or torch: harness.cuda) are optional (`pip install -e '.[gpu]'`);
importing this package does not need them, constructing the backend does, so `--backend tensorrt` fails at once
with the install line.
"""

from __future__ import annotations

from pathlib import Path

from harness.backends.base import Backend, BuildOptions, Runner
from harness.cuda import open_cuda, resolve_binding
from harness.errors import require


def tensorrt_module():
    """tensorrt, or a one-line error naming the install command."""
    return require("tensorrt")


class TensorRTBackend(Backend):
    name, suffix = "tensorrt", ".engine"

    def __init__(self, cuda_binding: str = "auto"):
        self.trt = tensorrt_module()
        self.cuda_binding = resolve_binding(cuda_binding)

    def versions(self) -> dict[str, str]:
        return {"tensorrt": self.trt.__version__}

    def device(self) -> dict[str, str]:
        """An engine is tied to the GPU model it was tuned on: name and compute capability go in the key."""
        cuda = open_cuda(self.cuda_binding)
        try:
            return cuda.device()
        finally:
            cuda.close()

    def build(self, onnx_path: Path, artifact: Path, options: BuildOptions) -> None:
        from harness.backends.tensorrt.builder import TIMING_CACHE, build_serialized, check_gpu_supports

        check_gpu_supports(options.precision, self.device)
        # The artifact is written in the engines folder, so the timing cache shared by all builds sits beside it.
        plan = build_serialized(self.trt, onnx_path, options, Path(artifact).parent / TIMING_CACHE)
        Path(artifact).write_bytes(plan)

    def load(self, artifact: Path, options: BuildOptions) -> Runner:
        from harness.backends.tensorrt.runtime import TensorRTRunner

        return TensorRTRunner(Path(artifact), self.trt, open_cuda(self.cuda_binding))  # the runner closes it


__all__ = ["TensorRTBackend", "tensorrt_module"]
