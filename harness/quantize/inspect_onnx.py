"""TensorRT-readiness of a Q/DQ ONNX, read from the file alone.

Checks the placements that decide whether TensorRT can fuse in INT8: inputs of weighted layers quantized,
residual Adds quantized on the shortcut and not on the conv branch (walk back from both inputs to their lowest
common ancestor: the side with more weighted layers is the branch), one scale across a Concat, no Q/DQ
between Pad and Conv, and every scale present, positive and every zero-point 0 (symmetric INT8).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from harness.errors import HarnessError
from harness.quantize.onnx_graph import DEQUANTIZE, QUANTIZE, WEIGHTED, Graph
from harness.quantize.residual_split import split_residual

_PASS_THROUGH = {"BatchNormalization", "Relu", "Identity", "Cast", "Clip", "LeakyRelu", "Sigmoid", "Mul", "Add"}

HAZARDS = {
    "unquantized_shortcut": "residual Adds without a quantized shortcut (INT8 branch)",
    "quantized_branch": "quantized conv-branch inputs",
    "concat_scales": "Concat inputs with different scales",
    "pad_qdq_conv": "Q/DQ between Pad and Conv",
    "bad_scale": "missing or zero scales",
    "zero_point": "non-zero zero-points",
}


@dataclass
class Readiness:
    path: str
    weighted_quantized: list[str] = field(default_factory=list)
    weighted_float: list[str] = field(default_factory=list)
    residual_quantized: list[str] = field(default_factory=list)
    residual_float: list[str] = field(default_factory=list)
    hazards: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in HAZARDS})

    @property
    def hazard_count(self) -> int:
        return sum(len(v) for v in self.hazards.values())

    def rows(self) -> list[tuple[str, int, str]]:
        info = [("weighted layers with quantized inputs", self.weighted_quantized),
                ("weighted layers without quantized inputs", self.weighted_float),
                ("residual Adds with a quantized shortcut", self.residual_quantized),
                ("residual Adds without a quantized shortcut", self.residual_float)]
        rows = [(label, len(names), "info") for label, names in info]
        rows += [(HAZARDS[k], len(v), "HAZARD" if v else "ok") for k, v in self.hazards.items()]
        return rows

    def to_dict(self) -> dict:
        return {**asdict(self), "hazard_count": self.hazard_count}


def _name(node, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


def residual_sides(g: Graph, node) -> tuple[str, str] | None:
    """(branch, shortcut) tensors of a two-input Add whose inputs share an ancestor, else None."""
    inputs = [i for i in node.input if i and not g.is_const(i)]
    if node.op_type != "Add" or len(inputs) != 2:
        return None
    return split_residual(*inputs, parents=g.inputs_of, position=g.position,
                          weight=lambda tensor: int(g.producer[tensor].op_type in WEIGHTED))


def _branch_int8(g: Graph, tensor: str) -> bool:
    """Whether the weighted layer ending a conv branch reads a quantized input (so it runs in INT8)."""
    while True:
        node = g.producer.get(tensor)
        if node is None:
            return False
        if node.op_type in WEIGHTED:
            return g.quantized(node.input[0])
        if node.op_type not in _PASS_THROUGH:
            return False
        data = [i for i in node.input if i and not g.is_const(i)]
        if len(data) != 1:
            return False
        tensor = data[0]


def check(model: onnx.ModelProto, path: str = "") -> Readiness:
    g = Graph(model)
    r = Readiness(path)
    for index, node in enumerate(g.nodes):
        name = _name(node, index)
        if node.op_type in WEIGHTED:
            (r.weighted_quantized if g.quantized(node.input[0]) else r.weighted_float).append(name)
        elif node.op_type == "Add" and (sides := residual_sides(g, node)):
            branch, shortcut = sides
            (r.residual_quantized if g.quantized(shortcut) else r.residual_float).append(name)
            if not g.quantized(shortcut) and _branch_int8(g, branch):
                r.hazards["unquantized_shortcut"].append(name)
            if g.quantized(branch):
                r.hazards["quantized_branch"].append(name)
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
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{path}: no such file; export one with harness export --precision int8")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and others
        raise HarnessError(f"{path}: not an ONNX model ({type(exc).__name__})") from exc
    return check(model, str(path))
