"""Small ONNX graphs shaped like digits-resnet's I/O (input Nx1x32x32 -> logits Nx10), built in milliseconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _qdq(name: str, tensor: str, nodes: list, inits: list, fp8: bool = False) -> str:
    """QuantizeLinear -> DequantizeLinear on `tensor` (symmetric, zero-point 0: INT8, or FP8 E4M3 with `fp8`);
    returns the DQ output."""
    zero = helper.make_tensor(f"{name}_zp", TensorProto.FLOAT8E4M3FN, [], [0.0]) if fp8 else \
        numpy_helper.from_array(np.array(0, np.int8), f"{name}_zp")
    inits += [numpy_helper.from_array(np.array(0.05, np.float32), f"{name}_scale"), zero]
    nodes += [helper.make_node("QuantizeLinear", [tensor, f"{name}_scale", f"{name}_zp"], [f"{name}_q"],
                               name=f"{name}/QuantizeLinear"),
              helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_scale", f"{name}_zp"], [f"{name}_dq"],
                               name=f"{name}/DequantizeLinear")]
    return f"{name}_dq"


def tiny_onnx(path: Path, qdq: bool = False, unsupported: bool = False, fp8: bool = False) -> Path:
    """conv1 -> relu -> conv2 -> global pool -> fc; with `qdq`, Q/DQ before conv1 and conv2 (not fc), FP8 E4M3
    ones (opset 19) with `fp8`."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.standard_normal((4, 10)).astype(np.float32), "wfc"),
             numpy_helper.from_array(np.zeros(10, np.float32), "bfc")]
    nodes: list = []
    x = _qdq("/conv1/input", "input", nodes, inits, fp8) if qdq else "input"
    nodes.append(helper.make_node("Conv", [x, "w1"], ["c1"], name="/conv1/Conv", pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Relu", ["c1"], ["r1"], name="/relu/Relu"))
    x = _qdq("/conv2/input", "r1", nodes, inits, fp8) if qdq else "r1"
    nodes.append(helper.make_node("Conv", [x, "w2"], ["c2"], name="/conv2/Conv", pads=[1, 1, 1, 1]))
    if unsupported:
        nodes.append(helper.make_node("FakeUnsupported", ["c2"], ["c2b"], name="/custom/FakeUnsupported",
                                      domain="custom"))
    nodes.append(helper.make_node("GlobalAveragePool", ["c2b" if unsupported else "c2"], ["p"], name="/pool"))
    nodes.append(helper.make_node("Flatten", ["p"], ["f"], name="/flatten"))
    nodes.append(helper.make_node("Gemm", ["f", "wfc", "bfc"], ["logits"], name="/fc/Gemm"))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    opsets = [helper.make_opsetid("", 19 if fp8 else 17)] + ([helper.make_opsetid("custom", 1)] if unsupported else [])
    path = Path(path)
    onnx.save(helper.make_model(graph, opset_imports=opsets), path)
    return path
