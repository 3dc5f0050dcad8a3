"""A test double of the pycuda API the TensorRT runner uses (pycuda.driver), over a simulated GPU.

Faithful to pycuda's surface (checked against its wrapper source by tests/test_conformance.py):
init/Device/retain_primary_context, Stream(.handle, synchronize), Event(flags).record/synchronize/query/
time_till/time_since, event_flags, pagelocked_empty, mem_alloc (int() is the device address),
memcpy_htod(_async)/memcpy_dtoh_async (async copies refuse memory that is not page-locked), Error/LogicError.
pycuda binds no stream capture, so neither does this double. FakeGpu is the simulated device all the doubles
share (the cuda-python one captures graphs on any of its streams): work runs eagerly and advances a device
clock by a fixed cost per operation, so event timings are exact and testable. Copies log ("htod"/"dtoh",
stream handle) whichever binding made them.
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
        self.layer_trace: dict[str, tuple[float, ...]] = {}  # layer name -> ms the profiler reports, cycled
        self._layer_cycles: dict[str, object] = {}
        self.calls: list[tuple] = []
        self._addresses = itertools.count(0x7F0000000000, 0x100000)
        self._handles = itertools.count(0x5555_0000, 0x10)

    def layer_ms(self, name: str):
        """The iterator of profiler times of one layer (0.1 ms when the trace does not name it)."""
        if name not in self._layer_cycles:
            self._layer_cycles[name] = itertools.cycle(self.layer_trace.get(name, (0.1,)))
        return self._layer_cycles[name]

    def alloc(self, nbytes: int) -> int:
        address = next(self._addresses)
        self.memory[address] = np.zeros(nbytes, np.uint8)
        return address

    def new_stream(self) -> int:
        handle = next(self._handles)
        self.streams[handle] = types.SimpleNamespace(graph=None)
        return handle

    def begin_capture(self, handle: int) -> None:
        self.log("begin_capture", handle)
        self.streams[handle].graph = []

    def end_capture(self, handle: int) -> list:
        ops, self.streams[handle].graph = self.streams[handle].graph, None
        self.log("end_capture", handle)
        return ops

    def launch(self, ops: list, handle: int) -> None:
        self.log("graph.launch", handle)
        for op, cost in ops:
            self.run(handle, op, cost)

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
            self._address = gpu.alloc(nbytes)

        def __int__(self):
            return self._address

        def free(self):
            gpu.memory.pop(self._address, None)

    class _PagelockedArray(np.ndarray):
        pass

    def pagelocked_empty(shape, dtype, order="C", mem_flags=0):
        return np.empty(shape, dtype, order).view(_PagelockedArray)

    def mem_alloc(nbytes):
        return DeviceAllocation(int(nbytes))

    def _device(ptr) -> np.ndarray:
        return gpu.memory[int(ptr)]

    def _handle(stream) -> int:
        return 0 if stream is None else stream.handle

    def memcpy_htod(dest, src):
        raw = np.ascontiguousarray(src).view(np.uint8).ravel()
        _device(dest)[: raw.size] = raw
        gpu.log("htod", 0)

    def memcpy_htod_async(dest, src, stream=None):
        if not isinstance(src, _PagelockedArray):
            raise LogicError("memcpy_htod_async: src must be page-locked memory")
        raw = src.view(np.uint8).ravel()
        gpu.log("htod", _handle(stream))
        gpu.run(_handle(stream), lambda: _device(dest).__setitem__(slice(0, raw.size), raw), gpu.copy_ms)

    def memcpy_dtoh(dest, src):
        flat = dest.view(np.uint8).reshape(-1)
        flat[:] = _device(src)[: flat.size]
        gpu.log("memcpy_dtoh", int(src))

    def memcpy_dtoh_async(dest, src, stream=None):
        if not isinstance(dest, _PagelockedArray):
            raise LogicError("memcpy_dtoh_async: dest must be page-locked memory")
        flat = dest.view(np.uint8).reshape(-1)
        gpu.log("dtoh", _handle(stream))
        gpu.run(_handle(stream), lambda: flat.__setitem__(slice(None), _device(src)[: flat.size]), gpu.copy_ms)

    class Stream:
        def __init__(self, flags=0):
            self.handle = gpu.new_stream()

        def synchronize(self):
            gpu.log("stream.synchronize", self.handle)

        def is_done(self):
            return True

    class Event:
        def __init__(self, flags=0):
            self._time = None
            self._polls = 0
            gpu.log("Event", flags)

        def record(self, stream=None):
            self._time = gpu.clock
            self._polls = 0
            return self

        def synchronize(self):
            gpu.log("event.synchronize")
            return self

        def query(self):
            self._polls += 1  # not reached on the first poll, reached on the second: a spin loop must retry
            gpu.log("event.query")
            return self._polls > 1

        def time_till(self, other):
            return other._time - self._time

        def time_since(self, other):
            return self._time - other._time

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
