"""Run a TensorRT engine through harness.cuda: page-locked host buffers, device buffers, one non-default stream.

I/O is by tensor name (num_io_tensors / get_tensor_name / get_tensor_mode, set_input_shape,
set_tensor_address) and execution is execute_async_v3 on the runner's own stream, the TensorRT 10/11 API.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.backends.base import Runner, Timing
from harness.backends.tensorrt.timing import Query, convention, defaults, trtexec_timing
from harness.cuda import Cuda, DeviceBuffer, Stream
from harness.errors import HarnessError


@dataclass
class Buffers:
    """Host (page-locked) and device memory for every I/O tensor at one input shape."""

    shape: tuple[int, ...]
    host: dict[str, np.ndarray]
    device: dict[str, DeviceBuffer]


@dataclass
class Lane:
    """One execution context with its own stream and buffers: --streams N runs N lanes."""

    context: object
    stream: Stream
    buffers: Buffers | None = None


class TensorRTRunner(Runner):
    cv_warn = 0.025  # trtexec warns above 2.5 %: GPU timings are steadier than host ones
    on_gpu = True  # its rows carry the GPU's state (harness.measure.gpu_state)

    def __init__(self, artifact: Path, trt, cuda: Cuda):
        self.trt, self.cuda = trt, cuda
        try:
            self._open(artifact)
        except BaseException:
            self.close()
            raise

    @property
    def cuda_binding(self) -> str:
        return self.cuda.name

    @property
    def convention(self) -> str:
        """Whose timing defaults apply: trtexec 11's for TensorRT 11, else trtexec 10's."""
        return convention(self.trt.__version__)

    @property
    def context(self):
        return self.lanes[0].context

    @property
    def stream(self) -> Stream:
        return self.lanes[0].stream

    @property
    def buffers(self) -> Buffers | None:
        return self.lanes[0].buffers

    def _open(self, artifact: Path) -> None:
        trt = self.trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(artifact).read_bytes())
        if self.engine is None:
            raise HarnessError(f"engine {artifact}: TensorRT {trt.__version__} cannot deserialize it (built by "
                               "another TensorRT version or GPU?); rebuild with harness build-engine")
        self.lanes = [Lane(self.engine.create_execution_context(), self.cuda.stream())]
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(self.inputs) != 1 or not self.outputs:
            raise HarnessError(f"engine {artifact}: expected one input and at least one output, found inputs "
                               f"{self.inputs} and outputs {self.outputs}")
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}

    def _lanes(self, count: int) -> list[Lane]:
        while len(self.lanes) < count:
            self.lanes.append(Lane(self.engine.create_execution_context(), self.cuda.stream()))
        return self.lanes[:count]

    @property
    def input_name(self) -> str:
        return self.inputs[0]

    def _bind(self, shape: tuple[int, ...], lane: Lane | None = None) -> Buffers:
        """Set the input shape and give every I/O tensor an address; reuse the buffers while the shape holds."""
        lane = lane or self.lanes[0]
        if lane.buffers is not None and lane.buffers.shape == shape:
            return lane.buffers
        if not lane.context.set_input_shape(self.input_name, shape):
            lo, _, hi = self.engine.get_tensor_profile_shape(self.input_name, 0)
            raise HarnessError(f"input shape {'x'.join(map(str, shape))} is outside the engine's profile "
                               f"{tuple(lo)}..{tuple(hi)}; rebuild with --max-batch")
        host, device = {}, {}
        for name in (*self.inputs, *self.outputs):
            dims = tuple(lane.context.get_tensor_shape(name))
            host[name] = self.cuda.host_empty(dims, self.dtypes[name])
            device[name] = self.cuda.device_empty(host[name].nbytes)
            lane.context.set_tensor_address(name, device[name].ptr)
        lane.buffers = Buffers(shape, host, device)
        return lane.buffers

    def _query(self, x: np.ndarray, transfers: bool = True, lane: Lane | None = None) -> Query:
        lane = lane or self.lanes[0]
        buf = self._bind(tuple(x.shape), lane)
        np.copyto(buf.host[self.input_name], x, casting="same_kind")
        cuda, stream, context = self.cuda, lane.stream, lane.context

        def h2d():
            cuda.h2d_async(buf.device[self.input_name], buf.host[self.input_name], stream)

        def d2h():
            for name in self.outputs:
                cuda.d2h_async(buf.host[name], buf.device[name], stream)

        def enqueue():
            if not context.execute_async_v3(stream.handle):
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

    @staticmethod
    def _graph(stream: Stream, enqueue):
        """Capture one enqueue in a CUDA graph after a plain one (keeps lazy initialisation out of the capture).

        Returns (launch, "captured") or (enqueue, reason) when capture is not possible, as trtexec falls back.
        """
        enqueue()
        stream.synchronize()
        try:
            stream.begin_capture()
            try:
                enqueue()
            finally:
                graph = stream.end_capture()
            graph.launch(stream)  # one trial replay, so a failure shows here and not mid-measurement
            stream.synchronize()
        except Exception as exc:  # the driver, TensorRT or the binding may refuse; the fallback is reported
            stream.synchronize()
            return enqueue, (str(exc).splitlines() or [type(exc).__name__])[0]
        return (lambda: graph.launch(stream)), "captured"

    def time(self, x: np.ndarray, warmup_s: float, iterations: int, duration_s: float,
             cuda_graph: bool | None = None, no_data_transfers: bool | None = None, spin_wait: bool | None = None,
             streams: int = 1, **opts) -> Timing:
        """None for a setting means the installed TensorRT's trtexec default (see timing.py)."""
        given = {"cuda_graph": cuda_graph, "no_data_transfers": no_data_transfers, "spin_wait": spin_wait}
        settings = {k: defaults(self.convention)[k] if v is None else v for k, v in given.items()}
        queries, graph = [], ""
        for lane in self._lanes(streams):
            q = self._query(x, not settings["no_data_transfers"], lane)
            if settings["no_data_transfers"]:  # the input is copied once, then stays on the GPU
                self.cuda.h2d(lane.buffers.device[self.input_name], lane.buffers.host[self.input_name], lane.stream)
            if settings["cuda_graph"]:
                q.enqueue, graph = self._graph(lane.stream, q.enqueue)
            queries.append(q)
        return trtexec_timing(self.cuda, queries, warmup_s, iterations, duration_s, graph, settings["spin_wait"],
                              self.convention)

    def serving(self, workers: int, streams: int = 1) -> list:
        """`workers` callables over `streams` new lanes (contexts and streams of their own, so infer and time are
        untouched). Worker i enqueues on lane i mod streams with its own page-locked and device buffers, under the
        lane's lock (a context takes one caller at a time), and waits on its own event outside it: with
        workers = streams + 1 one batch is enqueued ahead of the one being waited on, as trtexec does and as
        Triton's TensorRT backend double-buffers its bindings."""
        lanes = [Lane(self.engine.create_execution_context(), self.cuda.stream()) for _ in range(streams)]
        self.serving_lanes = lanes  # dropped by close() before the CUDA layer lets go
        locks = [threading.Lock() for _ in lanes]
        return [self._serving_slot(lanes[i % streams], locks[i % streams]) for i in range(workers)]

    def _serving_slot(self, lane: Lane, lock: threading.Lock):
        """Buffers for the profile's largest batch; each call runs a batch of any size up to it."""
        cuda, stream, context, name_in = self.cuda, lane.stream, lane.context, self.input_name
        largest = tuple(self.engine.get_tensor_profile_shape(name_in, 0)[2])
        with lock, cuda.current():
            if not context.set_input_shape(name_in, largest):
                raise HarnessError(f"the engine refuses its own largest input shape {largest}")
            dims = {n: tuple(context.get_tensor_shape(n)) for n in (*self.inputs, *self.outputs)}
            host = {n: cuda.host_empty(d, self.dtypes[n]) for n, d in dims.items()}
            device = {n: cuda.device_empty(host[n].nbytes) for n in dims}
            done = cuda.event(blocking=True)

        def run(x: np.ndarray) -> np.ndarray:
            n = len(x)
            with cuda.current():
                with lock:
                    if not context.set_input_shape(name_in, tuple(x.shape)):
                        raise HarnessError(f"batch of {n} is outside the engine's profile {largest[0]}; serve with "
                                           "a smaller --batch")
                    for name, buffer in device.items():
                        context.set_tensor_address(name, buffer.ptr)
                    np.copyto(host[name_in][:n], x, casting="same_kind")
                    cuda.h2d_async(device[name_in], host[name_in][:n], stream)
                    if not context.execute_async_v3(stream.handle):
                        raise HarnessError("TensorRT execute_async_v3 failed; its log above says why")
                    for name in self.outputs:
                        cuda.d2h_async(host[name][:n], device[name], stream)
                    done.record(stream)
                done.synchronize()
            return host[self.outputs[0]][:n].astype(np.float32, copy=True)

        return run

    def layer_times(self, x: np.ndarray, iterations: int = 50, warmup: int = 5) -> dict[str, list[float]]:
        """A separate run with TensorRT's profiler attached: per layer, the ms of each of `iterations` runs.

        Its own execution context, stream and buffers, inputs already on the GPU, plain enqueues (a CUDA graph
        cannot report per layer), so the timed runs are untouched by the profiler's events.
        """
        from harness.backends.tensorrt.profile import make_profiler

        lane = Lane(self.engine.create_execution_context(), self.cuda.stream())
        query = self._query(x, transfers=False, lane=lane)
        self.cuda.h2d(lane.buffers.device[self.input_name], lane.buffers.host[self.input_name], lane.stream)
        profiler = make_profiler(self.trt)
        lane.context.profiler = profiler
        for _ in range(warmup):
            query.enqueue()
            lane.stream.synchronize()
        profiler.reports.clear()
        for _ in range(iterations):
            query.enqueue()
            lane.stream.synchronize()
        return dict(profiler.reports)

    def engine_information(self) -> dict:
        """The engine inspector's JSON (DETAILED when built by harness), with this context's shapes."""
        self._bind(tuple(self.engine.get_tensor_profile_shape(self.input_name, 0)[1]))
        inspector = self.engine.create_engine_inspector()
        inspector.execution_context = self.context
        return json.loads(inspector.get_engine_information(self.trt.LayerInformationFormat.JSON))

    def close(self) -> None:
        """Drop TensorRT's objects before the CUDA layer lets go of its context."""
        if getattr(self, "cuda", None) is None:
            return
        for name in ("serving_lanes", "lanes", "engine", "runtime"):
            self.__dict__.pop(name, None)
        self.cuda.close()
        self.cuda = None
