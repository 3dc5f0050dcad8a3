"""A test double of the TensorRT 10.x / 11.x Python API that harness uses, over fake_pycuda's simulated GPU.

What it keeps faithful, so a test can trust what passes here:
- enums by name with the real values, including NetworkDefinitionCreationFlag.STRONGLY_TYPED = 1 in 10.x and
  0 in 11.x, and BuilderFlag without FP16/INT8/... and no EXPLICIT_BATCH in 11.x;
- APIs removed in 10.0 (and, for 11.x, in 11.0) do not exist: every object has __slots__, so reading or
  setting e.g. `config.max_workspace_size`, `builder.build_engine`, `context.execute_async_v2`,
  `engine.num_bindings` raises AttributeError;
- the ONNX parser reads the real ONNX file (inputs, outputs, nodes) and reports unsupported nodes through
  ParserError(node_name, node_operator, desc); build_serialized_network returns None without a profile for a
  dynamic input; execute_async_v3 fails unless every I/O tensor has an address and the input a shape;
- the engine inspector's JSON uses the 10.x layout (Bindings, Format/Datatype) or the 11.x one (I/O Tensors,
  Format + DataType), with TensorRT's own spellings of FP8 ("Row major linear FP8 format" / "FP8") and BF16
  ("... BFloat16 format ..." / "BFloat16");
- a weighted layer reads what its Q/DQ plan says (INT8, or FP8 when the DequantizeLinear before it holds FP8
  E4M3), other layers the network's float type (FP32, FP16 or BF16, from the ONNX's initializers and Casts); as
  TensorRT, the builder finds no FP8 kernel on a GPU below compute capability 8.9 and no BF16 one below 8.0
  (build_serialized_network returns None).
The "engine" computes logits[n, k] = mean(input[n]) * (k + 1), so a test can check the bytes that came back.
"""

from __future__ import annotations

import base64
import ctypes
import enum
import importlib.machinery
import json
import types

import numpy as np
import onnx

from fakes.fake_pycuda import FakeGpu

REMOVED_IN_10 = ("build_engine", "max_workspace_size", "execute_async_v2", "execute_v2_async", "num_bindings",
                 "binding_is_input", "get_binding_index", "get_binding_shape", "get_binding_dtype",
                 "get_binding_name", "set_binding_shape", "int8_calibrator")
REMOVED_IN_11 = ("FP16", "BF16", "INT8", "FP8", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS",
                 "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO", "EXPLICIT_BATCH", "platform_has_fast_fp16",
                 "platform_has_fast_int8", "REJECT_EMPTY_ALGORITHMS", "WEIGHTLESS", "MEM_ALLOC_FAILED")

_BUILDER_FLAGS = ["FP16", "INT8", "DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "TF32",
                  "SPARSE_WEIGHTS", "SAFETY_SCOPE", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS",
                  "DIRECT_IO", "REJECT_EMPTY_ALGORITHMS", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "FP8",
                  "ERROR_ON_TIMING_CACHE_MISS", "BF16", "DISABLE_COMPILATION_CACHE", "WEIGHTLESS", "STRIP_PLAN",
                  "REFIT_IDENTICAL", "WEIGHT_STREAMING", "INT4", "REFIT_INDIVIDUAL", "STRICT_NANS",
                  "MONITOR_MEMORY", "FP4", "EDITABLE_TIMING_CACHE"]


class DataType(enum.IntEnum):
    FLOAT, HALF, INT8, INT32, BOOL, UINT8, FP8, BF16, INT64 = range(9)


_NP = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
       DataType.INT32: np.int32, DataType.BOOL: np.bool_, DataType.UINT8: np.uint8, DataType.INT64: np.int64}
