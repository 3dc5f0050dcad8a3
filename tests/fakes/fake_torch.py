"""A test double of the torch.cuda surface harness.cuda's torch provider uses, over FakeGpu.

Faithful where the provider relies on it (names checked against the real torch by tests/test_conformance.py):
torch.empty(n, dtype=torch.uint8, pin_memory=True | device="cuda"), Tensor.numpy/data_ptr/copy_(non_blocking)/
slicing, torch.from_numpy, torch.cuda.Stream(.cuda_stream, synchronize), torch.cuda.stream(s) as the current
stream, torch.cuda.Event(enable_timing, blocking) record/synchronize/query/elapsed_time, torch.cuda.CUDAGraph
capture_begin(capture_error_mode)/capture_end/replay on the current stream. A non-blocking copy from memory
that is not pinned is refused (real torch would silently make it synchronous, which would skew the timing).
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import types

import numpy as np

from fakes.fake_pycuda import FakeGpu


def make_torch(gpu: FakeGpu) -> dict[str, types.ModuleType]:
    """sys.modules entries `torch` and `torch.cuda`."""
    torch = types.ModuleType("torch")
    torch.__spec__ = importlib.machinery.ModuleSpec("torch", None, is_package=True)
    torch.__path__, torch.__version__, torch.uint8 = [], "2.14.1+fake", "torch.uint8"  # a dtype token
    cuda = types.ModuleType("torch.cuda")
    cuda.__spec__ = importlib.machinery.ModuleSpec("torch.cuda", None)
    torch.cuda = cuda
    pinned: dict[int, np.ndarray] = {}
    current = [0]  # the current stream's handle (0: the default stream)

    def _is_pinned(array: np.ndarray) -> bool:
        start = array.__array_interface__["data"][0]
        return any(a <= start and start + array.nbytes <= a + b.nbytes for a, b in pinned.items())

    class Tensor:
        def __init__(self, array=None, address=None, size=0):
            self._array, self._address, self._size = array, address, size

        def numpy(self):
            if self._array is None:
                raise TypeError("can't convert cuda:0 device type tensor to numpy")
            return self._array

        def data_ptr(self):
            return self._address if self._array is None else self._array.__array_interface__["data"][0]

        def __getitem__(self, index: slice):
            if self._array is not None:
                return Tensor(self._array[index])
            return Tensor(address=self._address, size=len(range(*index.indices(self._size))))

        def is_pinned(self):
            return self._array is not None and _is_pinned(self._array)

        def copy_(self, src, non_blocking=False):
            handle = current[0]
            if self._array is None and src._array is not None:  # H2D
                if non_blocking and not src.is_pinned():
                    raise RuntimeError("fake torch: non-blocking copy from pageable memory")
                data, address = src._array, self._address
                gpu.log("htod", handle)
                gpu.run(handle, lambda: gpu.memory[address].__setitem__(slice(0, data.size), data), gpu.copy_ms)
            elif self._array is not None and src._array is None:  # D2H
                if non_blocking and not self.is_pinned():
                    raise RuntimeError("fake torch: non-blocking copy to pageable memory")
                out, address = self._array, src._address
                gpu.log("dtoh", handle)
                gpu.run(handle, lambda: out.__setitem__(slice(None), gpu.memory[address][: out.size]), gpu.copy_ms)
            else:
                raise NotImplementedError("the double copies between host and device only")
            return self

    def empty(size, dtype=None, device=None, pin_memory=False):
        if device == "cuda":
            return Tensor(address=gpu.alloc(size), size=size)
        array = np.empty(size, np.uint8)
        if pin_memory:
            pinned[array.__array_interface__["data"][0]] = array
        return Tensor(array)

    def from_numpy(array):
        return Tensor(array)

    torch.Tensor, torch.empty, torch.from_numpy = Tensor, empty, from_numpy

    class Stream:
        def __init__(self, device=None, priority=0):
            self.cuda_stream = gpu.new_stream()

        def synchronize(self):
            gpu.log("stream.synchronize", self.cuda_stream)

    @contextlib.contextmanager
    def stream(s):
        before, current[0] = current[0], s.cuda_stream
        try:
            yield
        finally:
            current[0] = before

    class Event:
        def __init__(self, enable_timing=False, blocking=False, interprocess=False):
            self._time, self._polls = None, 0
            gpu.log("Event", 1 if blocking else 0)

        def record(self, stream=None):
            self._time, self._polls = gpu.clock, 0

        def synchronize(self):
            gpu.log("event.synchronize")

        def query(self):
            self._polls += 1  # not done on the first poll: a spin loop must retry
            gpu.log("event.query")
            return self._polls > 1

        def elapsed_time(self, end_event):
            return end_event._time - self._time

    class CUDAGraph:
        def __init__(self):
            self._ops, self._handle = None, None

        def capture_begin(self, pool=None, capture_error_mode="global"):
            if current[0] == 0:
                raise RuntimeError("CUDA graphs must be captured on a non-default stream.")
            self._handle = current[0]
            gpu.begin_capture(self._handle)

        def capture_end(self):
            ops = gpu.end_capture(self._handle)
            if gpu.capture_fails:
                raise RuntimeError("CUDA error: operation failed due to a previous error during capture")
            self._ops = ops

        def replay(self):
            gpu.launch(self._ops, current[0])

    cuda.is_available = lambda: gpu.present
    cuda.set_device = lambda device: None
    cuda.get_device_name = lambda device=None: gpu.name
    cuda.get_device_capability = lambda device=None: gpu.capability
    cuda.Stream, cuda.stream, cuda.Event, cuda.CUDAGraph = Stream, stream, Event, CUDAGraph
    return {"torch": torch, "torch.cuda": cuda}
