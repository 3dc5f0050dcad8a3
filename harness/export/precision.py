"""Explicit precision at the ONNX level: TensorRT 11 builds strongly typed networks, so FP16/BF16 is in the file.

NVIDIA Model Optimizer's AutoCast casts the graph (`convert_to_mixed_precision`; for a Q/DQ graph it gives what
`convert_to_f16`, ModelOpt's own cast after quantization, gives, and it also takes a node-level keep-FP32 list).
Graph inputs and outputs stay FP32 (a Cast at each end), so callers feed and read the same arrays as before.
What stays FP32, and why, is returned and written to the export's sidecar:
- data_max (AutoCast's rule, applied on harness's own reference run of the inputs given): a node whose inputs or
  outputs reach |x| > FP16_DATA_MAX would overflow FP16 on inputs a little larger; BF16 has FP32's range;
- what AutoCast itself keeps (initializers beyond FP16's range, ops without a low-precision form).

ONNX Runtime's CPU provider has no BF16 kernels (not even Add, Conv or MatMul; Cast to and from BF16 it has), so
a BF16 file is run through `emulate_bf16`: the same graph in FP32 with every BF16 tensor rounded to BF16.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from harness.errors import HarnessError

FP16_QDQ_OPSET = 19  # QuantizeLinear takes FP16 input (and FP16 scales) from opset 19
FP16_MAX = float(np.finfo(np.float16).max)
# A node whose values on the reference inputs come within a factor 8 of FP16's largest value (65504) stays FP32:
# other inputs may be larger than the reference ones. (AutoCast's own default, 512, keeps FP16's error below 0.5 in
# the last place, an accuracy choice that leaves trained transformers largely in FP32; harness keeps out overflow.)
FP16_DATA_MAX = 8192.0
LOW = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}


@dataclass
class Cast:
    """The cast model and the nodes left in FP32, each with why."""

    model: onnx.ModelProto
    kept_fp32: dict[str, str] = field(default_factory=dict)


def overflowing(model: onnx.ModelProto, x: np.ndarray, data_max: float) -> dict[str, float]:
    """Node -> the largest |value| among its float inputs and outputs, for nodes above `data_max` on `x` (the file
    run as written, harness.backends.cpu.reference_session)."""
    from harness.backends.cpu import reference_session
    from harness.quantize.onnx_graph import with_outputs

    names = [o for n in model.graph.node for o in n.output if o]
    wide = with_outputs(model, names)
    session = reference_session(wide.SerializeToString())  # part of the cast, not of the export check
    values = dict(zip([o.name for o in wide.graph.output], session.run(None, {session.get_inputs()[0].name: x}),
                      strict=True))
    values[model.graph.input[0].name] = x
    found = {}
    for node in (n for n in model.graph.node if n.op_type != "Constant"):  # constants: AutoCast's init_max rule
        peaks = [float(np.abs(values[t]).max()) for t in [*node.input, *node.output]
                 if t in values and values[t].size and values[t].dtype.kind == "f"]
        if peaks and max(peaks) > data_max:
            found[node.name] = max(peaks)
    return found


@contextlib.contextmanager
def _quiet():
    """AutoCast logs every step, and onnx-graphsurgeon prints warnings: kept out of harness's output."""
    loggers = [logging.getLogger(name) for name in ("modelopt.onnx", "modelopt.onnx.autocast")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _autocast():
    try:
        from modelopt.onnx.autocast import convert_to_mixed_precision
    except ImportError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HarnessError(f"FP16/BF16 casting uses NVIDIA Model Optimizer's AutoCast, which cannot be imported "
                           f"({reason}): install harness again with pip install -e .") from exc
    return convert_to_mixed_precision


def low_precision_nodes(model: onnx.ModelProto) -> dict[str, int]:
    """Node -> the element type of its first float output (FLOAT, FLOAT16 or BFLOAT16), by type inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in
             [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]}
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16)
    out = {}
    for node in inferred.graph.node:
        kinds = [types[o] for o in node.output if types.get(o) in floats]
        if kinds:
            out[node.name] = kinds[0]
    return out


def cast(model: onnx.ModelProto, precision: str, x: np.ndarray | None = None) -> Cast:
    """A copy of `model` computing in `precision` (fp16 or bf16) but for the nodes it keeps in FP32 (see the
    module's docstring); `x` are the reference inputs of the data_max rule (FP16; none given: not applied)."""
    from harness.quantize.onnx_graph import QUANTIZE

    if precision not in LOW:
        raise HarnessError(f"cannot cast to {precision}: use one of {', '.join(LOW)}")
    has_qdq = any(n.op_type == QUANTIZE for n in model.graph.node)
    if has_qdq and _opset(model) < FP16_QDQ_OPSET:
        raise HarnessError(f"{precision.upper()} inputs to QuantizeLinear need opset >= {FP16_QDQ_OPSET}; this model "
                           f"is opset {_opset(model)}: export it at {FP16_QDQ_OPSET}")
    named = _named(model)
    hot = overflowing(named, x, FP16_DATA_MAX) if precision == "fp16" and x is not None else {}
    convert = _autocast()
    with tempfile.TemporaryDirectory(prefix="harness-autocast-") as tmp, _quiet():
        src = Path(tmp) / "model.onnx"
        onnx.save(named, str(src))
        try:
            out = convert(str(src), low_precision_type=precision, keep_io_types=True, data_max=np.inf,
                          init_max=FP16_MAX if precision == "fp16" else np.inf,
                          nodes_to_exclude=[f"^{re.escape(name)}$" for name in hot],
                          opset=max(_opset(named), FP16_QDQ_OPSET) if has_qdq else None)
        except Exception as exc:  # AutoCast raises assertion, value and ONNX errors alike
            raise HarnessError(f"AutoCast cannot cast the graph to {precision}: {type(exc).__name__}: "
                               f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from exc
    kept = {name: f"|x| reaches {peak:.4g} > {FP16_DATA_MAX:g} on the reference inputs (FP16 overflows at "
                  f"{FP16_MAX:g})" for name, peak in hot.items()}
    original = {n.name for n in named.graph.node if n.op_type != "Constant"}  # a constant follows its reader
    for name, kind in low_precision_nodes(out).items():
        if kind == TensorProto.FLOAT and name in original and name not in kept:
            kept[name] = "kept by AutoCast (an initializer beyond FP16's range, or no low-precision form)"
    try:
        onnx.checker.check_model(out, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise HarnessError(f"the {precision.upper()} model fails onnx.checker: {str(exc).splitlines()[0]}") from exc
    return Cast(out, {name: kept[name] for name in [n.name for n in named.graph.node] if name in kept})


def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose every node has a unique name (AutoCast and the keep-FP32 list address nodes by name)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    seen: set[str] = set()
    for index, node in enumerate(out.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.name or node.op_type}_{index}"
        seen.add(node.name)
    return out


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def holds_bf16(model: onnx.ModelProto) -> bool:
    return any(t.data_type == TensorProto.BFLOAT16 for t in model.graph.initializer) or any(
        a.name == "to" and a.i == TensorProto.BFLOAT16 for n in model.graph.node for a in n.attribute)


def emulate_bf16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The BF16 graph as ONNX Runtime's CPU provider can run it: FP32 throughout, every BF16 tensor rounded to BF16
    (a Cast to BF16 and back after each node that outputs BF16, BF16 constants widened exactly). Each op then
    computes in FP32 on BF16 values and its result is rounded to BF16, as TensorRT's BF16 layers do (FP32
    accumulation); only the order of additions differs."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.output]}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    for i, t in enumerate(graph.initializer):
        if t.data_type == TensorProto.BFLOAT16:
            graph.initializer[i].CopyFrom(numpy_helper.from_array(_bf16_values(t), t.name))
    nodes = []
    for node in graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        for attr in copy.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.BFLOAT16:
                attr.t.CopyFrom(numpy_helper.from_array(_bf16_values(attr.t), attr.t.name))
            if copy.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.BFLOAT16:
                attr.i = TensorProto.FLOAT
        nodes.append(copy)
        for j, name in enumerate(copy.output):
            if types.get(name) == TensorProto.BFLOAT16:
                wide = f"{name}__fp32"
                copy.output[j] = wide
                nodes += [helper.make_node("Cast", [wide], [f"{name}__bf16"], to=TensorProto.BFLOAT16),
                          helper.make_node("Cast", [f"{name}__bf16"], [name], to=TensorProto.FLOAT)]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    for value in [*graph.input, *graph.output]:
        if value.type.tensor_type.elem_type == TensorProto.BFLOAT16:
            raise HarnessError(f"{value.name}: a BF16 graph input or output cannot be emulated; export with FP32 I/O")
    return out


def _bf16_values(t: onnx.TensorProto) -> np.ndarray:
    return numpy_helper.to_array(t).astype(np.float32)
