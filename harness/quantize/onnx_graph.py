"""Reading Q/DQ structure off an ONNX graph: producers, consumers, constant scales and zero-points."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import numpy_helper

QUANTIZE, DEQUANTIZE = "QuantizeLinear", "DequantizeLinear"


class Graph:
    """Index of one ONNX graph (nodes are in topological order, as onnx.checker requires)."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.nodes = list(model.graph.node)
        self.producer = {out: n for n in self.nodes for out in n.output if out}
        self.consumers: dict[str, list] = {}
        for n in self.nodes:
            for name in n.input:
                if name:
                    self.consumers.setdefault(name, []).append(n)
        self.order = {id(n): i for i, n in enumerate(self.nodes)}
        self.initializers = {t.name: t for t in model.graph.initializer}
        # Tensors that depend on no input data: constants, shapes and what is computed from them only (the
        # exporter's Shape -> Gather -> Concat -> Reshape chains). They are never a data path.
        self.static = set(self.initializers)
        for n in self.nodes:
            if n.op_type == "Shape" or all(i in self.static for i in n.input if i):
                self.static.update(o for o in n.output if o)

    def const(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant output (through Identity), else None."""
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
        if node is not None and node.op_type == "Identity":
            return self.const(node.input[0])
        return None

    def is_const(self, name: str) -> bool:
        return self.const(name) is not None

    def op_of(self, name: str) -> str | None:
        node = self.producer.get(name)
        return node.op_type if node is not None else None

    def dq_scale(self, name: str) -> np.ndarray | None:
        """The scale of the DequantizeLinear producing `name` (None when not quantized or not constant)."""
        node = self.producer.get(name)
        if node is None or node.op_type != DEQUANTIZE or len(node.input) < 2:
            return None
        return self.const(node.input[1])

    def quantized(self, name: str) -> bool:
        return self.op_of(name) == DEQUANTIZE

    def position(self, name: str) -> int:
        node = self.producer.get(name)
        return -1 if node is None else self.order[id(node)]

    def data_inputs(self, node) -> list[str]:
        return [i for i in node.input if i and i not in self.static]

    def inputs_of(self, name: str) -> list[str]:
        node = self.producer.get(name)
        return [] if node is None else self.data_inputs(node)

    def is_weight(self, name: str) -> bool:
        """A constant, possibly behind Q/DQ, Transpose or Reshape (how a quantized Linear's weight exports)."""
        while name not in self.static:
            node = self.producer.get(name)
            if node is None or node.op_type not in (QUANTIZE, DEQUANTIZE, "Transpose", "Reshape", "Identity", "Cast"):
                return False
            name = node.input[0]
        return True

    def weighted(self, node) -> bool:
        """Conv / ConvTranspose, or a Gemm / MatMul with a weight (not an attention MatMul of two activations)."""
        if node.op_type in ("Conv", "ConvTranspose"):
            return True
        return node.op_type in ("Gemm", "MatMul") and any(self.is_weight(i) for i in node.input[:2])

    def activation_input(self, node) -> str:
        """The input a weighted layer reads its activations from (the non-weight one)."""
        if node.op_type in ("Gemm", "MatMul") and self.is_weight(node.input[0]):
            return node.input[1]
        return node.input[0]


def _qdq_key(graph: Graph, node) -> tuple:
    values = tuple(graph.const(i).tobytes() if graph.is_const(i) else i for i in node.input[1:])
    attrs = tuple(sorted((a.name, onnx.helper.get_attribute_value(a)) for a in node.attribute))
    return (node.op_type, node.input[0], values, attrs)


def merge_duplicate_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """One Q/DQ pair per tensor and scale: a quantizer shared by several consumers is called once per consumer
    in PyTorch, which exports identical QuantizeLinear (then DequantizeLinear) nodes on the same tensor."""
    while True:
        graph = Graph(model)
        seen, rename, drop = {}, {}, set()
        for index, node in enumerate(graph.nodes):
            if node.op_type not in (QUANTIZE, DEQUANTIZE):
                continue
            key = _qdq_key(graph, node)
            if key in seen:
                rename[node.output[0]] = seen[key]
                drop.add(index)
            else:
                seen[key] = node.output[0]
        if not drop:
            return drop_unused(model)
        kept = []
        for index, node in enumerate(graph.nodes):
            if index not in drop:
                copy = onnx.NodeProto()
                copy.CopyFrom(node)
                copy.input[:] = [rename.get(name, name) for name in copy.input]
                kept.append(copy)
        del model.graph.node[:]
        model.graph.node.extend(kept)


def drop_unused(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove nodes whose outputs nobody reads (the constants of merged Q/DQ pairs), and unused initializers."""
    graph = model.graph
    wanted = {o.name for o in graph.output}
    kept = []
    for node in reversed(list(graph.node)):
        if any(o in wanted for o in node.output):
            kept.append(node)
            wanted.update(i for i in node.input if i)
    copies = []
    for node in reversed(kept):
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copies.append(copy)
    del graph.node[:]
    graph.node.extend(copies)
    inits = [t for t in graph.initializer if t.name in wanted]
    if len(inits) != len(graph.initializer):
        copies = []
        for t in inits:
            copies.append(onnx.TensorProto())
            copies[-1].CopyFrom(t)
        del graph.initializer[:]
        graph.initializer.extend(copies)
    return model


def with_outputs(model: onnx.ModelProto, tensors: Iterable[str]) -> onnx.ModelProto:
    """A copy whose graph outputs also include `tensors` (typed by shape inference, float where it cannot tell)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    try:
        inferred = onnx.shape_inference.infer_shapes(copy)
        types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    except Exception:  # shape inference gives up on some custom graphs; ORT still runs them typed as float
        types = {}
    for name in tensors:
        if name not in present:
            copy.graph.output.append(onnx.helper.make_tensor_value_info(
                name, types.get(name, onnx.TensorProto.FLOAT), None))
            present.add(name)
    return copy


_TOWARD_HEAD = {"Add", "Reshape", "Flatten", "Identity", "Cast", "Squeeze", "Unsqueeze", "Transpose"}


def head_input(model: onnx.ModelProto) -> str | None:
    """The tensor the last weighted layer before the first output reads (the features before a classifier head),
    taken before its Q/DQ; None when the output is not reached from a weighted layer through bias adds and
    reshapes alone."""
    graph = Graph(model)
    name = model.graph.output[0].name
    node = graph.producer.get(name)
    while node is not None and not graph.weighted(node):
        if node.op_type not in _TOWARD_HEAD:
            return None
        data = graph.data_inputs(node)
        node = graph.producer.get(data[0]) if len(data) == 1 else None
    if node is None:
        return None
    tensor = graph.activation_input(node)
    dq = graph.producer.get(tensor)
    if dq is not None and dq.op_type == DEQUANTIZE and graph.op_of(dq.input[0]) == QUANTIZE:
        tensor = graph.producer[dq.input[0]].input[0]
    return tensor
