"""TensorRT-readiness of a Q/DQ ONNX, read from the file alone.

Checks the placements that decide whether TensorRT can fuse in INT8: inputs of weighted layers quantized,
residual Adds quantized on the shortcut and not on the conv branch (harness.quantize.residual_split decides
which is which, ties included), one scale across a Concat, no Q/DQ between Pad and Conv, and every scale
present, positive and every zero-point 0 (symmetric INT8).

A residual Add with no quantized input is a hazard when its branch comes from an INT8 convolution (TensorRT fuses a
residual Add into a Conv/ConvTranspose; Model Optimizer quantizes shortcuts on the same rule) and INT8 is around
it: an input tensor is quantized for another layer anyway, or the Add's output feeds a quantized layer
(through ReLU, shape-only ops, Concat, MaxPool) - there TensorRT would fuse the Add in INT8 if one input were
quantized. An Add after a Linear/MatMul (ConvNeXt blocks, transformers) or between float ops is reported, not
flagged. The branch is read back to its last weighted layer through the ops TensorRT fuses after it or that only
move values (BatchNorm, activations, bias and layer-scale Add/Mul by a constant, Transpose, Reshape, Flatten,
Squeeze, Unsqueeze, Identity, Dropout, Cast).

FP8: the convolutions and GEMMs TensorRT will not run in FP8 are listed with the rule each breaks
(harness.quantize.fp8_rules), in any file, so a user knows before an FP8 build; one that an FP8 Q/DQ feeds anyway
is a hazard (it runs in FP16/FP32 behind reformats).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from harness.quantize.fp8_rules import fp8_quantized, ineligible
from harness.quantize.onnx_graph import DEQUANTIZE, QUANTIZE, Graph
from harness.quantize.residual_split import Split, split_residual

_SHAPE_ONLY = {"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Cast"}
_ELEMENTWISE = {"BatchNormalization", "Relu", "Clip", "LeakyRelu", "Sigmoid", "Mul", "Add", "Sub", "Div"}
_CONVOLUTIONS = {"Conv", "ConvTranspose"}  # the layers TensorRT fuses a residual Add into in INT8
_FUSED_AFTER_ADD = _SHAPE_ONLY | {"Relu", "Clip", "LeakyRelu", "Concat", "MaxPool"}  # Q moves back across these

HAZARDS = {
    "unquantized_shortcut": "residual Adds after an INT8/FP8 conv with no quantized input",
    "quantized_branch": "quantized conv-branch inputs",  # breaks the Conv+Add fusion
    "concat_scales": "Concat inputs with different scales",
    "pad_qdq_conv": "Q/DQ between Pad and Conv",
    "bad_scale": "missing or zero scales",
    "zero_point": "non-zero zero-points",
    "fp8_ineligible": "FP8 Q/DQ on layers TensorRT will not run in FP8",
}


@dataclass
class Readiness:
    path: str
    weighted_quantized: list[str] = field(default_factory=list)
    weighted_float: list[str] = field(default_factory=list)
    residual_quantized: list[str] = field(default_factory=list)
    residual_float: list[str] = field(default_factory=list)
    residual_not_conv: list[str] = field(default_factory=list)
    matmul_quantized: list[str] = field(default_factory=list)
    matmul_float: list[str] = field(default_factory=list)
    fp8_ineligible: list[str] = field(default_factory=list)  # "node (op): rule; rule" of every such layer
    hazards: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in HAZARDS})

    @property
    def hazard_count(self) -> int:
        return sum(len(v) for v in self.hazards.values())

    def rows(self) -> list[tuple[str, int, str]]:
        info = [("weighted layers with quantized inputs", self.weighted_quantized),
                ("weighted layers without quantized inputs", self.weighted_float),
                ("residual Adds with a quantized shortcut", self.residual_quantized),
                ("residual Adds without a quantized shortcut", self.residual_float),
                ("residual Adds after a non-conv branch (no fusion)", self.residual_not_conv),
                ("attention MatMuls with quantized inputs", self.matmul_quantized),
                ("attention MatMuls without quantized inputs", self.matmul_float),
                ("convolutions/GEMMs TensorRT will not run in FP8", self.fp8_ineligible)]
        rows = [(label, len(names), "info") for label, names in info]
        rows += [(HAZARDS[k], len(v), "HAZARD" if v else "ok") for k, v in self.hazards.items()]
        return rows

    def to_dict(self) -> dict:
        return {**asdict(self), "hazard_count": self.hazard_count}


def _name(node, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


def residual_sides(g: Graph, node) -> Split | None:
    """(branch, shortcut, tie) tensors of a two-input Add whose inputs share an ancestor, else None."""
    inputs = g.data_inputs(node)
    if node.op_type != "Add" or len(inputs) != 2:
        return None
    return split_residual(*inputs, parents=g.inputs_of, position=g.position,
                          weight=lambda tensor: int(g.weighted(g.producer[tensor])))


def _last_layer(g: Graph, tensor: str):
    """The weighted layer ending this side of an Add, read through the ops TensorRT fuses after it or that only
    move values; None when another op comes first."""
    while True:
        node = g.producer.get(tensor)
        if node is None:
            return None
        if g.weighted(node):
            return node
        if node.op_type in _SHAPE_ONLY or node.op_type in (QUANTIZE, DEQUANTIZE):
            tensor = node.input[0]
            continue
        data = g.data_inputs(node)
        if node.op_type not in _ELEMENTWISE or len(data) != 1:
            return None
        tensor = data[0]


def _quantized_downstream(g: Graph, tensor: str, through: set[str]) -> bool:
    """Whether a QuantizeLinear reads `tensor`, directly or through `through` ops."""
    stack, seen = [tensor], {tensor}
    while stack:
        for consumer in g.consumers.get(stack.pop(), []):
            if consumer.op_type == QUANTIZE:
                return True
            if consumer.op_type in through and consumer.output[0] not in seen:
                seen.add(consumer.output[0])
                stack.append(consumer.output[0])
    return False


def _residual(g: Graph, r: Readiness, node, name: str, split: Split) -> None:
    branch_q, shortcut_q = g.quantized(split.branch), g.quantized(split.shortcut)
    one_quantized = shortcut_q or (split.tie and branch_q)  # a tie may quantize either side, not both
    (r.residual_quantized if one_quantized else r.residual_float).append(name)
    last = _last_layer(g, split.branch)
    conv_branch = last is not None and last.op_type in _CONVOLUTIONS
    if not conv_branch:
        r.residual_not_conv.append(name)
    int8_conv = conv_branch and g.quantized(g.activation_input(last))
    int8_around = (any(_quantized_downstream(g, t, _SHAPE_ONLY) for t in split[:2])
                   or _quantized_downstream(g, node.output[0], _FUSED_AFTER_ADD))
    if not (branch_q or shortcut_q) and int8_conv and int8_around:
        r.hazards["unquantized_shortcut"].append(name)
    if branch_q and conv_branch and (shortcut_q or not split.tie):
        r.hazards["quantized_branch"].append(name)


def check(model: onnx.ModelProto, path: str = "") -> Readiness:
    g = Graph(model)
    r = Readiness(path)
    for layer in ineligible(model):
        r.fp8_ineligible.append(str(layer))
        node = next(n for i, n in enumerate(g.nodes) if _name(n, i) == layer.node)
        if any(fp8_quantized(g, i) for i in node.input[:2] if not g.is_weight(i)):
            r.hazards["fp8_ineligible"].append(str(layer))
    for index, node in enumerate(g.nodes):
        name = _name(node, index)
        if g.weighted(node):
            (r.weighted_quantized if g.quantized(g.activation_input(node)) else r.weighted_float).append(name)
        elif node.op_type == "MatMul":
            quantized = all(g.quantized(i) for i in node.input[:2])
            (r.matmul_quantized if quantized else r.matmul_float).append(name)
        elif node.op_type == "Add" and (split := residual_sides(g, node)):
            _residual(g, r, node, name, split)
        elif node.op_type == "Concat":
            scales = [g.dq_scale(i) for i in node.input if g.quantized(i)]
            scales += [g.const(c.input[1]) for c in g.consumers.get(node.output[0], [])
                       if c.op_type == QUANTIZE and len(c.input) > 1]
            scales = [s for s in scales if s is not None]
            if any(s.shape != scales[0].shape or not np.array_equal(s, scales[0]) for s in scales[1:]):
                r.hazards["concat_scales"].append(name)
        elif node.op_type in (QUANTIZE, DEQUANTIZE):
            scale = g.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
            if scale is None or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
                r.hazards["bad_scale"].append(name)
            zero = g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            if zero is not None and np.any(zero != 0):
                r.hazards["zero_point"].append(name)
            if node.op_type == QUANTIZE and g.op_of(node.input[0]) == "Pad" and any(
                    dq.op_type == DEQUANTIZE and any(c.op_type in ("Conv", "ConvTranspose")
                                                     for c in g.consumers.get(dq.output[0], []))
                    for dq in g.consumers.get(node.output[0], [])):
                r.hazards["pad_qdq_conv"].append(name)
    return r


def inspect_file(path: Path) -> Readiness:
    from harness.fileio import read_user_onnx

    model = read_user_onnx(path, "MODEL", "export one with harness export --precision int8")
    return check(model, str(path))
