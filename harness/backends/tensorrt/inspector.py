"""The engine inspector's JSON as a per-layer table, and why an INT8 or FP8 engine is not faster than planned.

TensorRT 10.x writes `Bindings` (names) and one `Format/Datatype` string per tensor; 11.x writes
`I/O Tensors` (objects) and separate `Format` and `DataType` fields. Both are read here. Layers map back to
ONNX nodes through their `Metadata` (`[ONNX Layer: name]`, several when fused) or their fused name
(`a + b`). With the Q/DQ ONNX the engine was built from, each layer also shows the precision its Q/DQ plan meant
(`intended`: INT8 or FP8, from the DequantizeLinear before a weighted node) beside what it runs in.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from harness.errors import HarnessError
from harness.fileio import read_user_text

# Longest names first so "BFloat16" is not read as "Float" and "UInt8" not as "Int8".
_PRECISIONS = [("BFloat16", "BF16"), ("BF16", "BF16"), ("FP8", "FP8"), ("UInt8", "UINT8"),
               ("Int8", "INT8"), ("INT8", "INT8"), ("Half", "FP16"), ("FP16", "FP16"), ("Float", "FP32"),
               ("FP32", "FP32"), ("Int32", "INT32"), ("INT32", "INT32"), ("Int64", "INT64"),
               ("INT64", "INT64"), ("Bool", "BOOL"), ("BOOL", "BOOL")]
_PRECISION_RE = re.compile(r"\b(" + "|".join(re.escape(k) for k, _ in _PRECISIONS) + r")\b")
_PRECISION_OF = dict(_PRECISIONS)
_ONNX_LAYER_RE = re.compile(r"\[ONNX Layer: ([^\]]+)\]")
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
COLUMNS = ["name", "type", "intended", "input_precision", "output_precision", "tactic", "onnx_nodes", "origin"]
INT8_CAUSES = ("known causes: a residual Add whose shortcut input is not quantized (the Conv+Add fusion then "
               "stays FP16/FP32), one tensor with several scales (Concat, MaxPool, a block input feeding "
               "conv1 and the shortcut), or a Q/DQ between Pad and Conv")
FP8_CAUSES = ("known causes: a layer TensorRT has no FP8 kernel for (harness inspect names them: 3-channel stems, "
              "filters over 32 taps, grouped/depthwise convolutions, 16 channels or fewer, GEMMs with K or N under "
              "16), a GPU below compute capability 8.9, and the INT8 causes above")


def parse_engine_information(data: str | dict, source: str = "engine inspector JSON") -> dict:
    """Validate the inspector's JSON: layers must be objects, which needs DETAILED profiling verbosity."""
    try:
        info = json.loads(data) if isinstance(data, str) else data
    except ValueError as exc:
        raise HarnessError(f"{source}: not JSON ({exc}); give the engine inspector's JSON output") from exc
    layers = info.get("Layers") if isinstance(info, dict) else None
    if not isinstance(layers, list):
        raise HarnessError(f"{source}: no 'Layers' list; give the engine inspector's JSON "
                           "(trtexec --exportLayerInfo, or harness inspect-engine's saved JSON)")
    if layers and not isinstance(layers[0], dict):
        raise HarnessError(f"{source}: only layer names are recorded; rebuild the engine with profiling "
                           "verbosity DETAILED (harness build-engine does) to see precisions and tactics")
    return info


def load_engine_information(path: Path) -> dict:
    text = read_user_text(path, "--layer-info", "give the JSON trtexec --exportLayerInfo wrote")
    return parse_engine_information(text, f"--layer-info {path}")


def layout(info: dict) -> str:
    return "11.x" if "I/O Tensors" in info else "10.x"


def io_tensor_names(info: dict) -> list[str]:
    if "I/O Tensors" in info:
        return [t["Name"] for t in info["I/O Tensors"]]
    return list(info.get("Bindings", []))


def tensor_precision(tensor: dict) -> str:
    """FP32/FP16/INT8/... from a 10.x `Format/Datatype` string or an 11.x `DataType` field."""
    text = tensor.get("DataType") or tensor.get("Datatype") or tensor.get("Format/Datatype") or ""
    match = _PRECISION_RE.search(str(text).replace(".", ""))
    return _PRECISION_OF[match.group(1)] if match else "?"