_FROM_ONNX = {onnx.TensorProto.FLOAT: DataType.FLOAT, onnx.TensorProto.FLOAT16: DataType.HALF}
# How each precision is spelled by the inspector: 10.x "Format/Datatype", 11.x ("Format", "DataType").
_SPELLING = {
    "FP32": ("Row major linear FP32 format", ("Row major linear FP32 format (kLINEAR)", "Float")),
    "FP16": ("Channel major FP16 format where channel % 8 == 0", ("Channel major FP16 format (kHWC8)", "Half")),
    "INT8": ("Thirty-two wide channel vectorized row major Int8 format",
             ("Thirty-two wide channel vectorized row major Int8 format (kCHW32)", "Int8")),
    "FP8": ("Row major linear FP8 format", ("Row major linear FP8 format (kLINEAR)", "FP8")),
    "BF16": ("Channel major BFloat16 format where channel % 8 == 0",
             ("Channel major BFloat16 format where channel % 8 == 0 (kHWC8)", "BFloat16")),
}
_TACTICS = {"INT8": "sm90_xmma_fprop_implicit_gemm_i8i8_i8i32_f32", "FP8": "sm90_xmma_fprop_implicit_gemm_e4m3_f32",
            "FP16": "sm90_xmma_fprop_f16f16", "BF16": "sm90_xmma_fprop_bf16bf16", "FP32": "sm90_xmma_fprop_f32f32"}
_MIN_CAPABILITY = {"FP8": (8, 9), "BF16": (8, 0)}  # older GPUs have no kernels for the type


def _onnx_type(proto, name):
    """The element type of an initializer or Constant output of the ONNX, else None."""
    for t in proto.graph.initializer:
        if t.name == name:
            return t.data_type
    for n in proto.graph.node:
        if n.op_type == "Constant" and name in n.output:
            return next((a.t.data_type for a in n.attribute if a.name == "value"), None)
    return None


