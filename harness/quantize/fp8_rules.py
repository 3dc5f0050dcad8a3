"""Which convolutions and GEMMs TensorRT will not run in FP8, and the rule each breaks, before any build.

The rules and their sources:
- filter larger than 32 taps (kernel elements, e.g. a 7x7 stem = 49), and input or output channels of 16 or
  fewer (per group, as the weight holds them): NVIDIA Model Optimizer leaves such convolutions out of FP8
  (`modelopt.onnx.quantization.graph_utils.find_nodes_from_convs_to_exclude(graph, "fp8")`, `_MIN_CHANNELS_FP8`
  = 16; 0.47);
- the first convolution with 3 input channels (an RGB stem): TensorRT has no FP8 tactic for it on H100 (TensorRT
  issue #3987, ResNet-18/50) nor on Blackwell CC 12.0;
- grouped and depthwise convolutions: "no optimized FP8 Convolutions for Group Convolutions and Depthwise
  Convolutions" (TensorRT 10.x release notes, limitations; TensorRT issue #4524);
- MatMul/Gemm with K or N below 16: Model Optimizer excludes them from INT8 and FP8 alike
  (`find_nodes_from_matmul_to_exclude`, `_MIN_MATMUL_DIM` = 16).
`conv_rules` and `gemm_rules` take plain sizes, so the PyTorch placement (harness.quantize.replace) and the ONNX
reading here apply the same rules.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import onnx

from harness.quantize.onnx_graph import Graph

MAX_TAPS = 32
MIN_CHANNELS = 16  # 16 or fewer: out
MIN_GEMM_DIM = 16  # below 16: out
RGB = 3
FP8 = onnx.TensorProto.FLOAT8E4M3FN


def conv_rules(in_channels: int, out_channels: int, groups: int, taps: int, first: bool) -> list[str]:
    """The FP8 rules a convolution breaks (empty: eligible). `in_channels` counts all groups; `first`: it is the
    model's first convolution."""
    rules = []
    if first and in_channels == RGB:
        rules.append("first convolution with 3 input channels (no FP8 tactic, TensorRT #3987)")
    if taps > MAX_TAPS:
        rules.append(f"filter of {taps} taps > {MAX_TAPS}")
    if groups > 1:
        kind = "depthwise" if groups == in_channels else f"grouped ({groups} groups)"
        rules.append(f"{kind} convolution (no optimized FP8 kernels)")
    per_group = in_channels // max(groups, 1)
    if per_group <= MIN_CHANNELS:
        rules.append(f"{_channels(per_group, 'input')}{' per group' if groups > 1 else ''} <= {MIN_CHANNELS}")
    if out_channels <= MIN_CHANNELS:
        rules.append(f"{_channels(out_channels, 'output')} <= {MIN_CHANNELS}")
    return rules


def _channels(count: int, kind: str) -> str:
    return f"{count} {kind} channel{'' if count == 1 else 's'}"


def gemm_rules(k: int | None, n: int | None) -> list[str]:
    """The FP8 rules a MatMul/Gemm of reduction size K and N outputs breaks (None: size unknown, not judged)."""
    return [f"{dim}={size} < {MIN_GEMM_DIM}" for dim, size in (("K", k), ("N", n))
            if size is not None and 0 < size < MIN_GEMM_DIM]


@dataclass
class Ineligible:
    """A layer TensorRT will not run in FP8: its ONNX node, operator and the rules it breaks."""

    node: str
    op: str
    rules: list[str]

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.node} ({self.op}): {'; '.join(self.rules)}"


def _weight(g: Graph, name: str):
    """A constant weight, also through Q/DQ (a quantized file's weight is DequantizeLinear(QuantizeLinear(W)))."""
    while g.const(name) is None and g.op_of(name) in ("DequantizeLinear", "QuantizeLinear"):
        name = g.producer[name].input[0]
    return g.const(name)


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Static shapes of every tensor at batch 1 (0 where a size stays unknown)."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed)
    except Exception:  # shape inference gives up on some custom graphs: then only constant sizes are judged
        return {}
    values = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def _gemm_sizes(g: Graph, node, shapes: dict[str, list[int]]) -> tuple[int | None, int | None]:
    """(K, N) of a MatMul/Gemm: from B's shape (a Gemm's transB read) and the output's last size."""
    b = _weight(g, node.input[1])
    b_shape = list(b.shape) if b is not None else shapes.get(node.input[1], [])
    trans_b = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
    if len(b_shape) < 2:
        return None, None
    k, n = (b_shape[-1], b_shape[-2]) if trans_b else (b_shape[-2], b_shape[-1])
    return k or None, n or None


def _type(g: Graph, name: str) -> int | None:
    """The ONNX element type of a constant (initializer or Constant node), else None."""
    if name in g.initializers:
        return g.initializers[name].data_type
    node = g.producer.get(name)
    if node is not None and node.op_type == "Constant":
        return next((a.t.data_type for a in node.attribute if a.name == "value"), None)
    return None


def fp8_quantized(g: Graph, tensor: str) -> bool:
    """Whether `tensor` comes out of a DequantizeLinear of FP8 E4M3 values (its zero point, or its input, is FP8)."""
    dq = g.producer.get(tensor)
    if dq is None or dq.op_type != "DequantizeLinear":
        return False
    q = g.producer.get(dq.input[0])
    names = [dq.input[0], *dq.input[2:3]] + ([*q.input[2:3]] if q is not None and q.op_type == "QuantizeLinear" else [])
    return any(_type(g, name) == FP8 for name in names)


def ineligible(model: onnx.ModelProto) -> list[Ineligible]:
    """Every Conv, MatMul and Gemm of the file that TensorRT will not run in FP8, in graph order."""
    g = Graph(model)
    shapes = _shapes(model)
    found, first = [], True
    for index, node in enumerate(g.nodes):
        name = node.name or f"{node.op_type}_{index}"
        if node.op_type == "Conv":
            w = _weight(g, node.input[1])
            if w is None or w.ndim < 3:
                first = False
                continue
            groups = next((a.i for a in node.attribute if a.name == "group"), 1)
            rules = conv_rules(w.shape[1] * groups, w.shape[0], groups, math.prod(w.shape[2:]), first)
            first = False
        elif node.op_type in ("MatMul", "Gemm"):
            rules = gemm_rules(*_gemm_sizes(g, node, shapes))
        else:
            continue
        if rules:
            found.append(Ineligible(name, node.op_type, rules))
    return found
