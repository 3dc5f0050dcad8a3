"""One verified ONNX per precision: the float graph as exported, or a converted/quantized variant.

fp32: the float model. fp16: the same graph cast to FP16 at the ONNX level (FP32 inputs/outputs kept).
int8: the calibrated fake-quant model exported with QuantizeLinear/DequantizeLinear (zero-points 0,
per-channel weights on the output-channel axis) at QDQ_OPSET. int8-fp16: that graph with its float parts
(scales included) in FP16. With the modelopt tool, NVIDIA Model Optimizer quantizes the fp32 ONNX instead
(harness.export.modelopt_ptq). Every file is checked by onnx.checker and against PyTorch before it is kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import torch

from harness.backends.base import PRECISIONS
from harness.data.datasets import SyntheticDataset
from harness.errors import HarnessError
from harness.export.onnx_export import compare_outputs, export_onnx, run_onnx
from harness.export.precision import FP16_QDQ_OPSET, to_fp16
from harness.fileio import atomic_write
from harness.models.registry import ModelSpec, load_model
from harness.quantize.config import QuantConfig
from harness.quantize.onnx_graph import merge_duplicate_qdq

QDQ_OPSET = FP16_QDQ_OPSET  # >= 13 for per-channel axis, >= 19 for FP16 into QuantizeLinear: one opset for both
# (rtol relative to the output range, atol): FP16 rounding, and INT8 rounding ties that ORT and torch may break
# differently (x / scale vs x * (1 / scale)), move outputs by more than FP32 noise.
TOLERANCE = {"fp32": (1e-3, 1e-4), "fp16": (1e-2, 1e-3), "int8": (5e-2, 1e-3), "int8-fp16": (1e-1, 1e-3)}


def engines_dir_for(out: Path) -> Path:
    """The cache root of an ONNX in <engines>/onnx; for a file written elsewhere, engines/."""
    from harness.build import ENGINES_DIR

    out = Path(out)
    return out.parent.parent if out.parent.name == "onnx" else ENGINES_DIR


def calib_dir_for(out: Path) -> Path:
    """Calibration cache beside the ONNX cache (<engines>/onnx -> <engines>/calib), else engines/calib."""
    return engines_dir_for(out) / "calib"


def check_request(precision: str, quant: dict | None) -> None:
    if precision not in PRECISIONS:
        raise HarnessError(f"--precision {precision} is unknown: use one of {', '.join(PRECISIONS)}")
    if precision.startswith("int8") and quant is None:
        raise HarnessError(f"--precision {precision} needs calibration: pass --quant FILE (from harness quantize) "
                           "or --mode/--calib")
    if not precision.startswith("int8") and quant is not None:
        raise HarnessError(f"--precision {precision} is a float precision: --quant/--mode/--calib apply to int8 and "
                           "int8-fp16 only")


def export_variant(spec: ModelSpec, precision: str, out: Path, quant: dict | None = None,
                   calib_dir: Path | None = None, log=None) -> Path:
    """Either tool's Q/DQ ONNX goes through the same readiness check before its outputs are checked and it is
    kept."""
    check_request(precision, quant)
    sample, _ = SyntheticDataset(spec).take("val", 2)
    out = Path(out)
    if precision == "fp32":
        return export_onnx(load_model(spec), sample, out)
    modelopt = quant is not None and quant.get("tool") == "modelopt"
    if modelopt:
        from harness.export.modelopt_ptq import check_against_fp32, modelopt_qdq

        cfg = QuantConfig.from_dict(quant)
        proto = modelopt_qdq(spec, precision, cfg, engines_dir_for(out), log)
    else:
        proto, expected = _pq_variant(spec, precision, quant, sample, out, calib_dir or calib_dir_for(out), log)
    if quant is not None:
        proto = _checked_qdq(proto)
    data = proto.SerializeToString()
    if modelopt:
        check_against_fp32(spec, data, cfg, log)  # interim, until one verifier serves both tools
    else:
        rtol, atol = TOLERANCE[precision]
        compare_outputs(expected, run_onnx(data, sample), rtol, atol, what=f"{precision} ONNX Runtime vs PyTorch")
    atomic_write(out, data)
    return out


def _pq_variant(spec: ModelSpec, precision: str, quant: dict | None, sample: np.ndarray, out: Path,
                calib_dir: Path, log) -> tuple[onnx.ModelProto, np.ndarray]:
    """(ONNX in `precision`, PyTorch's outputs on `sample`): the float model, or pytorch-quantization's
    calibrated fake-quant model exported with Q/DQ, one Q/DQ per tensor."""
    rtol, atol = TOLERANCE[precision]
    raw = out.with_name(f"{out.name}.{os.getpid()}.raw.onnx")
    try:
        if quant is not None:
            from harness.quantize.calibrate import check_calibrated
            from harness.quantize.checkpoint import quantized
            from harness.quantize.modules import fb_fake_quant

            model = quantized(spec, quant, calib_dir, log).model.eval()
            check_calibrated(model)
            with fb_fake_quant(), torch.no_grad():
                export_onnx(model, sample, raw, opset=QDQ_OPSET, rtol=rtol, atol=atol)
                expected = model(torch.from_numpy(sample)).numpy()
        else:
            model = load_model(spec)
            export_onnx(model, sample, raw)
            with torch.no_grad():
                expected = model(torch.from_numpy(sample)).numpy()
        proto = onnx.load(str(raw))
    finally:
        raw.unlink(missing_ok=True)
    if quant is not None:
        proto = merge_duplicate_qdq(proto)
    if precision.endswith("fp16"):
        proto = to_fp16(proto)
    return proto, expected


def _checked_qdq(proto: onnx.ModelProto) -> onnx.ModelProto:
    """No Q/DQ TensorRT would refuse (missing or zero scale, non-zero zero-point), whichever tool placed them."""
    from harness.quantize.inspect_onnx import check

    hazards = check(proto).hazards
    for kind, what in (("bad_scale", "a missing or zero scale"), ("zero_point", "a non-zero zero-point")):
        if hazards[kind]:
            raise HarnessError(f"the exported Q/DQ graph has {what} at {hazards[kind][0]}; the file was not kept")
    return proto
