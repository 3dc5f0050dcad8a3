"""The CUDA layer on torch.cuda: pinned tensors, torch streams, events and graphs, in torch's own context.

For users whose data already lives in torch: no second CUDA context next to torch's. Device buffers are uint8
tensors; TensorRT takes their data_ptr().
"""

from __future__ import annotations

import numpy as np

from harness.cuda import Cuda, CudaError, DeviceBuffer, Event, Graph, Stream, WrappedEvent


class TorchStream(Stream):
    def __init__(self, torch):
        self.torch = torch
        self.stream = torch.cuda.Stream()
        self.handle = int(self.stream.cuda_stream)
        self._capture = None

    def synchronize(self) -> None:
        self.stream.synchronize()

    def begin_capture(self) -> None:
        graph, context = self.torch.cuda.CUDAGraph(), self.torch.cuda.stream(self.stream)
        context.__enter__()
        try:
            graph.capture_begin(capture_error_mode="thread_local")
        except BaseException:
            context.__exit__(None, None, None)
            raise
        self._capture = (graph, context)

    def end_capture(self) -> Graph:
        graph, context = self._capture
        self._capture = None
        try:
            graph.capture_end()
        finally:
            context.__exit__(None, None, None)
        return TorchGraph(self.torch, graph)


class TorchGraph(Graph):
    def __init__(self, torch, graph):
        self.torch, self.graph = torch, graph

    def launch(self, stream: Stream) -> None:
        with self.torch.cuda.stream(stream.stream):
            self.graph.replay()


class TorchEvent(WrappedEvent):
    def __init__(self, torch, blocking: bool):
        self.event = torch.cuda.Event(enable_timing=True, blocking=blocking)

    def elapsed_ms(self, end: Event) -> float:
        return float(self.event.elapsed_time(end.event))


class TorchApi(Cuda):
    name = "torch"

    def __init__(self):
        import torch

        if not torch.cuda.is_available():
            raise CudaError(f"no usable CUDA GPU (torch {torch.__version__} sees none): --cuda-binding torch needs a "
                            "CUDA build of torch and an NVIDIA GPU (or pip install -e '.[gpu]' for cuda-python)")
        self.torch = torch
        torch.cuda.set_device(0)

    def device(self) -> dict[str, str]:
        major, minor = self.torch.cuda.get_device_capability(0)
        return {"gpu": self.torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}

    def stream(self) -> Stream:
        return TorchStream(self.torch)

    def host_empty(self, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        pinned = self.torch.empty(max(count * dtype.itemsize, 1), dtype=self.torch.uint8, pin_memory=True)
        return pinned.numpy()[: count * dtype.itemsize].view(dtype).reshape(shape)  # the array keeps it alive

    def device_empty(self, nbytes: int) -> DeviceBuffer:
        tensor = self.torch.empty(max(int(nbytes), 1), dtype=self.torch.uint8, device="cuda")
        return DeviceBuffer(int(tensor.data_ptr()), int(nbytes), tensor)

    def _bytes(self, array: np.ndarray):
        return self.torch.from_numpy(np.ascontiguousarray(array).reshape(-1).view(np.uint8))

    def h2d_async(self, dst: DeviceBuffer, src: np.ndarray, stream: Stream) -> None:
        with self.torch.cuda.stream(stream.stream):
            dst.owner[: src.nbytes].copy_(self._bytes(src), non_blocking=True)

    def d2h_async(self, dst: np.ndarray, src: DeviceBuffer, stream: Stream) -> None:
        with self.torch.cuda.stream(stream.stream):
            self._bytes(dst).copy_(src.owner[: dst.nbytes], non_blocking=True)

    def event(self, blocking: bool = True) -> Event:
        return TorchEvent(self.torch, blocking)
