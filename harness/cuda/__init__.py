"""One small CUDA interface for the TensorRT runner and its timing loop, with three providers.

The runner needs device and page-locked host buffers, async copies, a stream, events and CUDA-graph capture;
everything else stays out, so the timing loop, the graph capture and the copies are written once:

- `cuda-python` (NVIDIA's `cuda-bindings`, runtime API): wheels, no compiler; what TensorRT's samples use;
- `pycuda`: needs a CUDA toolkit to install; it binds no stream capture, so graphs go through cuda-python;
- `torch`: torch.cuda streams, events, pinned tensors and graphs, in torch's own CUDA context.

`auto` takes pycuda when it is installed, then cuda-python, then torch (a CUDA build).
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from harness.errors import HarnessError

BINDINGS = ("auto", "cuda-python", "pycuda", "torch")
_PROVIDERS = {"pycuda": "harness.cuda.pycuda_api:PycudaApi", "cuda-python": "harness.cuda.cuda_python:CudaPythonApi",
              "torch": "harness.cuda.torch_api:TorchApi"}
_MODULES = {"pycuda": "pycuda", "cuda-python": "cuda.bindings", "torch": "torch"}


class CudaError(HarnessError):
    """A CUDA call failed; the message names the call and CUDA's error name."""


@dataclass
class DeviceBuffer:
    ptr: int
    nbytes: int
    owner: object = None  # what keeps the memory alive (pycuda allocation, torch tensor) or the provider's handle


class Event(ABC):
    @abstractmethod
    def record(self, stream: Stream) -> None: ...

    @abstractmethod
    def synchronize(self) -> None: ...

    @abstractmethod
    def query(self) -> bool:
        """True once the work recorded before this event has finished (no blocking)."""

    @abstractmethod
    def elapsed_ms(self, end: Event) -> float:
        """GPU time from this event to `end`."""


class WrappedEvent(Event):
    """An event object of a library that has record(its stream), synchronize() and query() (pycuda, torch); the
    wrapped stream is `stream.stream`."""

    event: object

    def record(self, stream: Stream) -> None:
        self.event.record(stream.stream)

    def synchronize(self) -> None:
        self.event.synchronize()

    def query(self) -> bool:
        return bool(self.event.query())


class Graph(ABC):
    @abstractmethod
    def launch(self, stream: Stream) -> None: ...


class Stream(ABC):
    handle: int  # what execute_async_v3 takes

    @abstractmethod
    def synchronize(self) -> None: ...

    @abstractmethod
    def begin_capture(self) -> None:
        """Start recording this stream's work into a graph (thread-local mode, as trtexec)."""

    @abstractmethod
    def end_capture(self) -> Graph:
        """Stop recording; the instantiated graph, ready to launch."""


class Cuda(ABC):
    name: str = ""

    @abstractmethod
    def device(self) -> dict[str, str]:
        """The GPU's name and compute capability (an engine is tied to both)."""

    @abstractmethod
    def stream(self) -> Stream: ...

    @abstractmethod
    def host_empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        """A page-locked host array (async copies need page-locked memory)."""

    @abstractmethod
    def device_empty(self, nbytes: int) -> DeviceBuffer: ...

    @abstractmethod
    def h2d_async(self, dst: DeviceBuffer, src: np.ndarray, stream: Stream) -> None: ...

    @abstractmethod
    def d2h_async(self, dst: np.ndarray, src: DeviceBuffer, stream: Stream) -> None: ...

    def h2d(self, dst: DeviceBuffer, src: np.ndarray, stream: Stream) -> None:
        self.h2d_async(dst, src, stream)
        stream.synchronize()

    @abstractmethod
    def event(self, blocking: bool = True) -> Event:
        """A timing event; `blocking` waits by yielding the CPU, otherwise the caller spins on query()."""

    def close(self) -> None:  # noqa: B027 - most providers hold nothing to release
        """Release what the provider holds (pycuda: its context)."""

    @contextmanager
    def current(self) -> Iterator[None]:
        """Make the provider's CUDA context current in the calling thread for the block (serving threads). The
        runtime API and torch use the device's primary context in every thread, so only pycuda pushes one."""
        yield


def installed(binding: str) -> bool:
    try:
        return importlib.util.find_spec(_MODULES[binding]) is not None
    except (ImportError, ValueError):  # a parent package that is absent, or a module put in sys.modules as None
        return False


def resolve_binding(binding: str = "auto") -> str:
    """The provider `binding` names; `auto`: pycuda if installed, then cuda-python, then torch."""
    if binding not in BINDINGS:
        raise HarnessError(f"--cuda-binding {binding!r}: choose one of {', '.join(BINDINGS)}")
    if binding != "auto":
        return binding
    return next((b for b in ("pycuda", "cuda-python") if installed(b)), "torch")


def open_cuda(binding: str = "auto") -> Cuda:
    """The provider, started on GPU 0, or a one-line error naming what to install."""
    module, _, cls = _PROVIDERS[resolve_binding(binding)].partition(":")
    return getattr(importlib.import_module(module), cls)()
