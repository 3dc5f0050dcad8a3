"""One verified ONNX per precision: the float graph as exported, or a converted/quantized variant."""

from __future__ import annotations

from pathlib import Path

from harness.data.datasets import SyntheticDataset
from harness.errors import HarnessError
from harness.export.onnx_export import export_onnx
from harness.models.registry import ModelSpec, load_model


def export_variant(spec: ModelSpec, precision: str, out: Path, quant: dict | None = None) -> Path:
    sample, _ = SyntheticDataset(spec).take("val", 2)
    if precision == "fp32" and quant is None:
        return export_onnx(load_model(spec), sample, out)
    raise HarnessError(f"precision {precision} export is not available yet; use --precision fp32")
