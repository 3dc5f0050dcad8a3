"""One verified ONNX per precision: the float graph as exported, or a converted/quantized variant.

fp32: the float model. fp16 / bf16: the same graph cast at the ONNX level by NVIDIA Model Optimizer's AutoCast
(harness.export.precision; FP32 inputs/outputs kept, overflowing nodes kept in FP32 and named in the sidecar).
int8 / fp8: the calibrated fake-quant model exported with QuantizeLinear/DequantizeLinear (zero points 0, INT8 or
FLOAT8E4M3FN, per-channel weights on the output-channel axis) at QDQ_OPSET. int8-fp16 / fp8-fp16: that graph with
its float parts (scales included) in FP16. With the modelopt tool, NVIDIA Model Optimizer quantizes the fp32 ONNX
instead (harness.export.modelopt_ptq). Every file is checked by onnx.checker and harness.export.verify before it is
kept.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import torch

from harness.backends.base import PRECISIONS, float_type, quantized_type
from harness.data.datasets import Dataset, SyntheticDataset, resolve_dataset
from harness.errors import HarnessError
from harness.export.onnx_export import OPSET, trace_onnx
from harness.export.precision import FP16_QDQ_OPSET, Cast, cast
from harness.export.verify import LEVELS, PLACEMENT_SAMPLES, SAMPLES, Verification, check_file
from harness.fileio import atomic_write
from harness.measure.accuracy import degenerate_outputs
from harness.models.registry import ModelSpec, load_model, weights_stamp
from harness.quantize.config import QuantConfig
from harness.quantize.onnx_graph import merge_duplicate_qdq

# >= 13 for per-channel axis, >= 19 for FP16 into QuantizeLinear and for FP8 (FLOAT8E4M3FN): one opset for all
QDQ_OPSET = FP16_QDQ_OPSET


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
    dtype = quantized_type(precision)
    if dtype and quant is None:
        raise HarnessError(f"--precision {precision} needs calibration: pass --quant FILE (from harness quantize) "
                           "or --mode/--calib")
    if not dtype and quant is not None:
        raise HarnessError(f"--precision {precision} is a float precision: --quant/--mode/--calib apply to "
                           "int8, int8-fp16, fp8 and fp8-fp16 only")
    if dtype and "checkpoint" not in quant and quant.get("dtype", "int8") != dtype:
        raise HarnessError(f"--precision {precision} needs a {dtype} quantization request, not a "
                           f"{quant.get('dtype', 'int8')} one")


def check_checkpoint_type(precision: str, qm_dtype: str, path: str) -> None:
    """A checkpoint holds INT8 or FP8 scales: it serves the precisions of its type only."""
    wanted = quantized_type(precision)
    if wanted != qm_dtype:
        fits = "int8 or int8-fp16" if qm_dtype == "int8" else "fp8 or fp8-fp16"
        raise HarnessError(f"--quant {path} is a {qm_dtype} checkpoint: use --precision {fits}, or write a "
                           f"{wanted} one with harness quantize --precision {wanted}")


def verify_sidecar(onnx_path: Path) -> Path:
    """Where the export check's figures are kept beside an ONNX file."""
    return Path(onnx_path).with_suffix(".verify.json")


def export_variant(spec: ModelSpec, precision: str, out: Path, quant: dict | None = None,
                   calib_dir: Path | None = None, log=None, verify: str = "strict",
                   samples: int = SAMPLES) -> Path:
    """Export, check (harness.export.verify) and keep the file with its check's figures beside it.

    Either tool's Q/DQ file goes through the same readiness check and export check. The check runs `samples`
    inputs: for int8/fp8, validation images of the calibration dataset (what the quantization was calibrated for);
    for float precisions, seeded synthetic inputs. The FP16 cast's data_max rule reads `samples` calib inputs of the
    same dataset.
    """
    check_request(precision, quant)
    if verify not in LEVELS:
        raise HarnessError(f"--verify {verify!r} is unknown: use one of {', '.join(LEVELS)}")
    out = Path(out)
    float_model = load_model(spec)
    data: Dataset = SyntheticDataset(spec)
    sample, _ = data.take("val", 2)
    quant_model = None
    low = float_type(precision)
    if quant is None:  # attention decomposed as the quantized export does, so the two files pair layer by layer
        from harness.quantize.attention import convert_attention

        result = Cast(trace_onnx(convert_attention(copy.deepcopy(float_model)), sample, OPSET))
        if low != "fp32":
            result = cast(result.model, low, data.take("calib", samples)[0])
    elif quant.get("tool") == "modelopt":
        from harness.export.modelopt_ptq import modelopt_qdq

        cfg = QuantConfig.from_dict(quant)
        # ModelOpt casts the float parts itself (its convert_to_f16)
        result = Cast(_checked_qdq(modelopt_qdq(spec, precision, cfg, engines_dir_for(out), log)))
        data = resolve_dataset(cfg.dataset, spec)
    else:
        from harness.quantize.calibrate import check_calibrated
        from harness.quantize.checkpoint import quantized

        qm = quantized(spec, quant, calib_dir or calib_dir_for(out), log)
        if "checkpoint" in quant:
            check_checkpoint_type(precision, qm.config.dtype, quant["checkpoint"])
        quant_model = qm.model.eval()
        check_calibrated(quant_model)
        data = resolve_dataset(qm.config.dataset, spec)
        result = qdq_file(quant_model, sample, precision, data.take("calib", samples)[0])
    proto = result.model
    if log and result.kept_fp32:
        names = list(result.kept_fp32)
        log(f"{precision}: {len(names)} node(s) kept in FP32: {', '.join(names[:6])}{' ...' if len(names) > 6 else ''}"
            f" ({result.kept_fp32[names[0]]}; all in {verify_sidecar(out).name})")
    payload = proto.SerializeToString()
    checked = _verified(spec, precision, proto, float_model, quant_model, data, samples, verify)
    if log:
        log(f"{precision} ONNX {checked.summary()}")
        if checked.degenerate:
            log(f"warning: {spec.name}'s FP32 outputs are degenerate ({checked.degenerate}): accuracy against them "
                "means nothing; load trained weights with --weights")
        elif checked.judged_on:
            log(f"warning: {spec.name}'s FP32 outputs carry no signal, so the file was judged on "
                f"{checked.judged_on}; load trained weights with --weights")
        warning = quality_warning(checked)
        if warning:
            log(warning)
    if not checked.passed:
        weaker = "--verify loose or off keeps" if verify == "strict" else "--verify off keeps (unchecked)"
        raise HarnessError(f"the {precision} ONNX of {spec.name} failed the {verify} export check: "
                           f"{checked.failures[0]}; the file was not kept (please report it; {weaker} such a file)")
    sidecar = {**checked.to_dict(), "kept_fp32": result.kept_fp32}
    atomic_write(verify_sidecar(out), json.dumps(sidecar, indent=2, default=float))
    atomic_write(out, payload)
    return out


