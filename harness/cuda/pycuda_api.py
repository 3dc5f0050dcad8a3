"""The CUDA layer on pycuda (the design card's package). pycuda binds no stream capture: CUDA graphs are
captured on pycuda's stream through cuda-python's runtime API when it is installed (`.[gpu]` has it)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from harness.cuda import Cuda, CudaError, DeviceBuffer, Event, Graph, Stream, WrappedEvent
from harness.errors import HarnessError, MissingDependency


def driver_module():
    try:
        import pycuda.driver as drv
    except ImportError as exc:
        if getattr(exc, "name", "") in ("pycuda", "pycuda.driver"):
            raise MissingDependency("pycuda", "pycuda") from exc
        raise HarnessError(f"pycuda cannot load the CUDA driver ({exc}): TensorRT engines need an NVIDIA GPU "
                           "and driver") from exc
    return drv


class PycudaStream(Stream):
    def __init__(self, drv):
        self.stream = drv.Stream()
        self.handle = int(self.stream.handle)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def _cudart(self):
        from harness.cuda.cuda_python import runtime_module

        try:
            return runtime_module()
        except HarnessError as exc:
            raise CudaError("pycuda binds no CUDA graph API; graphs on a pycuda stream need cuda-python "
                            "(pip install -e '.[gpu]')") from exc

    def begin_capture(self) -> None:
        from harness.cuda.cuda_python import begin_capture

        begin_capture(self._cudart(), self.handle)

    def end_capture(self) -> Graph:
        from harness.cuda.cuda_python import end_capture

        return end_capture(self._cudart(), self.handle)


class PycudaEvent(WrappedEvent):
    def __init__(self, drv, blocking: bool):
        self.event = drv.Event(drv.event_flags.BLOCKING_SYNC if blocking else drv.event_flags.DEFAULT)

    def elapsed_ms(self, end: Event) -> float:
        return float(self.event.time_till(end.event))


class PycudaApi(Cuda):
    name = "pycuda"

    def __init__(self):
        self.drv = driver_module()
        try:
            self.drv.init()
            self.dev = self.drv.Device(0)
        except self.drv.Error as exc:
            raise CudaError(f"no usable CUDA GPU ({exc}): TensorRT engines are built and run on a GPU") from exc
        # TensorRT uses the runtime API, which works in the device's primary context: share it.
        self.ctx = self.dev.retain_primary_context()
        self.ctx.push()

    def device(self) -> dict[str, str]:
        major, minor = self.dev.compute_capability()
        return {"gpu": self.dev.name(), "compute_capability": f"{major}.{minor}"}

    def stream(self) -> Stream:
        return PycudaStream(self.drv)

    def host_empty(self, shape, dtype) -> np.ndarray:
        return self.drv.pagelocked_empty(tuple(shape), np.dtype(dtype))

    def device_empty(self, nbytes: int) -> DeviceBuffer:
        allocation = self.drv.mem_alloc(max(int(nbytes), 1))
        return DeviceBuffer(int(allocation), int(nbytes), allocation)

    def h2d_async(self, dst: DeviceBuffer, src: np.ndarray, stream: Stream) -> None:
        self.drv.memcpy_htod_async(_device(dst), src, stream.stream)

    def d2h_async(self, dst: np.ndarray, src: DeviceBuffer, stream: Stream) -> None:
        self.drv.memcpy_dtoh_async(dst, _device(src), stream.stream)

    def event(self, blocking: bool = True) -> Event:
        return PycudaEvent(self.drv, blocking)

    @contextmanager
    def current(self) -> Iterator[None]:
        """pycuda's context is current only in the thread that pushed it: push it here for the block."""
        self.ctx.push()
        try:
            yield
        finally:
            self.ctx.pop()

    def close(self) -> None:
        if getattr(self, "ctx", None) is not None:
            self.ctx.pop()
            self.ctx.detach()
            self.ctx = None


def _device(buffer: DeviceBuffer):
    """pycuda takes its allocation object or a bare address (memory TensorRT owns, e.g. a debug tensor's)."""
    return buffer.owner if buffer.owner is not None else buffer.ptr
