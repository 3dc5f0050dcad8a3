"""Run a TensorRT engine with pycuda: page-locked host buffers, device buffers, one non-default stream.

I/O is by tensor name (num_io_tensors / get_tensor_name / get_tensor_mode, set_input_shape,
set_tensor_address) and execution is execute_async_v3 on the runner's own stream, the TensorRT 10/11 API.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.backends.base import Runner, Timing
from harness.backends.tensorrt import cuda_device, gpu_modules
from harness.backends.tensorrt.timing import Query, trtexec_timing
from harness.errors import HarnessError


@dataclass
class Buffers:
    """Host (page-locked) and device memory for every I/O tensor at one input shape."""

    shape: tuple[int, ...]
    host: dict[str, np.ndarray]
    device: dict[str, object]


class TensorRTRunner(Runner):
    cv_warn = 0.025  # trtexec warns above 2.5 %: GPU timings are steadier than host ones

    def __init__(self, artifact: Path):
        self.trt, self.cuda = gpu_modules()
        # TensorRT uses the runtime API, which works in the device's primary context: share it.
        self.ctx = cuda_device(self.cuda).retain_primary_context()
        self.ctx.push()
        try:
            self._open(artifact)
        except BaseException:
            self.close()
            raise

    def _open(self, artifact: Path) -> None:
        trt = self.trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(artifact).read_bytes())
        if self.engine is None:
            raise HarnessError(f"engine {artifact}: TensorRT {trt.__version__} cannot deserialize it (built by "
                               "another TensorRT version or GPU?); rebuild with harness build-engine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(self.inputs) != 1 or not self.outputs:
            raise HarnessError(f"engine {artifact}: expected one input and at least one output, found inputs "
                               f"{self.inputs} and outputs {self.outputs}")
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.stream = self.cuda.Stream()
        self.buffers: Buffers | None = None

    @property
    def input_name(self) -> str:
        return self.inputs[0]

    def _bind(self, shape: tuple[int, ...]) -> Buffers:
        """Set the input shape and give every I/O tensor an address; reuse the buffers while the shape holds."""
        if self.buffers is not None and self.buffers.shape == shape:
            return self.buffers
        if not self.context.set_input_shape(self.input_name, shape):
            lo, _, hi = self.engine.get_tensor_profile_shape(self.input_name, 0)
            raise HarnessError(f"input shape {'x'.join(map(str, shape))} is outside the engine's profile "
                               f"{tuple(lo)}..{tuple(hi)}; rebuild with --max-batch")
        host, device = {}, {}
        for name in (*self.inputs, *self.outputs):
            dims = tuple(self.context.get_tensor_shape(name))
            host[name] = self.cuda.pagelocked_empty(dims, self.dtypes[name])
            device[name] = self.cuda.mem_alloc(max(host[name].nbytes, 1))
            self.context.set_tensor_address(name, int(device[name]))
        self.buffers = Buffers(shape, host, device)
        return self.buffers

    def _query(self, x: np.ndarray, transfers: bool = True) -> Query:
        buf = self._bind(tuple(x.shape))
        np.copyto(buf.host[self.input_name], x, casting="same_kind")
        cuda, stream = self.cuda, self.stream

        def h2d():
            cuda.memcpy_htod_async(buf.device[self.input_name], buf.host[self.input_name], stream)

        def d2h():
            for name in self.outputs:
                cuda.memcpy_dtoh_async(buf.host[name], buf.device[name], stream)

        def enqueue():
            if not self.context.execute_async_v3(stream.handle):
                raise HarnessError("TensorRT execute_async_v3 failed; its log above says why")

        return Query(stream, enqueue, h2d if transfers else None, d2h if transfers else None, len(x))

    def infer(self, x: np.ndarray) -> np.ndarray:
        q = self._query(x)
        q.h2d()
        q.enqueue()
        q.d2h()
        self.stream.synchronize()
        return self.buffers.host[self.outputs[0]].astype(np.float32, copy=True)

    def infer_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self.infer(x)
        return {name: self.buffers.host[name].astype(np.float32, copy=True) for name in self.outputs}

    def _graph(self, enqueue):
        """Capture one enqueue in a CUDA graph after a plain one (keeps lazy initialisation out of the capture).

        Returns (launch, "captured") or (enqueue, reason) when capture is not possible, as trtexec falls back.
        """
        enqueue()
        self.stream.synchronize()
        try:
            self.stream.begin_capture()
            try:
                enqueue()
            finally:
                graph = self.stream.end_capture()
            instance = graph.instantiate()
            instance.launch(self.stream)  # one trial replay, so a failure shows here and not mid-measurement
            self.stream.synchronize()
        except Exception as exc:  # the driver, TensorRT or pycuda may refuse; the fallback is reported, not hidden
            self.stream.synchronize()
            return enqueue, (str(exc).splitlines() or [type(exc).__name__])[0]
        return (lambda: instance.launch(self.stream)), "captured"

    def time(self, x: np.ndarray, warmup_s: float, iterations: int, duration_s: float, cuda_graph: bool = False,
             no_data_transfers: bool = False, spin_wait: bool = False, **opts) -> Timing:
        q = self._query(x, transfers=not no_data_transfers)
        if no_data_transfers:  # the input is copied once, then stays on the GPU
            self.cuda.memcpy_htod(self.buffers.device[self.input_name], self.buffers.host[self.input_name])
        graph = ""
        if cuda_graph:
            q.enqueue, graph = self._graph(q.enqueue)
        return trtexec_timing(self.cuda, q, warmup_s, iterations, duration_s, graph, spin_wait)

    def engine_information(self) -> dict:
        """The engine inspector's JSON (DETAILED when built by harness), with this context's shapes."""
        self._bind(tuple(self.engine.get_tensor_profile_shape(self.input_name, 0)[1]))
        inspector = self.engine.create_engine_inspector()
        inspector.execution_context = self.context
        return json.loads(inspector.get_engine_information(self.trt.LayerInformationFormat.JSON))

    def close(self) -> None:
        if getattr(self, "ctx", None) is None:
            return
        self.buffers = None
        for name in ("context", "engine", "runtime", "stream"):
            self.__dict__.pop(name, None)
        self.ctx.pop()
        self.ctx.detach()
        self.ctx = None
