"""Explicit precision at the ONNX level: TensorRT 11 builds strongly typed networks, so FP16 is in the file.

Every float tensor of the graph (weights, constants, Q/DQ scales, casts) becomes FP16; graph inputs and
outputs stay FP32 by default, with a Cast at each end, so callers feed and read the same arrays as before.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from harness.errors import HarnessError

FP16_QDQ_OPSET = 19  # QuantizeLinear takes FP16 input (and FP16 scales) from opset 19
FP16_MAX = float(np.finfo(np.float16).max)
_FP32_INPUTS = {"Resize": {2}, "Upsample": {1}}  # inputs the ONNX spec keeps in float32


def _fp16_tensor(t: onnx.TensorProto) -> onnx.TensorProto:
    """Values beyond FP16's range are clipped to it rather than becoming inf."""
    value = np.clip(numpy_helper.to_array(t), -FP16_MAX, FP16_MAX).astype(np.float16)
    return numpy_helper.from_array(value, t.name)


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def to_fp16(model: onnx.ModelProto, keep_io_types: bool = True) -> onnx.ModelProto:
    """A copy of `model` computing in FP16 (Q/DQ scales included, so INT8 layers dequantize to FP16)."""
    graph = model.graph
    if any(n.op_type == "QuantizeLinear" for n in graph.node) and _opset(model) < FP16_QDQ_OPSET:
        raise HarnessError(f"FP16 inputs to QuantizeLinear need opset >= {FP16_QDQ_OPSET}; "
                           f"this model is opset {_opset(model)}: export it at {FP16_QDQ_OPSET}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    keep32 = {n.input[i] for n in graph.node for i in _FP32_INPUTS.get(n.op_type, ()) if i < len(n.input)}
    for i, t in enumerate(graph.initializer):
        if t.data_type == TensorProto.FLOAT and t.name not in keep32:
            graph.initializer[i].CopyFrom(_fp16_tensor(t))
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT \
                    and not set(node.output) & keep32:
                attr.t.CopyFrom(_fp16_tensor(attr.t))
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
    del graph.value_info[:]
    casts_in, casts_out = [], []
    for value in graph.input:
        if value.type.tensor_type.elem_type != TensorProto.FLOAT or value.name in keep32:
            continue
        if keep_io_types:
            inner = f"{value.name}_fp16"
            for node in graph.node:
                node.input[:] = [inner if i == value.name else i for i in node.input]
            casts_in.append(helper.make_node("Cast", [value.name], [inner], to=TensorProto.FLOAT16,
                                             name=f"{value.name}_to_fp16"))
        else:
            value.type.tensor_type.elem_type = TensorProto.FLOAT16
    for value in graph.output:
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        if keep_io_types:
            inner = f"{value.name}_fp16"
            for node in graph.node:
                node.output[:] = [inner if o == value.name else o for o in node.output]
                node.input[:] = [inner if i == value.name else i for i in node.input]
            casts_out.append(helper.make_node("Cast", [inner], [value.name], to=TensorProto.FLOAT,
                                              name=f"{value.name}_to_fp32"))
        else:
            value.type.tensor_type.elem_type = TensorProto.FLOAT16
    nodes = casts_in + [_copy(n) for n in graph.node] + casts_out
    del graph.node[:]
    graph.node.extend(nodes)
    try:
        onnx.checker.check_model(out, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise HarnessError(f"the FP16 model fails onnx.checker: {str(exc).splitlines()[0]}") from exc
    return out