def _precisions(tensors: list[dict]) -> str:
    return "/".join(dict.fromkeys(tensor_precision(t) for t in tensors)) if tensors else ""


def onnx_nodes(layer: dict) -> list[str]:
    found = _ONNX_LAYER_RE.findall(str(layer.get("Metadata", "")))
    return [n.strip() for n in found] or [p.strip() for p in str(layer.get("Name", "")).split(" + ")]


def layer_table(info: dict, planned: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per engine layer: name, type, intended precision (from `planned`, ONNX node -> INT8/FP8), input and
    output precision, tactic, ONNX nodes it implements."""
    rows = []
    for layer in info["Layers"]:
        nodes = onnx_nodes(layer)
        rows.append({
            "name": layer.get("Name", ""),
            "type": layer.get("LayerType", ""),
            "intended": next((planned[n] for n in nodes if planned and n in planned), ""),
            "input_precision": _precisions(layer.get("Inputs", [])),
            "output_precision": _precisions(layer.get("Outputs", [])),
            "tactic": layer.get("TacticName") or layer.get("TacticValue") or "",
            "onnx_nodes": ";".join(nodes),
            "origin": layer.get("Origin", ""),
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def reformat_layers(table: pd.DataFrame) -> pd.DataFrame:
    """Layers that only convert layout or precision between two others: each one is time not computing."""
    mask = (table["type"] == "Reformat") | table["name"].str.startswith("Reformatting CopyNode")
    return table[mask]


def planned(onnx_path: Path) -> dict[str, str]:
    """Weighted ONNX node (Conv, ConvTranspose, Gemm, MatMul) whose data input comes from a DequantizeLinear ->
    the precision that plan means: FP8 for FP8 E4M3 Q/DQ, else INT8."""
    import onnx
    from google.protobuf.message import DecodeError

    from harness.quantize.fp8_rules import fp8_quantized
    from harness.quantize.onnx_graph import Graph

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except (OSError, DecodeError) as exc:
        raise HarnessError(f"--onnx {onnx_path}: cannot read it as ONNX ({type(exc).__name__})") from exc
    g = Graph(model)
    return {node.name: "FP8" if fp8_quantized(g, node.input[0]) else "INT8" for node in g.nodes
            if node.op_type in WEIGHTED_OPS and node.input and g.op_of(node.input[0]) == "DequantizeLinear"}


def shortfall(table: pd.DataFrame, planned: dict[str, str]) -> pd.DataFrame:
    """Planned INT8/FP8 nodes whose engine layer does not take that precision as input (or that no layer names)."""
    rows = []
    covering = [(set(row.onnx_nodes.split(";")), row) for row in table.itertuples()]
    for node, want in planned.items():
        layer = next((row for nodes, row in covering if node in nodes), None)
        if layer is None:
            rows.append({"onnx_node": node, "intended": want, "layer": "", "input_precision": "",
                         "output_precision": "", "tactic": "", "finding": "no engine layer names this node"})
            continue
        first = layer.input_precision.split("/")[0]
        if first != want:
            rows.append({"onnx_node": node, "intended": want, "layer": layer.name,
                         "input_precision": layer.input_precision, "output_precision": layer.output_precision,
                         "tactic": layer.tactic, "finding": f"planned {want}, runs with {first} input"})
    return pd.DataFrame(rows, columns=["onnx_node", "intended", "layer", "input_precision", "output_precision",
                                       "tactic", "finding"])


def summary(table: pd.DataFrame, planned: dict[str, str] | None) -> dict:
    """The figures inspect-engine prints and saves: per quantized type T planned, `T_planned`,
    `T_not_running_T` and `T_shortfall` (int8_* as before FP8 existed)."""
    first = table["input_precision"].str.split("/").str[0]
    out = {"layers": len(table), "layers_by_input_precision": {k: int(v) for k, v in first.value_counts().items()},
           "reformat_layers": len(reformat_layers(table))}
    if planned is not None:
        short = shortfall(table, planned)
        for want in sorted(set(planned.values())) or ["INT8"]:
            t = want.lower()
            mine = short[short["intended"] == want]
            out.update({f"{t}_planned": sum(v == want for v in planned.values()), f"{t}_not_running_{t}": len(mine),
                        f"{t}_shortfall": mine.drop(columns="intended").to_dict("records")})
    return out
