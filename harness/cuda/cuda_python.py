"""The CUDA layer on NVIDIA's cuda-python (`cuda.bindings.runtime`), as TensorRT's own samples use it.

Every call returns (error, *values); a failure becomes one line with CUDA's error name. The runtime API works
in the device's primary context, the one TensorRT uses.
"""

from __future__ import annotations

import ctypes

import numpy as np

from harness.cuda import Cuda, CudaError, DeviceBuffer, Event, Graph, Stream
from harness.errors import MissingDependency


def runtime_module():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError as exc:
        raise MissingDependency("cuda-python", "gpu") from exc
    return cudart


def check(cudart, result, call: str):
    """The values of a cuda-python call, or CudaError naming the call and the error."""
    err, *values = result
    if err != cudart.cudaError_t.cudaSuccess:
        _, name = cudart.cudaGetErrorName(err)
        raise CudaError(f"{call} failed: {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else tuple(values)


class RuntimeGraph(Graph):
    def __init__(self, cudart, graph_exec):
        self.cudart, self.graph_exec = cudart, graph_exec

    def launch(self, stream: Stream) -> None:
        check(self.cudart, self.cudart.cudaGraphLaunch(self.graph_exec, stream.handle), "cudaGraphLaunch")


def begin_capture(cudart, handle: int) -> None:
    mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
    check(cudart, cudart.cudaStreamBeginCapture(handle, mode), "cudaStreamBeginCapture")


def end_capture(cudart, handle: int) -> RuntimeGraph:
    """End a capture on any stream handle (pycuda's too) and instantiate the graph."""
    graph = check(cudart, cudart.cudaStreamEndCapture(handle), "cudaStreamEndCapture")
    try:
        return RuntimeGraph(cudart, check(cudart, cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate"))
    finally:
        cudart.cudaGraphDestroy(graph)  # the instantiated graph does not need its template


class RuntimeStream(Stream):
    def __init__(self, cudart):
        self.cudart = cudart
        self.stream = check(cudart, cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking),
                            "cudaStreamCreateWithFlags")
        self.handle = int(self.stream)

    def synchronize(self) -> None:
        check(self.cudart, self.cudart.cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def begin_capture(self) -> None:
        begin_capture(self.cudart, self.handle)

    def end_capture(self) -> Graph:
        return end_capture(self.cudart, self.handle)


class RuntimeEvent(Event):
    def __init__(self, cudart, blocking: bool):
        self.cudart = cudart
        flags = cudart.cudaEventBlockingSync if blocking else cudart.cudaEventDefault
        self.event = check(cudart, cudart.cudaEventCreateWithFlags(flags), "cudaEventCreateWithFlags")

    def record(self, stream: Stream) -> None:
        check(self.cudart, self.cudart.cudaEventRecord(self.event, stream.handle), "cudaEventRecord")

    def synchronize(self) -> None:
        check(self.cudart, self.cudart.cudaEventSynchronize(self.event), "cudaEventSynchronize")

    def query(self) -> bool:
        err, = self.cudart.cudaEventQuery(self.event)
        if err == self.cudart.cudaError_t.cudaErrorNotReady:
            return False
        check(self.cudart, (err,), "cudaEventQuery")
        return True

    def elapsed_ms(self, end: Event) -> float:
        return float(check(self.cudart, self.cudart.cudaEventElapsedTime(self.event, end.event),
                           "cudaEventElapsedTime"))


class CudaPythonApi(Cuda):
    name = "cuda-python"

    def __init__(self):
        self.cudart = runtime_module()
        try:
            count = check(self.cudart, self.cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
        except CudaError as exc:
            raise CudaError(f"no usable CUDA GPU ({exc}): TensorRT engines are built and run on a GPU") from exc
        if count < 1:
            raise CudaError("no usable CUDA GPU (cudaGetDeviceCount found none)")
        check(self.cudart, self.cudart.cudaSetDevice(0), "cudaSetDevice")
        self._owned: list[tuple] = []  # (free function, handle): freed by close(), after TensorRT let go

    def _own(self, free, handle):
        self._owned.append((free, handle))
        return handle

    def device(self) -> dict[str, str]:
        props = check(self.cudart, self.cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        return {"gpu": name.rstrip("\0"), "compute_capability": f"{props.major}.{props.minor}"}

    def stream(self) -> Stream:
        stream = RuntimeStream(self.cudart)
        self._own(self.cudart.cudaStreamDestroy, stream.stream)
        return stream

    def host_empty(self, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = max(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, 1)
        ptr = self._own(self.cudart.cudaFreeHost,
                        check(self.cudart, self.cudart.cudaMallocHost(nbytes), "cudaMallocHost"))
        raw = (ctypes.c_uint8 * nbytes).from_address(int(ptr))
        view = np.frombuffer(raw, np.uint8)[: nbytes - (nbytes % dtype.itemsize)].view(dtype)
        return view[: int(np.prod(shape, dtype=np.int64))].reshape(shape)

    def device_empty(self, nbytes: int) -> DeviceBuffer:
        ptr = self._own(self.cudart.cudaFree, check(self.cudart, self.cudart.cudaMalloc(max(int(nbytes), 1)),
                                                    "cudaMalloc"))
        return DeviceBuffer(int(ptr), int(nbytes))

    def _copy(self, dst: int, src: int, nbytes: int, kind, stream: Stream) -> None:
        check(self.cudart, self.cudart.cudaMemcpyAsync(dst, src, nbytes, kind, stream.handle), "cudaMemcpyAsync")

    def h2d_async(self, dst: DeviceBuffer, src: np.ndarray, stream: Stream) -> None:
        self._copy(dst.ptr, src.ctypes.data, src.nbytes, self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream)

    def d2h_async(self, dst: np.ndarray, src: DeviceBuffer, stream: Stream) -> None:
        self._copy(dst.ctypes.data, src.ptr, dst.nbytes, self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream)

    def event(self, blocking: bool = True) -> Event:
        event = RuntimeEvent(self.cudart, blocking)
        self._own(self.cudart.cudaEventDestroy, event.event)
        return event

    def close(self) -> None:
        self.synchronize_device()
        while self._owned:
            free, handle = self._owned.pop()
            free(handle)

    def synchronize_device(self) -> None:
        check(self.cudart, self.cudart.cudaDeviceSynchronize(), "cudaDeviceSynchronize")