def make_tensorrt(version: str, gpu: FakeGpu, not_int8: tuple[str, ...] = (),
                  unsupported_ops: tuple[str, ...] = ("FakeUnsupported",)) -> types.ModuleType:
    """A `tensorrt` module for `version` ("10.x.y" or "11.x.y"). `not_int8` names ONNX nodes the fake builder
    leaves in float although the Q/DQ plan meant them INT8 (the case inspect-engine must find)."""
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # torch._dynamo calls find_spec on it
    trt.__version__ = version

    if major >= 11:
        trt.NetworkDefinitionCreationFlag = enum.IntEnum(
            "NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 0, "PREFER_AOT_PYTHON_PLUGINS": 1,
                                              "PREFER_JIT_PYTHON_PLUGINS": 2})
        flags = [f for f in _BUILDER_FLAGS if f not in REMOVED_IN_11]
    else:
        trt.NetworkDefinitionCreationFlag = enum.IntEnum(
            "NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1,
                                              "PREFER_AOT_PYTHON_PLUGINS": 2, "PREFER_JIT_PYTHON_PLUGINS": 3})
        flags = list(_BUILDER_FLAGS)
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", {f: i for i, f in enumerate(flags)})
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1,
                                                         "DLA_LOCAL_DRAM": 2, "DLA_GLOBAL_DRAM": 3,
                                                         "TACTIC_DRAM": 4, "TACTIC_SHARED_MEMORY": 5})
    trt.ProfilingVerbosity = enum.IntEnum("ProfilingVerbosity", {"LAYER_NAMES_ONLY": 0, "NONE": 1, "DETAILED": 2})
    trt.TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    trt.LayerInformationFormat = enum.IntEnum("LayerInformationFormat", {"ONELINE": 0, "JSON": 1})
    codes = ["SUCCESS", "INTERNAL_ERROR", "MEM_ALLOC_FAILED", "MODEL_DESERIALIZE_FAILED", "INVALID_VALUE",
             "INVALID_GRAPH", "INVALID_NODE", "UNSUPPORTED_GRAPH", "UNSUPPORTED_NODE"]
    trt.ErrorCode = enum.IntEnum("ErrorCode", {c: i for i, c in enumerate(codes)
                                               if major < 11 or c not in REMOVED_IN_11})
    trt.TensorLocation = enum.IntEnum("TensorLocation", {"DEVICE": 0, "HOST": 1})
    addresses = iter(range(0x7E0000000000, 0x7F0000000000, 0x100000))

    def device_alloc(nbytes):
        """Fake device memory for a debug tensor (TensorRT owns it; valid during the listener's call only)."""
        address = next(addresses)
        gpu.memory[address] = np.zeros(nbytes, np.uint8)
        return address
    trt.DataType = DataType
    trt.float32, trt.float16, trt.int8, trt.int32 = DataType.FLOAT, DataType.HALF, DataType.INT8, DataType.INT32

    def nptype(trt_type):
        if trt_type in _NP:
            return _NP[trt_type]
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")

    trt.nptype = nptype

    class Logger:
        __slots__ = ("min_severity",)
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self, min_severity=2):
            self.min_severity = min_severity

    class ITensor:
        __slots__ = ("name", "shape", "dtype")

        def __init__(self, name, shape, dtype):
            self.name, self.shape, self.dtype = name, tuple(shape), dtype

    class ILayer:
        __slots__ = ("name", "type", "_outputs")

        def __init__(self, name, op, outputs):
            self.name, self.type, self._outputs = name, op, outputs

        @property
        def num_outputs(self):
            return len(self._outputs)

        def get_output(self, index):
            return self._outputs[index]

    class INetworkDefinition:
        __slots__ = ("flags", "inputs", "outputs", "_nodes", "_float", "_layers", "_debug", "_onnx")

        def __init__(self, flags):
            self.flags, self.inputs, self.outputs, self._nodes, self._float = flags, [], [], [], "FP32"
            self._layers, self._debug, self._onnx = [], [], b""

        @property
        def num_layers(self):
            return len(self._layers)

        def get_layer(self, index):
            return self._layers[index]

        def mark_debug(self, tensor):
            gpu.log("mark_debug", tensor.name)
            if tensor.name not in self._debug:
                self._debug.append(tensor.name)
            return True

        def is_debug_tensor(self, tensor):
            return tensor.name in self._debug

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, index):
            return self.inputs[index]

        @property
        def num_outputs(self):
            return len(self.outputs)

        def get_output(self, index):
            return self.outputs[index]

    class ParserError:
        __slots__ = ("_node", "_name", "_op", "_desc")

        def __init__(self, node, name, op, desc):
            self._node, self._name, self._op, self._desc = node, name, op, desc

        def code(self):
            return trt.ErrorCode.UNSUPPORTED_NODE

        def desc(self):
            return self._desc

        def node(self):
            return self._node

        def node_name(self):
            return self._name

        def node_operator(self):
            return self._op

        def file(self):
            return "ModelImporter.cpp"

        def line(self):
            return 1

        def func(self):
            return "parseNode"

        def __str__(self):
            return f"In node {self._node} (parseNode): UNSUPPORTED_NODE: {self._desc}"

    def _dims(value_info):
        return [d.dim_value if d.HasField("dim_value") else -1 for d in value_info.type.tensor_type.shape.dim]

    class OnnxParser:
        __slots__ = ("network", "logger", "errors")

        def __init__(self, network, logger):
            self.network, self.logger, self.errors = network, logger, []

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, index):
            return self.errors[index]

        def clear_errors(self):
            self.errors = []

        def parse_from_file(self, model):
            gpu.log("parse_from_file", model)
            return self._parse(onnx.load(model))

        def parse(self, model, path=None):
            gpu.log("parse", path)
            return self._parse(onnx.load_from_string(bytes(model)))

        def _parse(self, proto):
            graph, net = proto.graph, self.network
            for i, node in enumerate(graph.node):
                if node.op_type in unsupported_ops:
                    self.errors.append(ParserError(i, node.name, node.op_type,
                                                   f"No importer registered for op: {node.op_type}"))
                    return False
            initializers = {t.name for t in graph.initializer}
            for vi in graph.input:
                if vi.name not in initializers:
                    net.inputs.append(ITensor(vi.name, _dims(vi), _FROM_ONNX[vi.type.tensor_type.elem_type]))
            for vi in graph.output:
                net.outputs.append(ITensor(vi.name, _dims(vi), _FROM_ONNX[vi.type.tensor_type.elem_type]))
            for kind, name in ((onnx.TensorProto.BFLOAT16, "BF16"), (onnx.TensorProto.FLOAT16, "FP16")):
                if any(t.data_type == kind for t in graph.initializer) or any(
                        a.name == "to" and a.i == kind for n in graph.node for a in n.attribute):
                    net._float = name
                    break
            net._onnx = proto.SerializeToString()  # debug tensors are computed from it (ONNX Runtime)
            net._layers = [ILayer(n.name, n.op_type, [ITensor(o, (), DataType.FLOAT) for o in n.output])
                           for n in graph.node if n.op_type not in ("Constant", "QuantizeLinear", "DequantizeLinear")]
            producer = {out: n for n in graph.node for out in n.output}

            def reads(node):
                """What a node's first input comes from: the producer's op, and FP8 for an FP8 E4M3 DQ."""
                source = producer.get(node.input[0]) if node.input else None
                if source is None:
                    return "", False
                fp8 = source.op_type == "DequantizeLinear" and any(
                    _onnx_type(proto, i) == onnx.TensorProto.FLOAT8E4M3FN for i in source.input[2:3])
                return source.op_type, fp8

            net._nodes = [(n.name, n.op_type, *reads(n)) for n in graph.node]
            return True

    class IOptimizationProfile:
        __slots__ = ("shapes",)

        def __init__(self):
            self.shapes = {}

        def set_shape(self, input, min, opt, max):  # noqa: A002 - TensorRT's parameter names
            if not all(a <= b <= c for a, b, c in zip(min, opt, max, strict=True)):
                raise RuntimeError("Shape provided for min is inconsistent with other shapes.")
            self.shapes[input] = (tuple(min), tuple(opt), tuple(max))
            gpu.log("set_shape", input, tuple(min), tuple(opt), tuple(max))

        def get_shape(self, input):  # noqa: A002
            return list(self.shapes.get(input, ()))

    class ITimingCache:
        __slots__ = ("entries", "_valid")

        def __init__(self, entries, _valid=True):
            self.entries, self._valid = entries, _valid

        def serialize(self):
            return bytearray(b"FAKETC" + json.dumps(self.entries).encode())

        def combine(self, input_cache, ignore_mismatch):
            self.entries += input_cache.entries
            return True

    class IBuilderConfig:
        __slots__ = ("_pools", "_opt_level", "profiling_verbosity", "profiles", "cache", "flags")

        def __init__(self):
            self._pools, self._opt_level, self.profiling_verbosity = {}, 3, trt.ProfilingVerbosity.LAYER_NAMES_ONLY
            self.profiles, self.cache, self.flags = [], None, 0

        def set_memory_pool_limit(self, pool, pool_size):
            gpu.log("set_memory_pool_limit", pool, pool_size)
            self._pools[pool] = pool_size

        def get_memory_pool_limit(self, pool):
            return self._pools.get(pool, 0)

        @property
        def builder_optimization_level(self):
            return self._opt_level

        @builder_optimization_level.setter
        def builder_optimization_level(self, level):
            if not 0 <= level <= 5:
                raise ValueError("builder optimization level must be 0..5")
            self._opt_level = level

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        @property
        def num_optimization_profiles(self):
            return len(self.profiles)

        def set_flag(self, flag):
            self.flags |= 1 << int(flag)

        def clear_flag(self, flag):
            self.flags &= ~(1 << int(flag))

        def get_flag(self, flag):
            return bool(self.flags & (1 << int(flag)))

        def create_timing_cache(self, serialized_timing_cache):
            data = bytes(serialized_timing_cache)
            gpu.log("create_timing_cache", data)
            if not data:
                return ITimingCache(0)
            if not data.startswith(b"FAKETC"):
                return ITimingCache(0, _valid=False)  # written by another TensorRT version or GPU
            return ITimingCache(json.loads(data[6:]))

        def set_timing_cache(self, cache, ignore_mismatch):
            if not cache._valid and not ignore_mismatch:
                return False
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    def _precision(net, node_name, first_input_producer, fp8):
        if first_input_producer == "DequantizeLinear" and node_name not in not_int8:
            return "FP8" if fp8 else "INT8"
        return net._float

    def _layers(net):
        weighted = [(name, op, _precision(net, name, producer, fp8)) for name, op, producer, fp8 in net._nodes
                    if op in ("Conv", "Gemm", "MatMul", "ConvTranspose")]
        layers = []
        if weighted:
            layers.append({"Name": f"Reformatting CopyNode for Input Tensor 0 to {weighted[0][0]}",
                           "LayerType": "Reformat", "Origin": "REFORMAT", "TacticValue": "0x00000000000003ea",
                           "Inputs": [("input", "FP32")], "Outputs": [("reformatted", weighted[0][2])]})
        for name, op, prec in weighted:
            layers.append({"Name": name, "LayerType": "CaskConvolution" if "Conv" in op else "CaskGemm",
                           "Origin": "CONVOLUTION", "TacticName": _TACTICS[prec], "TacticValue": "0x1",
                           "Metadata": f"[ONNX Layer: {name}]\x1e[ONNX Layer: {name}_relu]",
                           "Inputs": [(f"{name}_in", prec)], "Outputs": [(f"{name}_out", prec)]})
        return layers

    class IHostMemory(bytes):
        @property
        def nbytes(self):
            return len(self)

    class Builder:
        __slots__ = ("logger", "max_threads")

        def __init__(self, logger):
            if not gpu.present:
                raise TypeError("pybind11::init(): factory function returned nullptr")
            self.logger, self.max_threads = logger, 0

        def create_network(self, flags=0):
            gpu.log("create_network", flags)
            return INetworkDefinition(flags)

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            gpu.log("build_serialized_network")
            profile = config.profiles[0].shapes if config.profiles else {}
            if any(-1 in t.shape for t in network.inputs) and not profile:
                return None  # "Network has dynamic or shape inputs, but no optimization profile has been defined"
            used = {_precision(network, n, p, f) for n, _, p, f in network._nodes} | {network._float}
            if any(gpu.capability < need for kind, need in _MIN_CAPABILITY.items() if kind in used):
                return None  # "Could not find any implementation for node ..." (no FP8 / BF16 kernel on this GPU)
            if config.cache is not None:
                config.cache.entries += 1
            plan = {"version": version,
                    "inputs": [{"name": t.name, "dtype": int(t.dtype), "profile": profile[t.name]}
                               for t in network.inputs],
                    "outputs": [{"name": t.name, "dtype": int(t.dtype), "shape": t.shape} for t in network.outputs],
                    "strongly_typed": network.flags == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED),
                    "layers": _layers(network), "debug": list(network._debug),
                    "onnx": base64.b64encode(network._onnx).decode() if network._debug else ""}
            return IHostMemory(b"FAKEPLAN" + json.dumps(plan).encode())

    if major < 11:
        Builder.platform_has_fast_fp16 = property(lambda self: True)
        Builder.platform_has_fast_int8 = property(lambda self: True)

    class IProfiler:
        """Subclassed by the user; TensorRT calls report_layer_time once per layer per profiled execution."""

        def __init__(self):
            pass

        def report_layer_time(self, layer_name, ms):
            raise NotImplementedError

    class IDebugListener:
        def __init__(self):
            pass

        def process_debug_tensor(self, addr, location, type, shape, name, stream):  # noqa: A002
            raise NotImplementedError

    class IExecutionContext:
        __slots__ = ("engine", "shapes", "_addresses", "profiler", "_listener", "_debug_state")

        def __init__(self, engine):
            self.engine, self.shapes, self._addresses, self.profiler = engine, {}, {}, None
            self._listener, self._debug_state = None, dict.fromkeys(engine._plan.get("debug", []), True)

        def set_debug_listener(self, listener):
            self._listener = listener
            return True

        def get_debug_listener(self):
            return self._listener

        def set_tensor_debug_state(self, name, flag):
            if name not in self._debug_state:
                return False  # "The Tensor must have been marked as a debug tensor during build time"
            self._debug_state[name] = bool(flag)
            return True

        def get_debug_state(self, name):
            return self._debug_state.get(name, False)

        def set_all_tensors_debug_state(self, flag):
            self._debug_state = dict.fromkeys(self._debug_state, bool(flag))
            return True

        def _report_debug_tensors(self, x, stream_handle):
            """Debug tensors' real values (the ONNX run on ONNX Runtime), handed over in fake device memory."""
            names = [n for n, on in self._debug_state.items() if on]
            if self._listener is None or not names:
                return
            from harness.backends.cpu import reference_session

            model = onnx.load_from_string(base64.b64decode(self.engine._plan["onnx"]))
            del model.graph.output[:]
            model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                                      for n in names)
            sess = reference_session(model.SerializeToString())  # the graph as written, on any CPU
            values = sess.run(names, {sess.get_inputs()[0].name: x})
            new_capsule = ctypes.pythonapi.PyCapsule_New
            new_capsule.argtypes, new_capsule.restype = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p], \
                ctypes.py_object
            for name, value in zip(names, values, strict=True):
                buffer = device_alloc(value.nbytes)
                gpu.memory[buffer][: value.nbytes] = np.ascontiguousarray(value, np.float32).view(np.uint8).ravel()
                self._listener.process_debug_tensor(new_capsule(buffer, None, None), trt.TensorLocation.DEVICE,
                                                    DataType.FLOAT, value.shape, name, stream_handle)
                gpu.memory.pop(buffer)

        def set_input_shape(self, name, shape):
            lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
            shape = tuple(shape)
            ok = len(shape) == len(lo) and all(a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True))
            gpu.log("set_input_shape", name, shape, ok)
            if ok:
                self.shapes[name] = shape
            return ok

        def get_tensor_shape(self, name):
            if name in self.shapes:
                return self.shapes[name]
            batch = next(iter(self.shapes.values()), (-1,))[0]
            return (batch, *self.engine.get_tensor_shape(name)[1:])

        def set_tensor_address(self, name, memory):
            gpu.log("set_tensor_address", name, memory)
            self._addresses[name] = memory
            return True

        def get_tensor_address(self, name):
            return self._addresses.get(name, 0)

        def execute_async_v3(self, stream_handle):
            gpu.log("execute_async_v3", stream_handle)
            engine = self.engine
            if set(self._addresses) != set(engine.names) or set(self.shapes) != set(engine._input_names):
                return False  # "Neither address or allocator is set for output tensor ..."
            x_name, y_name = engine._input_names[0], engine._output_names[0]
            x_shape = self.shapes[x_name]
            y_shape = self.get_tensor_shape(y_name)
            x_type, y_type = engine._dtypes[x_name], engine._dtypes[y_name]

            def compute():
                n = int(np.prod(x_shape)) * np.dtype(x_type).itemsize
                x = gpu.memory[self._addresses[x_name]][:n].view(x_type).reshape(x_shape).astype(np.float32)
                y = x.reshape(len(x), -1).mean(axis=1, keepdims=True) * np.arange(1, y_shape[1] + 1)
                raw = y.astype(y_type).view(np.uint8).ravel()
                gpu.memory[self._addresses[y_name]][: raw.size] = raw
                self._report_debug_tensors(x, stream_handle)

            gpu.run(stream_handle, compute, gpu.compute_ms)
            if self.profiler is not None:  # a synthetic trace: gpu.layer_ms[name], cycled per execution
                for layer in engine._plan["layers"]:
                    self.profiler.report_layer_time(layer["Name"], next(gpu.layer_ms(layer["Name"])))
            return True

    class EngineInspector:
        __slots__ = ("engine", "execution_context", "error_recorder")

        def __init__(self, engine):
            self.engine, self.execution_context, self.error_recorder = engine, None, None

        def _tensor(self, name, prec, dims):
            if major >= 11:
                fmt, dtype = _SPELLING[prec][1]
                return {"Name": name, "Location": "Device", "Dimensions": dims, "Format": fmt, "DataType": dtype}
            return {"Name": name, "Location": "Device", "Dimensions": dims, "Format/Datatype": _SPELLING[prec][0]}

        def get_engine_information(self, format):  # noqa: A002
            plan = self.engine._plan
            layers = [{**{k: v for k, v in layer.items() if k not in ("Inputs", "Outputs")},
                       "Inputs": [self._tensor(n, p, [-1]) for n, p in layer["Inputs"]],
                       "Outputs": [self._tensor(n, p, [-1]) for n, p in layer["Outputs"]]}
                      for layer in plan["layers"]]
            if major >= 11:
                io = [{"Name": t["name"], "IOMode": mode, "DataType": "Float", "Dimensions": [-1],
                       "Location": "Device", "IsShapeInferenceIO": False, "ProfileInfo": []}
                      for mode, key in (("Input", "inputs"), ("Output", "outputs")) for t in plan[key]]
                return json.dumps({"Layers": layers, "I/O Tensors": io})
            return json.dumps({"Layers": layers, "Bindings": self.engine.names})

    class ICudaEngine:
        __slots__ = ("_plan", "names", "_input_names", "_output_names", "_dtypes", "_modes")

        def __init__(self, plan):
            self._plan = plan
            self._input_names = [t["name"] for t in plan["inputs"]]
            self._output_names = [t["name"] for t in plan["outputs"]]
            self.names = self._input_names + self._output_names
            self._dtypes = {t["name"]: _NP[DataType(t["dtype"])] for t in plan["inputs"] + plan["outputs"]}
            self._modes = {**{n: trt.TensorIOMode.INPUT for n in self._input_names},
                          **{n: trt.TensorIOMode.OUTPUT for n in self._output_names}}

        @property
        def num_io_tensors(self):
            return len(self.names)

        @property
        def num_layers(self):
            return len(self._plan["layers"])

        @property
        def num_optimization_profiles(self):
            return 1

        def get_tensor_name(self, index):
            return self.names[index]

        def get_tensor_mode(self, name):
            return self._modes.get(name, trt.TensorIOMode.NONE)

        def get_tensor_dtype(self, name):
            return next(DataType(t["dtype"]) for t in self._plan["inputs"] + self._plan["outputs"]
                        if t["name"] == name)

        def get_tensor_shape(self, name):
            t = next(t for t in self._plan["inputs"] + self._plan["outputs"] if t["name"] == name)
            return tuple(t["shape"]) if "shape" in t else (-1, *t["profile"][0][1:])

        def get_tensor_profile_shape(self, name, profile_index):
            t = next(t for t in self._plan["inputs"] if t["name"] == name)
            return [tuple(s) for s in t["profile"]]

        def is_debug_tensor(self, name):
            return name in self._plan.get("debug", [])

        def create_execution_context(self, strategy=None):
            return IExecutionContext(self)

        def create_engine_inspector(self):
            return EngineInspector(self)

    class Runtime:
        __slots__ = ("logger",)

        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, serialized_engine):
            data = bytes(serialized_engine)
            gpu.log("deserialize_cuda_engine", len(data))
            if not data.startswith(b"FAKEPLAN"):
                return None  # "Error Code 1: Serialization (Serialization assertion magicTagRead ...)"
            try:
                plan = json.loads(data[8:])
            except ValueError:
                return None
            if plan["version"].split(".")[0] != version.split(".")[0]:
                return None  # "The engine plan file is not compatible with this version of TensorRT"
            return ICudaEngine(plan)

    for name, value in dict(locals()).items():
        if isinstance(value, type) and not name.startswith("_"):
            setattr(trt, name, value)
    return trt
