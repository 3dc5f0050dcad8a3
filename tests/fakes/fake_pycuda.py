"""A test double of the pycuda API the TensorRT runner uses (pycuda.driver), over a simulated GPU.

Faithful to pycuda's surface: init/Device/retain_primary_context, Stream(.handle, begin_capture, end_capture),
Graph.instantiate -> GraphExec.launch(stream), Event(flags).record/synchronize/query/time_till/time_since,
event_flags, pagelocked_empty, mem_alloc (int() is the device address), memcpy_htod(_async)/memcpy_dtoh_async
(async copies refuse memory that is not page-locked), Error/LogicError. Work runs eagerly and advances a
device clock by a fixed cost per operation, so event timings are exact and testable.
"""

from __future__ import annotations

import importlib.machinery
import itertools
import types

import numpy as np


class FakeGpu:
    """State shared by the pycuda and tensorrt doubles: memory, streams, the device clock and a call log."""

    def __init__(self, name="NVIDIA H100 80GB HBM3", capability=(9, 0), compute_ms=(1.0,), copy_ms=0.1):
        self.name, self.capability = name, capability
        self.present = True
        self.memory: dict[int, np.ndarray] = {}
        self.streams: dict[int, object] = {}
        self.clock = 0.0
        self.compute_ms = itertools.cycle(compute_ms)
        self.copy_ms = float(copy_ms)
        self.capture_fails = False
        self.calls: list[tuple] = []
        self._addresses = itertools.count(0x7F0000000000, 0x100000)
        self._handles = itertools.count(0x5555_0000, 0x10)

    def log(self, *call):
        self.calls.append(call)

    def count(self, name: str) -> int:
        return sum(1 for c in self.calls if c[0] == name)

    def run(self, handle: int, op, cost_ms) -> None:
        """Execute `op` on a stream now, or record it if that stream is capturing a graph.

        `cost_ms` is a number or an iterator of numbers, drawn when the work runs (so graph replays vary too).
        """
        stream = self.streams.get(handle)
        if stream is not None and stream.graph is not None:
            stream.graph.append((op, cost_ms))
            return
        op()
        self.clock += cost_ms if isinstance(cost_ms, float) else next(cost_ms)


