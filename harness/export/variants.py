"""One verified ONNX per precision: the float graph as exported, or a converted/quantized variant.

fp32: the float model. fp16: the same graph cast to FP16 at the ONNX level (FP32 inputs/outputs kept).
int8: the calibrated fake-quant model exported with QuantizeLinear/DequantizeLinear (zero-points 0,
per-channel weights on the output-channel axis) at QDQ_OPSET. int8-fp16: that graph with its float parts
(scales included) in FP16. With the modelopt tool, NVIDIA Model Optimizer quantizes the fp32 ONNX instead
(harness.export.modelopt_ptq). Every file is checked by onnx.checker and harness.export.verify before it is kept.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import torch

from harness.backends.base import PRECISIONS
from harness.data.datasets import Dataset, SyntheticDataset, resolve_dataset
from harness.errors import HarnessError
from harness.export.onnx_export import OPSET, trace_onnx
from harness.export.precision import FP16_QDQ_OPSET, to_fp16
from harness.export.verify import LEVELS, PLACEMENT_SAMPLES, SAMPLES, Verification, check_file
from harness.fileio import atomic_write
from harness.models.registry import ModelSpec, load_model, weights_stamp
from harness.quantize.config import QuantConfig
from harness.quantize.onnx_graph import merge_duplicate_qdq

QDQ_OPSET = FP16_QDQ_OPSET  # >= 13 for per-channel axis, >= 19 for FP16 into QuantizeLinear: one opset for both


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


def verify_sidecar(onnx_path: Path) -> Path:
    """Where the export check's figures are kept beside an ONNX file."""
    return Path(onnx_path).with_suffix(".verify.json")


def export_variant(spec: ModelSpec, precision: str, out: Path, quant: dict | None = None,
                   calib_dir: Path | None = None, log=None, verify: str = "strict",
                   samples: int = SAMPLES) -> Path:
    """Export, check (harness.export.verify) and keep the file with its check's figures beside it.

    Either tool's Q/DQ file goes through the same readiness check and export check. The check runs `samples`
    inputs: for int8, validation images of the calibration dataset (what the quantization was calibrated for);
    for float precisions, seeded synthetic inputs.
    """
    check_request(precision, quant)
    if verify not in LEVELS:
        raise HarnessError(f"--verify {verify!r} is unknown: use one of {', '.join(LEVELS)}")
    out = Path(out)
    float_model = load_model(spec)
    data: Dataset = SyntheticDataset(spec)
    sample, _ = data.take("val", 2)
    quant_model = None
    if quant is None:
        proto = trace_onnx(float_model, sample, OPSET)
    elif quant.get("tool") == "modelopt":
        from harness.export.modelopt_ptq import modelopt_qdq

        cfg = QuantConfig.from_dict(quant)
        proto = _checked_qdq(modelopt_qdq(spec, precision, cfg, engines_dir_for(out), log))  # FP16 parts by ModelOpt
        data = resolve_dataset(cfg.dataset, spec)
    else:
        from harness.quantize.calibrate import check_calibrated
        from harness.quantize.checkpoint import quantized

        qm = quantized(spec, quant, calib_dir or calib_dir_for(out), log)
        quant_model = qm.model.eval()
        check_calibrated(quant_model)
        proto = qdq_proto(quant_model, sample, precision)
        data = resolve_dataset(qm.config.dataset, spec)
    if precision.endswith("fp16") and quant is None:
        proto = to_fp16(proto)
    payload = proto.SerializeToString()
    result = _verified(spec, precision, proto, float_model, quant_model, data, samples, verify)
    if log:
        log(f"{precision} ONNX {result.summary()}")
        if result.degenerate:
            log(f"warning: {spec.name}'s FP32 outputs are degenerate ({result.degenerate}): accuracy against them "
                "means nothing; load trained weights with --weights")
    if not result.passed:
        raise HarnessError(f"the {precision} ONNX of {spec.name} failed the {verify} export check: "
                           f"{result.failures[0]}; the file was not kept (please report it; --verify loose or off "
                           "keeps such a file)")
    atomic_write(verify_sidecar(out), json.dumps(result.to_dict(), indent=2, default=float))
    atomic_write(out, payload)
    return out


def qdq_proto(quant_model, sample, precision: str) -> onnx.ModelProto:
    """A calibrated pytorch-quantization model as a Q/DQ graph (its float parts in FP16 for int8-fp16), with no
    Q/DQ TensorRT would refuse."""
    from harness.quantize.modules import fb_fake_quant

    with fb_fake_quant():
        proto = merge_duplicate_qdq(trace_onnx(quant_model, sample, QDQ_OPSET))
    return _checked_qdq(to_fp16(proto) if precision.endswith("fp16") else proto)


_FP32: dict[tuple, np.ndarray] = {}


def _fp32_outputs(spec: ModelSpec, float_model, data: Dataset, x: np.ndarray) -> np.ndarray:
    """The FP32 PyTorch outputs every precision's export check of a model compares against, computed once per
    process, model, weights and inputs (a sweep exports one model at many precisions and calibrations)."""
    key = (json.dumps(spec.to_dict(), sort_keys=True, default=str), weights_stamp(spec), data.name, len(x))
    if key not in _FP32:
        with torch.no_grad():
            _FP32[key] = float_model(torch.from_numpy(x)).float().numpy()
    return _FP32[key]


def _verified(spec, precision, proto, float_model, quant_model, data: Dataset, samples: int,
              level: str) -> Verification:
    if level == "off":
        return Verification(level, precision)
    x, _ = data.take("val", samples)
    fp32 = _fp32_outputs(spec, float_model, data, x)
    fake_quant = None
    if quant_model is not None:
        from harness.quantize.modules import run_recording_quantizers

        fake_quant = run_recording_quantizers(quant_model, x, PLACEMENT_SAMPLES)
    return check_file(precision, proto, x, fp32, level, fake_quant, inputs=data.name)


def _checked_qdq(proto: onnx.ModelProto) -> onnx.ModelProto:
    """No Q/DQ TensorRT would refuse (missing or zero scale, non-zero zero-point), whichever tool placed them."""
    from harness.quantize.inspect_onnx import check

    hazards = check(proto).hazards
    for kind, what in (("bad_scale", "a missing or zero scale"), ("zero_point", "a non-zero zero-point")):
        if hazards[kind]:
            raise HarnessError(f"the exported Q/DQ graph has {what} at {hazards[kind][0]}; the file was not kept")
    return proto
