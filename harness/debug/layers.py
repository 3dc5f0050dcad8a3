"""Per-layer divergence between a float ONNX and a quantized one of the same model, in graph order.

Every layer's output tensor is exposed (as an extra graph output on the CPU reference, as a debug tensor on
TensorRT) and matched across the two files by the layer that produces it, not by tensor name: inserting Q/DQ
renames tensors, and one export folds a BatchNorm into its Conv where another keeps it (the Conv's row then reads
the BatchNorm's output). Layers are matched by node name, then, for what is left, by position among the layers of
the same operator; what has no counterpart is listed as such.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from harness.quantize.onnx_graph import DEQUANTIZE, QUANTIZE, Graph, with_outputs

PASS_THROUGH = {QUANTIZE, DEQUANTIZE, "Constant", "Identity", "Shape", "Cast"}  # they move or re-encode values
FOLDED = "BatchNormalization"  # a Conv/Gemm's own BatchNorm, folded into it by some exports
INPUT = "input:"  # the key of a graph input, as a layer's input
SQNR_CAP = 200.0  # dB; identical tensors read as this in plots and drops


@dataclass
class Layer:
    """A layer as one file has it: its node's name, operator, the tensor it produces, and the layers it reads."""

    key: str
    op: str
    tensor: str
    inputs: list[str] = field(default_factory=list)  # keys of the layers whose outputs it reads


def module_name(node_name: str) -> str:
    """'/layer1/layer1.0/conv1/Conv' -> 'layer1.0.conv1': the PyTorch module the exporter's scope names."""
    path: list[str] = []
    for part in [p for p in node_name.split("/") if p][:-1]:
        if path and part.startswith(path[-1] + "."):  # a container's child is scoped 'layer1' then 'layer1.0'
            path[-1] = part
        else:
            path.append(part)
    return ".".join(path)


def layers_of(model: onnx.ModelProto) -> list[Layer]:
    """The layers of a graph in topological order; Q/DQ and constants are skipped, a Conv's own BN absorbed."""
    graph = Graph(model)
    # tensor -> key of the layer that produced it (through pass-through nodes); graph inputs by position
    owner = {vi.name: f"{INPUT}{i}" for i, vi in enumerate(v for v in model.graph.input if v.name not in graph.static)}
    layers: list[Layer] = []
    absorbed: set[int] = set()
    for index, node in enumerate(graph.nodes):
        outputs = [o for o in node.output if o and o not in graph.static]
        if not outputs or index in absorbed:
            continue
        if node.op_type in PASS_THROUGH:
            source = next((owner[i] for i in graph.data_inputs(node) if i in owner), None)
            if source is not None:
                owner.update(dict.fromkeys(outputs, source))
            continue
        key = node.name or f"{node.op_type}:{outputs[0]}"
        tensor = outputs[0]
        readers = graph.consumers.get(tensor, [])
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") and len(readers) == 1 \
                and readers[0].op_type == FOLDED:
            absorbed.add(graph.order[id(readers[0])])
            tensor = readers[0].output[0]
        reads = [owner[i] for i in graph.data_inputs(node) if i in owner]
        layers.append(Layer(key, node.op_type, tensor, list(dict.fromkeys(reads))))
        owner.update(dict.fromkeys([*outputs, tensor], key))
    return layers


def match(float_layers: list[Layer], quant_layers: list[Layer]) -> list[tuple[Layer | None, Layer | None]]:
    """Pairs in the float file's order (then the quantized file's leftovers): by node name where both files have
    it, else the quantized layer of the same operator reading the counterparts of the float layer's inputs."""
    left = {q.key: q for q in quant_layers}
    counterpart: dict[str, str] = {}
    rows: list[tuple[Layer | None, Layer | None]] = []
    for f in float_layers:
        q = left.get(f.key)
        if q is None or q.op != f.op:
            want = sorted(i if i.startswith(INPUT) else counterpart.get(i, "?") for i in f.inputs)  # inputs by position
            q = next((c for c in left.values() if c.op == f.op and sorted(c.inputs) == want), None)
        if q is not None:
            del left[q.key]
            counterpart[f.key] = q.key
        rows.append((f, q))
    return rows + [(None, q) for q in left.values()]


