"""A TensorRT engine's intermediate tensors through debug tensors (mark_debug + IDebugListener, TensorRT >= 10).

Marking a tensor as a network output changes the engine (it must be written out, which breaks the fusions that
would have kept it in registers); a debug tensor is reported to a listener during execution and leaves the
engine's I/O as built. The quantized ONNX is built with every layer output marked, run on the GPU, and each
reported tensor copied to the host inside the callback (its buffer is only valid there).
"""

from __future__ import annotations

import ctypes
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from harness.backends.base import BuildOptions
from harness.fileio import atomic_write

DEBUG_DIR = "debug-layers"


def capsule_address(addr) -> int:
    """The pointer a listener is handed: a PyCapsule in TensorRT's bindings (an int in some versions)."""
    if isinstance(addr, int):
        return addr
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.argtypes, get.restype = [ctypes.py_object, ctypes.c_char_p], ctypes.c_void_p
    return int(get(addr, None))


def make_listener(trt, runner):
    """An IDebugListener that copies every reported tensor to a host array, keyed by tensor name, through the
    runner's CUDA binding (harness.cuda) on the stream the engine runs on."""
    from harness.cuda import DeviceBuffer

    class Collector(trt.IDebugListener):
        def __init__(self):
            trt.IDebugListener.__init__(self)
            self.tensors: dict[str, np.ndarray] = {}

        def process_debug_tensor(self, addr, location, type, shape, name, stream):  # noqa: A002 - TensorRT's names
            dims = tuple(int(d) for d in shape)
            pointer = capsule_address(addr)
            if location == trt.TensorLocation.DEVICE:
                host = runner.cuda.host_empty(dims, trt.nptype(type))  # page-locked, as async copies need
                if host.nbytes:
                    runner.cuda.d2h_async(host, DeviceBuffer(pointer, host.nbytes), runner.stream)
                    runner.stream.synchronize()  # the buffer is only valid during this call
            else:
                host = np.empty(dims, dtype=trt.nptype(type))
                if host.nbytes:
                    ctypes.memmove(host.ctypes.data, pointer, host.nbytes)
            self.tensors[name] = np.array(host, dtype=np.float32)
            return True

    return Collector()


def debug_tensors(quant_model: onnx.ModelProto, engines_dir: Path, batch: int = 16, cuda_binding: str = "auto"
                  ) -> Callable[[list[str]], Callable[[np.ndarray], dict[str, np.ndarray]]]:
    """For harness.debug.layers.divergence: tensor names -> a function from an input batch to those tensors,
    read from a TensorRT engine of `quant_model` built with them marked as debug tensors."""
    from harness.backends.tensorrt import tensorrt_module
    from harness.backends.tensorrt.builder import TIMING_CACHE, build_serialized
    from harness.backends.tensorrt.runtime import TensorRTRunner
    from harness.build import sha256_json
    from harness.cuda import open_cuda

    def factory(names: list[str]):
        trt = tensorrt_module()
        payload = quant_model.SerializeToString()
        folder = Path(engines_dir) / DEBUG_DIR
        key = sha256_json({"onnx": hashlib.sha256(payload).hexdigest(), "names": names, "trt": trt.__version__})[:16]
        onnx_path = atomic_write(folder / f"{key}.onnx", payload)
        options = BuildOptions(batch_min=1, batch_opt=batch, batch_max=batch)
        plan = build_serialized(trt, onnx_path, options, Path(engines_dir) / TIMING_CACHE, debug_tensors=names)
        runner = TensorRTRunner(atomic_write(folder / f"{key}.engine", plan), trt, open_cuda(cuda_binding))
        listener = make_listener(trt, runner)
        runner.context.set_debug_listener(listener)
        for name in names:
            if runner.engine.is_debug_tensor(name):
                runner.context.set_tensor_debug_state(name, True)

        def run(x: np.ndarray) -> dict[str, np.ndarray]:
            listener.tensors = {}
            runner.infer_all(x)
            return dict(listener.tensors)

        run.listener = listener  # kept alive as long as the runner uses it
        return run

    return factory