def make_driver(gpu: FakeGpu) -> types.ModuleType:
    drv = types.ModuleType("pycuda.driver")
    drv.__spec__ = importlib.machinery.ModuleSpec("pycuda.driver", None)

    class Error(Exception):
        pass

    class LogicError(Error):
        pass

    class event_flags:  # noqa: N801 - pycuda's spelling
        DEFAULT, BLOCKING_SYNC, DISABLE_TIMING, INTERPROCESS = 0, 1, 2, 4

    def init(flags=0):
        gpu.log("init")
        if not gpu.present:
            raise Error("cuInit failed: no CUDA-capable device is detected")

    class Context:
        @staticmethod
        def synchronize():
            gpu.log("ctx.synchronize")

        def push(self):
            gpu.log("ctx.push")

        def pop(self):
            gpu.log("ctx.pop")

        def detach(self):
            gpu.log("ctx.detach")

    class Device:
        def __init__(self, number):
            if not gpu.present or number != 0:
                raise LogicError("cuDeviceGet failed: invalid device ordinal")

        @staticmethod
        def count():
            return 1 if gpu.present else 0

        def name(self):
            return gpu.name

        def compute_capability(self):
            return gpu.capability

        def retain_primary_context(self):
            return Context()

    class DeviceAllocation:
        def __init__(self, nbytes):
            self.address = next(gpu._addresses)
            gpu.memory[self.address] = np.zeros(nbytes, np.uint8)

        def __int__(self):
            return self.address

        def free(self):
            gpu.memory.pop(self.address, None)

    class PagelockedArray(np.ndarray):
        pass

    def pagelocked_empty(shape, dtype, order="C", mem_flags=0):
        return np.empty(shape, dtype, order).view(PagelockedArray)

    def mem_alloc(nbytes):
        return DeviceAllocation(int(nbytes))

    def _device(ptr) -> np.ndarray:
        return gpu.memory[int(ptr)]

    def _handle(stream) -> int:
        return 0 if stream is None else stream.handle

    def memcpy_htod(dest, src):
        raw = np.ascontiguousarray(src).view(np.uint8).ravel()
        _device(dest)[: raw.size] = raw
        gpu.log("memcpy_htod", int(dest))

    def memcpy_htod_async(dest, src, stream=None):
        if not isinstance(src, PagelockedArray):
            raise LogicError("memcpy_htod_async: src must be page-locked memory")
        raw = src.view(np.uint8).ravel()
        gpu.log("memcpy_htod_async", int(dest), _handle(stream))
        gpu.run(_handle(stream), lambda: _device(dest).__setitem__(slice(0, raw.size), raw), gpu.copy_ms)

    def memcpy_dtoh(dest, src):
        flat = dest.view(np.uint8).reshape(-1)
        flat[:] = _device(src)[: flat.size]
        gpu.log("memcpy_dtoh", int(src))

    def memcpy_dtoh_async(dest, src, stream=None):
        if not isinstance(dest, PagelockedArray):
            raise LogicError("memcpy_dtoh_async: dest must be page-locked memory")
        flat = dest.view(np.uint8).reshape(-1)
        gpu.log("memcpy_dtoh_async", int(src), _handle(stream))
        gpu.run(_handle(stream), lambda: flat.__setitem__(slice(None), _device(src)[: flat.size]), gpu.copy_ms)

    class GraphExec:
        def __init__(self, ops):
            self.ops = ops

        def launch(self, stream=None):
            gpu.log("graph.launch", _handle(stream))
            for op, cost in self.ops:
                gpu.run(_handle(stream), op, cost)

    class Graph:
        def __init__(self, ops):
            self.ops = ops

        def instantiate(self):
            return GraphExec(self.ops)

    class Stream:
        def __init__(self, flags=0):
            self.handle = next(gpu._handles)
            self.graph = None
            gpu.streams[self.handle] = self

        def synchronize(self):
            gpu.log("stream.synchronize", self.handle)

        def is_done(self):
            return True

        def begin_capture(self, capture_mode=0):
            if self.graph is not None:
                raise LogicError("cuStreamBeginCapture failed: stream is already capturing")
            gpu.log("begin_capture", self.handle)
            self.graph = []

        def end_capture(self):
            ops, self.graph = self.graph, None
            gpu.log("end_capture", self.handle)
            if gpu.capture_fails:
                raise LogicError("cuStreamEndCapture failed: operation not permitted when stream is capturing")
            return Graph(ops)

    class Event:
        def __init__(self, flags=0):
            self.flags = flags
            self.time = None
            self.polls = 0
            gpu.log("Event", flags)

        def record(self, stream=None):
            self.time = gpu.clock
            self.polls = 0
            return self

        def synchronize(self):
            gpu.log("event.synchronize")
            return self

        def query(self):
            self.polls += 1  # not reached on the first poll, reached on the second: a spin loop must retry
            gpu.log("event.query")
            return self.polls > 1

        def time_till(self, other):
            return other.time - self.time

        def time_since(self, other):
            return self.time - other.time

    for name, value in dict(locals()).items():
        if name not in ("drv", "gpu"):
            setattr(drv, name, value)
    return drv


def make_pycuda(gpu: FakeGpu) -> tuple[types.ModuleType, types.ModuleType]:
    """The `pycuda` package and its `pycuda.driver` module, ready for sys.modules."""
    package = types.ModuleType("pycuda")
    package.__path__ = []
    package.__spec__ = importlib.machinery.ModuleSpec("pycuda", None, is_package=True)
    package.VERSION = (2025, 1)
    package.driver = make_driver(gpu)
    return package, package.driver