@dataclass
class LayerRow:
    """One layer's divergence: the quantized file's tensor against the float file's, over all inputs."""

    layer: str  # the PyTorch module (or node name) and operator
    op: str
    float_tensor: str | None
    quant_tensor: str | None
    sqnr_db: float | None = None
    cosine: float | None = None
    max_abs: float | None = None
    drop_db: float | None = None  # SQNR lost in this layer: the worst of its inputs' SQNR minus its own
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class _Sums:
    """Running sums over batches, so no layer's whole tensor for every input is held at once."""

    def __init__(self):
        self.ref2 = self.noise2 = self.dot = self.test2 = self.max_abs = 0.0
        self.shape: tuple | None = None

    def add(self, ref: np.ndarray, test: np.ndarray) -> None:
        r, t = ref.astype(np.float64).ravel(), test.astype(np.float64).ravel()
        self.ref2 += float(r @ r)
        self.test2 += float(t @ t)
        self.dot += float(r @ t)
        self.noise2 += float(((r - t) ** 2).sum())
        self.max_abs = max(self.max_abs, float(np.abs(r - t).max(initial=0.0)))

    def sqnr(self) -> float:
        if self.noise2 == 0.0:
            return float("inf")
        return 10.0 * float(np.log10(self.ref2 / self.noise2)) if self.ref2 > 0 else float("-inf")

    def cosine(self) -> float:
        norm = float(np.sqrt(self.ref2 * self.test2))
        return self.dot / norm if norm > 0 else (1.0 if self.noise2 == 0 else 0.0)


def onnx_tensors(model: onnx.ModelProto, tensors: list[str]) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """A function from an input batch to the named intermediate tensors, on the CPU reference."""
    from harness.export.onnx_export import run_onnx_outputs

    exposed = with_outputs(model, tensors).SerializeToString()
    names = [o.name for o in onnx.load_from_string(exposed).graph.output]

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(names, run_onnx_outputs(exposed, x), strict=True))

    return run


def divergence(float_model: onnx.ModelProto, quant_model: onnx.ModelProto, x: np.ndarray,
               quant_tensors: Callable | None = None, batch: int = 16) -> list[LayerRow]:
    """The per-layer table; `quant_tensors` runs the quantized side (default: the CPU reference; TensorRT's debug
    tensors on a GPU), and gets the tensor names to return."""
    pairs = match(layers_of(float_model), layers_of(quant_model))
    both = [(f, q) for f, q in pairs if f and q]
    run_f = onnx_tensors(float_model, [f.tensor for f, _ in both])
    run_q = (quant_tensors or (lambda names: onnx_tensors(quant_model, names)))([q.tensor for _, q in both])
    sums = {f.key: _Sums() for f, _ in both}
    shape_note: dict[str, str] = {}
    for start in range(0, len(x), batch):
        chunk = x[start : start + batch]
        outs_f, outs_q = run_f(chunk), run_q(chunk)
        for f, q in both:
            a, b = outs_f.get(f.tensor), outs_q.get(q.tensor)
            if a is None or b is None:
                shape_note[f.key] = "not exposed by the backend (fused away)"
            elif a.shape != b.shape:
                shape_note[f.key] = f"shapes differ: {a.shape} vs {b.shape}"
            else:
                sums[f.key].add(a, b)
    rows, sqnr_of = [], {}
    for f, q in pairs:
        layer = f or q
        name = f"{(module_name(layer.key) if layer.key.startswith('/') else '') or layer.key.strip('/')} ({layer.op})"
        row = LayerRow(name, layer.op, f.tensor if f else None, q.tensor if q else None)
        if f is None or q is None:
            row.note = "no counterpart in the float file" if f is None else "no counterpart in the quantized file"
        elif f.key in shape_note:
            row.note = shape_note[f.key]
        else:
            s = sums[f.key]
            row.sqnr_db, row.cosine, row.max_abs = s.sqnr(), s.cosine(), s.max_abs
            sqnr_of[f.key] = min(row.sqnr_db, SQNR_CAP)
            fed = [sqnr_of[k] for k in f.inputs if k in sqnr_of]
            if fed:
                row.drop_db = min(fed) - sqnr_of[f.key]
        rows.append(row)
    return rows


def first_below(rows: list[LayerRow], min_sqnr: float) -> LayerRow | None:
    return next((r for r in rows if r.sqnr_db is not None and r.sqnr_db < min_sqnr), None)


def largest_drop(rows: list[LayerRow]) -> LayerRow | None:
    dropped = [r for r in rows if r.drop_db is not None]
    return max(dropped, key=lambda r: r.drop_db) if dropped else None


def sqnr_plot(rows: list[LayerRow], path: Path, min_sqnr: float | None, title: str) -> Path:
    """SQNR of every matched layer along the depth of the network, with the threshold."""
    from harness.fileio import atomic_write
    from harness.report.png import png, pyplot

    scored = [(i, r) for i, r in enumerate(rows) if r.sqnr_db is not None]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(rows) + 2), 4.2))
    ax.plot([i for i, _ in scored], [min(r.sqnr_db, SQNR_CAP) for _, r in scored], "o-", ms=4)
    if min_sqnr is not None:
        ax.axhline(min_sqnr, color="tab:red", lw=1, ls="--", label=f"--min-sqnr {min_sqnr:g} dB")
        ax.legend(fontsize=8)
    ax.set_xticks([i for i, _ in scored], [r.layer for _, r in scored], rotation=75, fontsize=6, ha="right")
    ax.set_ylabel("SQNR against the float file (dB)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    return atomic_write(Path(path), png(fig))