# Below these the quantized model itself (not the file: the check vouches for that) is far from FP32: the SQNR
# floor is harness compare's INT8 default criterion; 90 % top-1 agreement is 3 of the check's 32 answers changed.
USABLE_SQNR_DB = 15.0
USABLE_TOP1_AGREEMENT_PCT = 90.0


def quality_warning(v: Verification) -> str | None:
    """A passed INT8 check says the file is the quantized model; say so when that model is unusable, and where
    to look next."""
    if not (v.passed and quantized_type(v.precision) is not None and v.sqnr_db is not None and not v.degenerate):
        return None
    agreement = v.top1_agreement_pct  # None when judged on the features before the head: SQNR alone
    if v.sqnr_db >= USABLE_SQNR_DB and (agreement is None or agreement >= USABLE_TOP1_AGREEMENT_PCT):
        return None
    agreed = "n/a" if agreement is None else f"{agreement:.1f} %"
    return (f"warning: the file passed the {v.level} export check (it is the quantized model, faithfully), but the "
            f"quantized model itself is far from FP32: SQNR {v.sqnr_db:.2f} dB, top-1 agreement "
            f"{agreed} on {v.samples} {v.inputs} inputs (floor {USABLE_SQNR_DB:g} dB, "
            f"{USABLE_TOP1_AGREEMENT_PCT:g} %); find the layers that lose it with harness debug layers (same model "
            "and quantization options), then keep them in float with harness debug qdq")


def qdq_proto(quant_model, sample, precision: str, reference: np.ndarray | None = None) -> onnx.ModelProto:
    """A calibrated model as a Q/DQ graph (its float parts in FP16 for *-fp16), with no Q/DQ TensorRT would
    refuse; `reference`: inputs for the cast's data_max rule (harness.export.precision; None: not applied)."""
    return qdq_file(quant_model, sample, precision, reference).model


def qdq_file(quant_model, sample, precision: str, reference: np.ndarray | None = None) -> Cast:
    """qdq_proto, with the nodes the FP16 cast kept in FP32."""
    from harness.quantize.modules import fb_fake_quant

    with fb_fake_quant():
        proto = merge_duplicate_qdq(trace_onnx(quant_model, sample, QDQ_OPSET))
    low = float_type(precision)
    result = Cast(proto) if low == "fp32" else cast(proto, low, reference)
    _checked_qdq(result.model)
    return result


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
    features = head_features(proto, float_model, quant_model, x) if degenerate_outputs(fp32) else None
    return check_file(precision, proto, x, fp32, level, fake_quant, inputs=data.name, features=features)


def head_features(proto: onnx.ModelProto, float_model, quant_model, x) -> tuple | None:
    """(the file's tensor before its head, FP32's and fake-quant's values of it): what the export check judges
    when a zero or constant head leaves the outputs without signal. The head is the last Linear/Conv called."""
    from harness.quantize.modules import fb_fake_quant
    from harness.quantize.onnx_graph import head_input

    name = head_input(proto)
    if name is None:
        return None
    fp32 = last_layer_input(float_model, x)
    fake_quant = None
    if quant_model is not None:
        with fb_fake_quant():
            fake_quant = last_layer_input(quant_model, x)
    return None if fp32 is None else (name, fp32, fake_quant)


def last_layer_input(model: torch.nn.Module, x) -> np.ndarray | None:
    """What the last Linear or convolution called in a forward pass on `x` reads."""
    seen = {}

    def keep(_module, inputs, _output):
        seen["x"] = inputs[0]

    weighted = (torch.nn.Linear, torch.nn.modules.conv._ConvNd)
    hooks = [m.register_forward_hook(keep) for m in model.modules() if isinstance(m, weighted)]
    try:
        with torch.no_grad():
            model(torch.from_numpy(x))
    finally:
        for hook in hooks:
            hook.remove()
    return seen["x"].float().numpy() if "x" in seen else None


def _checked_qdq(proto: onnx.ModelProto) -> onnx.ModelProto:
    """No Q/DQ TensorRT would refuse (missing or zero scale, non-zero zero-point), whichever tool placed them."""
    from harness.quantize.inspect_onnx import check

    hazards = check(proto).hazards
    for kind, what in (("bad_scale", "a missing or zero scale"), ("zero_point", "a non-zero zero-point")):
        if hazards[kind]:
            raise HarnessError(f"the exported Q/DQ graph has {what} at {hazards[kind][0]}; the file was not kept")
    return proto
