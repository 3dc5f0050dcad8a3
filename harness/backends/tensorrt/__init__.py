"""TensorRT backend: explicit-precision engines built from the verified ONNX, run with pycuda.

tensorrt and pycuda are optional (`pip install -e '.[gpu]'`); importing this package does not need them,
constructing the backend does, so `--backend tensorrt` fails at once with the install line.
"""

from __future__ import annotations

from pathlib import Path

from harness.backends.base import Backend, BuildOptions, Runner
from harness.errors import HarnessError, require


def gpu_modules():
    """(tensorrt, pycuda.driver), or a one-line error naming the install command."""
    trt = require("tensorrt")
    require("pycuda")
    try:
        import pycuda.driver as cuda
    except ImportError as exc:  # pycuda is there but cannot load libcuda
        raise HarnessError(f"pycuda cannot load the CUDA driver ({exc}): TensorRT engines need an NVIDIA GPU "
                           "and driver") from exc
    return trt, cuda


def cuda_device(cuda, index: int = 0):
    """Initialise the driver API and return the device, or say plainly that there is no GPU."""
    try:
        cuda.init()
        return cuda.Device(index)
    except cuda.Error as exc:
        raise HarnessError(f"no usable CUDA GPU ({exc}): TensorRT engines are built and run on a GPU") from exc


class TensorRTBackend(Backend):
    name, suffix = "tensorrt", ".engine"

    def __init__(self):
        self.trt, self.cuda = gpu_modules()

    def versions(self) -> dict[str, str]:
        return {"tensorrt": self.trt.__version__}

    def device(self) -> dict[str, str]:
        """An engine is tied to the GPU model it was tuned on: name and compute capability go in the key."""
        dev = cuda_device(self.cuda)
        major, minor = dev.compute_capability()
        return {"gpu": dev.name(), "compute_capability": f"{major}.{minor}"}

    def build(self, onnx_path: Path, artifact: Path, options: BuildOptions) -> None:
        from harness.backends.tensorrt.builder import TIMING_CACHE, build_serialized

        # The artifact is written in the engines folder, so the timing cache shared by all builds sits beside it.
        plan = build_serialized(onnx_path, options, Path(artifact).parent / TIMING_CACHE)
        Path(artifact).write_bytes(plan)

    def load(self, artifact: Path, options: BuildOptions) -> Runner:
        from harness.backends.tensorrt.runtime import TensorRTRunner

        return TensorRTRunner(Path(artifact))


__all__ = ["TensorRTBackend", "gpu_modules"]
