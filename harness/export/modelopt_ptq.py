"""NVIDIA Model Optimizer's ONNX post-training quantization, the second quantizer beside pytorch-quantization.

ModelOpt reads the harness's own verified fp32 ONNX and the request's calibration batches (the images the
pytorch-quantization path calibrates on, batch for batch), places Q/DQ by its own rules and calibrates on ONNX
Runtime's CPU execution provider, so the two tools differ only in placement and calibration. int8 / fp8 keep the
float parts in FP32; int8-fp16 / fp8-fp16 have ModelOpt convert them to FP16 (its I/O stays FP32, as harness's own
FP16 files do). ModelOpt's FP8 mode calibrates in INT8 with ONNX Runtime's calibrators (max or entropy), converts the
scales to FP8 E4M3 and leaves out the convolutions and GEMMs its FP8 rules exclude (harness.quantize.fp8_rules).
The import is lazy: without the `modelopt` extra only the commands that ask for it fail.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx

from harness.backends.base import float_type, quantized_type
from harness.errors import HarnessError, MissingDependency
from harness.export.onnx_export import INPUT_NAME
from harness.models.registry import ModelSpec
from harness.quantize.config import QuantConfig, calibration_data, calibration_summary


def require_modelopt():
    """ModelOpt's ONNX quantize function, or a one-line error naming the extra."""
    try:
        from modelopt.onnx.quantization import quantize
    except ImportError as exc:
        if (exc.name or "").split(".")[0] == "modelopt":
            raise MissingDependency("nvidia-modelopt", "modelopt") from exc
        reason = str(exc).strip().splitlines()[0]  # a dependency of its ONNX path is missing or broken
        raise HarnessError(f"nvidia-modelopt's ONNX quantization cannot be imported ({reason}): install it with "
                           "pip install -e '.[modelopt]'") from exc
    return quantize


def _reader(batches: list[np.ndarray]):
    """Feeds ModelOpt our calibration batches as they are (its own provider would re-split them)."""
    from onnxruntime.quantization.calibrate import CalibrationDataReader

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.rewind()

        def get_next(self):
            return next(self._it, None)

        def get_first(self):  # ModelOpt's attention-pattern search runs the model once on it
            return {INPUT_NAME: batches[0]}

        def rewind(self):
            self._it = iter({INPUT_NAME: x} for x in batches)

    return Batches()


def modelopt_qdq(spec: ModelSpec, precision: str, cfg: QuantConfig, engines_dir: Path, log=None) -> onnx.ModelProto:
    """The Q/DQ ONNX ModelOpt makes from the cached fp32 export, in `precision` (int8, int8-fp16, fp8, fp8-fp16)."""
    from harness.build import onnx_for

    quantize = require_modelopt()
    fp32 = onnx_for(spec, "fp32", engines_dir, None, log)
    batches = [x for x, _ in calibration_data(spec, cfg)]
    if log:
        log(f"ModelOpt ONNX PTQ of {spec.name} to {quantized_type(precision).upper()}: {cfg.calib} calibration "
            f"({calibration_summary(spec, cfg)}), float parts in {float_type(precision)}")
    with tempfile.TemporaryDirectory(prefix="harness-modelopt-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "qdq.onnx"
        shutil.copyfile(fp32, src)  # ModelOpt writes its intermediate files beside its input
        quiet = io.StringIO()  # ONNX Runtime's calibrators print progress; ModelOpt logs an NVML error on CPUs
        try:
            with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                quantize(str(src), quantize_mode=quantized_type(precision), calibration_data_reader=_reader(batches),
                         calibration_method=cfg.calib, calibration_eps=["cpu"],
                         high_precision_dtype=float_type(precision), output_path=str(dst), log_level="CRITICAL")
        except Exception as exc:  # ModelOpt raises assertion, value and ONNX Runtime errors alike
            text = str(exc).strip().splitlines()
            raise HarnessError(f"ModelOpt's ONNX quantization of {spec.name} failed: {type(exc).__name__}: "
                               f"{text[0] if text else ''}") from exc
        proto = onnx.load(str(dst))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise HarnessError(f"ModelOpt's Q/DQ ONNX fails onnx.checker: {str(exc).splitlines()[0]}") from exc
    return proto

