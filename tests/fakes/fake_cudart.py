"""A test double of cuda-python's runtime API (`cuda.bindings.runtime`) as harness.cuda uses it, over FakeGpu.

Faithful to the real module (its names are checked against the installed cuda-bindings by
tests/test_conformance.py): every call returns a tuple whose first item is a cudaError_t; handles are ints;
host memory from cudaMallocHost is real memory at a real address (the provider wraps it in numpy), so copies
move real bytes; events measure FakeGpu's device clock; stream capture records work and a graph launch
replays it. `gpu.capture_fails` makes cudaStreamEndCapture fail as the driver does.
"""

from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import itertools
import types

import numpy as np

from fakes.fake_pycuda import FakeGpu


class cudaError_t(enum.IntEnum):  # noqa: N801 - cuda-python's spelling
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorNoDevice = 100
    cudaErrorNotReady = 600
    cudaErrorStreamCaptureUnsupported = 900
    cudaErrorStreamCaptureInvalidated = 901


class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


class cudaStreamCaptureMode(enum.IntEnum):  # noqa: N801
    cudaStreamCaptureModeGlobal = 0
    cudaStreamCaptureModeThreadLocal = 1
    cudaStreamCaptureModeRelaxed = 2


class cudaDeviceProp:  # noqa: N801
    def __init__(self, name: str, major: int, minor: int):
        self.name, self.major, self.minor = name.encode(), major, minor


def make_cudart(gpu: FakeGpu) -> types.ModuleType:
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.__spec__ = importlib.machinery.ModuleSpec("cuda.bindings.runtime", None)
    ok = cudaError_t.cudaSuccess
    host: dict[int, np.ndarray] = {}
    events: dict[int, dict] = {}
    graphs: dict[int, list] = {}
    handles = itertools.count(0x6000_0000, 0x10)

    def cudaGetErrorName(error):  # noqa: N802
        return ok, cudaError_t(error).name.encode()

    def cudaGetDeviceCount():  # noqa: N802
        return (ok, 1) if gpu.present else (cudaError_t.cudaErrorNoDevice, None)

    def cudaSetDevice(device):  # noqa: N802
        return (ok,) if gpu.present and device == 0 else (cudaError_t.cudaErrorNoDevice,)

    def cudaGetDeviceProperties(device):  # noqa: N802
        return ok, cudaDeviceProp(gpu.name, *gpu.capability)

    def cudaStreamCreateWithFlags(flags):  # noqa: N802
        return ok, gpu.new_stream()

    def cudaStreamSynchronize(stream):  # noqa: N802
        gpu.log("stream.synchronize", int(stream))
        return (ok,)

    def cudaStreamDestroy(stream):  # noqa: N802
        gpu.streams.pop(int(stream), None)
        return (ok,)

    def cudaDeviceSynchronize():  # noqa: N802
        gpu.log("device.synchronize")
        return (ok,)

    def cudaMallocHost(size):  # noqa: N802
        buf = np.zeros(size, np.uint8)
        host[buf.ctypes.data] = buf
        return ok, buf.ctypes.data

    def cudaFreeHost(ptr):  # noqa: N802
        host.pop(int(ptr), None)
        return (ok,)

    def cudaMalloc(size):  # noqa: N802
        return ok, gpu.alloc(size)

    def cudaFree(ptr):  # noqa: N802
        gpu.memory.pop(int(ptr), None)
        return (ok,)

    def _pinned(address: int, count: int) -> bool:
        return any(a <= address and address + count <= a + b.size for a, b in host.items())

    def cudaMemcpyAsync(dst, src, count, kind, stream):  # noqa: N802
        dst, src, handle = int(dst), int(src), int(stream)
        def htod():
            gpu.memory[dst][:count] = np.frombuffer(ctypes.string_at(src, count), np.uint8)

        def dtoh():
            ctypes.memmove(dst, gpu.memory[src].ctypes.data, count)

        if kind == cudaMemcpyKind.cudaMemcpyHostToDevice and _pinned(src, count):
            gpu.log("htod", handle)
            op = htod
        elif kind == cudaMemcpyKind.cudaMemcpyDeviceToHost and _pinned(dst, count):
            gpu.log("dtoh", handle)
            op = dtoh
        else:  # pageable memory would make the copy synchronous; the provider must never do that
            return (cudaError_t.cudaErrorInvalidValue,)
        gpu.run(handle, op, gpu.copy_ms)
        return (ok,)

    def cudaEventCreateWithFlags(flags):  # noqa: N802
        handle = next(handles)
        events[handle] = {"time": None, "polls": 0}
        gpu.log("Event", int(flags))
        return ok, handle

    def cudaEventDestroy(event):  # noqa: N802
        events.pop(int(event), None)
        return (ok,)

    def cudaEventRecord(event, stream):  # noqa: N802
        events[int(event)].update(time=gpu.clock, polls=0)
        return (ok,)

    def cudaEventSynchronize(event):  # noqa: N802
        gpu.log("event.synchronize")
        return (ok,)

    def cudaEventQuery(event):  # noqa: N802
        e = events[int(event)]
        e["polls"] += 1  # not done on the first poll: a spin loop must retry
        gpu.log("event.query")
        return (ok,) if e["polls"] > 1 else (cudaError_t.cudaErrorNotReady,)

    def cudaEventElapsedTime(start, end):  # noqa: N802
        return ok, events[int(end)]["time"] - events[int(start)]["time"]

    def cudaStreamBeginCapture(stream, mode):  # noqa: N802
        gpu.begin_capture(int(stream))
        return (ok,)

    def cudaStreamEndCapture(stream):  # noqa: N802
        ops = gpu.end_capture(int(stream))
        if gpu.capture_fails:
            return cudaError_t.cudaErrorStreamCaptureInvalidated, None
        handle = next(handles)
        graphs[handle] = ops
        return ok, handle

    def cudaGraphInstantiate(graph, flags):  # noqa: N802
        handle = next(handles)
        graphs[handle] = graphs[int(graph)]
        return ok, handle

    def cudaGraphLaunch(graphExec, stream):  # noqa: N802, N803
        gpu.launch(graphs[int(graphExec)], int(stream))
        return (ok,)

    def cudaGraphDestroy(graph):  # noqa: N802
        graphs.pop(int(graph), None)
        return (ok,)

    for name, value in dict(locals()).items():
        if name.startswith("cuda"):
            setattr(rt, name, value)
    rt.cudaError_t, rt.cudaMemcpyKind, rt.cudaStreamCaptureMode = cudaError_t, cudaMemcpyKind, cudaStreamCaptureMode
    rt.cudaDeviceProp = cudaDeviceProp
    rt.cudaEventDefault, rt.cudaEventBlockingSync, rt.cudaStreamNonBlocking = 0, 1, 1
    return rt


def make_cuda_python(gpu: FakeGpu) -> dict[str, types.ModuleType]:
    """sys.modules entries for `from cuda.bindings import runtime`."""
    runtime = make_cudart(gpu)
    bindings = types.ModuleType("cuda.bindings")
    bindings.__path__, bindings.__version__ = [], "13.0.0"
    bindings.__spec__ = importlib.machinery.ModuleSpec("cuda.bindings", None, is_package=True)
    bindings.runtime = runtime
    cuda = types.ModuleType("cuda")
    cuda.__path__, cuda.bindings = [], bindings
    cuda.__spec__ = importlib.machinery.ModuleSpec("cuda", None, is_package=True)
    return {"cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.runtime": runtime}
