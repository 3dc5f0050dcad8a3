"""The calibrated quantized model as a file: config + every quantizer's amax (+ weights after QAT).

The module tree is rebuilt from the model spec and the mode (placement is deterministic), so the file holds
no pickled code: `torch.load(weights_only=True)` reads it. Built models are cached under
<engines>/calib/<content key>.pt, so export, build-engine and sweep cells asking for the same
model x calibration reuse one calibration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pytorch_quantization.nn.modules._utils import QuantMixin
from pytorch_quantization.nn.modules.tensor_quantizer import TensorQuantizer
from torch import nn

from harness import cache_integrity
from harness.build import library_versions, sha256_file, sha256_json
from harness.errors import HarnessError
from harness.fileio import atomic_write, clean_stale_temps, expect_file
from harness.models.registry import BUNDLED_WEIGHTS, ModelSpec, load_model
from harness.quantize.calibrate import (
    ZERO_RANGE,
    _set_amax,
    activation_quantizers,
    apply_calibration,
    cached_stats,
    check_calibrated,
    collect_stats,
    left_off,
    stats_key,
    switch_off,
)
from harness.quantize.config import QuantConfig, calibration_batches, calibration_data, calibration_summary
from harness.quantize.modules import to_fp8
from harness.quantize.replace import (
    UNFRIENDLY_CHANNELS,
    drop_idle,
    fp8_ineligible_layers,
    head_layers,
    prepare,
    quant_layers,
    resolve_skip,
    set_float,
    unfriendly_layers,
)

FORMAT = "harness-quant/1"  # reasons and off were added later: read with defaults
# Images the automatic sensitivity analysis (hybrid mode) ranks layers on: evenly spaced over the calibration set.
# Each layer costs a fake-quant pass over them; 64 pick the same layers as all 200 of the quickstart's set on
# digits-resnet and resnet18 (benchmarks/bench_sensitivity.py) at a third of the cost.
SENSITIVITY_IMAGES = 64


@dataclass
class QuantModel:
    """A calibrated model and how it came to be."""

    spec: ModelSpec
    config: QuantConfig
    model: nn.Module
    skipped: list[str]
    calibrators: dict[str, str] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)  # skipped layer -> why it stays in float
    off: dict[str, str] = field(default_factory=dict)  # activation quantizer with no range to calibrate -> why

    @property
    def zero_range(self) -> list[str]:
        return [name for name, why in self.off.items() if why == ZERO_RANGE]


def weights_sha(spec: ModelSpec) -> str | None:
    path = spec.weights or (BUNDLED_WEIGHTS if spec.name == "digits-resnet" else None)
    return sha256_file(Path(path)) if path else None


def _spec_key(spec: ModelSpec) -> dict:
    return {"model": spec.to_dict(), "weights": weights_sha(spec), "versions": library_versions()}


def _prepare(spec: ModelSpec, cfg: QuantConfig, log=None) -> nn.Module:
    model = prepare(load_model(spec), cfg.mode, log, cfg.quantize_attention_matmul)
    return to_fp8(model) if cfg.dtype == "fp8" else model


def calibrate(spec: ModelSpec, cfg: QuantConfig, cache_dir: Path, log=None) -> QuantModel:
    """Place, calibrate (statistics from the cache when present) and skip, as the config asks."""
    model = _prepare(spec, cfg, log)
    key = sha256_json(stats_key(_spec_key(spec), cfg))[:24]

    def collect():
        if log:
            log(f"collecting calibration statistics ({calibration_summary(spec, cfg)})")
        return collect_stats(model, (x for x, _ in calibration_data(spec, cfg)), log, calibration_batches(spec, cfg))

    stats = cached_stats(Path(cache_dir) / f"stats-{key}.pt", collect, log)
    used = apply_calibration(model, stats, cfg)
    off = left_off(model, stats)
    switch_off(model, off)
    if off and log:
        log(f"calibration: {len(off)} activation quantizer(s) stay in float (no range to calibrate): "
            + ", ".join(f"{name} ({why})" for name, why in list(off.items())[:4]) + (" ..." if len(off) > 4 else ""))
    layers = quant_layers(model)
    reasons = dict.fromkeys(resolve_skip(layers, cfg.skip), "--skip")
    weighted = [name for name, layer in layers.items() if isinstance(layer, QuantMixin)]
    if weighted and all(name in reasons for name in weighted):
        raise HarnessError(f"--skip {' '.join(cfg.skip)} leaves every weighted layer in float: the {cfg.dtype} "
                           "artifact would hold no Q/DQ; use --precision fp32 or fp16, or skip fewer layers")
    if cfg.mode == "selective":
        if cfg.dtype == "fp8":
            for name, rules in fp8_ineligible_layers(model).items():
                reasons.setdefault(name, f"FP8-ineligible in TensorRT ({rules})")
        else:
            for name in unfriendly_layers(model):
                reasons.setdefault(name, f"INT8-unfriendly (reads < {UNFRIENDLY_CHANNELS} channels)")
        if not cfg.quantize_head:
            for name in head_layers(model):
                reasons.setdefault(name, "classifier head (--quantize-head quantizes it)")
    set_float(model, list(reasons))
    drop_idle(model)
    if cfg.skip_count:
        from harness.quantize.sensitivity import analyse, most_sensitive, subset

        x = subset(np.concatenate([x for x, _ in calibration_data(spec, cfg)]), SENSITIVITY_IMAGES)
        _, ranked = analyse(model, x, None, "sqnr", skip=list(reasons), reverse=False, log=log)
        auto = most_sensitive(ranked, cfg.skip_count)
        if log:
            log(f"sensitivity analysis leaves in float: {', '.join(auto) or 'nothing'}")
        reasons.update(dict.fromkeys(auto, "sensitivity analysis"))
        set_float(model, auto)
        drop_idle(model)
    return QuantModel(spec, cfg, model, list(reasons), used, reasons=reasons, off=off)


def to_checkpoint(qm: QuantModel, with_weights: bool = False) -> dict:
    amax = {name: m._amax.detach().clone() for name, m in qm.model.named_modules(remove_duplicate=False)
            if isinstance(m, TensorQuantizer) and hasattr(m, "_amax")}
    ckpt = {"format": FORMAT, "model": qm.spec.to_dict(), "weights_sha256": weights_sha(qm.spec),
            "config": qm.config.to_dict(), "amax": amax, "skipped": list(qm.skipped),
            "calibrators": dict(qm.calibrators), "extra": dict(qm.extra), "reasons": dict(qm.reasons),
            "off": dict(qm.off)}
    if with_weights:
        ckpt["state_dict"] = {k: v.detach().clone() for k, v in qm.model.state_dict().items()
                              if not k.endswith("._amax")}
    return ckpt


def save(qm: QuantModel, path: Path, with_weights: bool = False) -> Path:
    import torch

    path = Path(path)
    atomic_write(path, lambda tmp: torch.save(to_checkpoint(qm, with_weights), tmp))
    return path


def load(path: Path) -> dict:
    import torch

    path = expect_file(Path(path), "--quant")
    if not path.is_file():
        raise HarnessError(f"--quant {path}: no such file; write one with harness quantize")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise HarnessError(f"--quant {path}: not a readable checkpoint ({type(exc).__name__}); "
                           "write one with harness quantize") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise HarnessError(f"--quant {path}: not a harness quantization checkpoint; write one with harness quantize")
    missing = [key for key in _REQUIRED if not isinstance(ckpt.get(key), _REQUIRED[key])]
    if missing:
        raise HarnessError(f"--quant {path}: the checkpoint lacks {', '.join(missing)} (damaged, or edited); write it "
                           "again with harness quantize")
    return ckpt


_REQUIRED = {"model": dict, "config": dict, "amax": dict, "skipped": list}


def restore(ckpt: dict, log=None) -> QuantModel:
    """Rebuild the quantized model a checkpoint describes, refusing one whose float weights have changed."""
    spec = ModelSpec.from_dict(ckpt["model"])
    if weights_sha(spec) != ckpt["weights_sha256"]:
        raise HarnessError(f"the quantization checkpoint of {spec.name} was calibrated on other weights than "
                           f"{spec.weights or 'the bundled ones'}: run harness quantize again")
    cfg = QuantConfig.from_dict(ckpt["config"])
    model = _prepare(spec, cfg, log)
    if "state_dict" in ckpt:
        missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
        if unexpected or [k for k in missing if not k.endswith("._amax")]:
            raise HarnessError(f"the checkpoint's weights do not fit {spec.name}; run harness quantize again")
    modules = dict(model.named_modules(remove_duplicate=False))
    for name, value in ckpt["amax"].items():
        if not isinstance(modules.get(name), TensorQuantizer):
            raise HarnessError(f"the checkpoint names quantizer {name}, which {spec.name} in {cfg.mode} mode lacks; "
                               "run harness quantize again")
        _set_amax(modules[name], value)
    off = dict(ckpt.get("off", {}))
    unknown = [n for n in off if n not in activation_quantizers(model)]
    if unknown:
        raise HarnessError(f"the checkpoint names quantizer {unknown[0]}, which {spec.name} in {cfg.mode} mode lacks; "
                           "run harness quantize again")
    switch_off(model, off)
    set_float(model, [n for n in ckpt["skipped"] if n in quant_layers(model)])
    drop_idle(model)
    check_calibrated(model)
    return QuantModel(spec, cfg, model, list(ckpt["skipped"]), dict(ckpt.get("calibrators", {})),
                      dict(ckpt.get("extra", {})), dict(ckpt.get("reasons", {})), off)


def quantized(spec: ModelSpec, quant: dict, cache_dir: Path, log=None) -> QuantModel:
    """The model for a quant request: {'checkpoint': path, ...} or a QuantConfig dict (cached by content)."""
    if "checkpoint" in quant:
        qm = restore(load(Path(quant["checkpoint"])), log)
        if qm.spec.name != spec.name or tuple(qm.spec.input_shape) != tuple(spec.input_shape):
            raise HarnessError(f"--quant {quant['checkpoint']} was made for {qm.spec.name} "
                               f"{'x'.join(map(str, qm.spec.input_shape))}, not {spec.name}")
        return qm
    cfg = QuantConfig.from_dict(quant)
    key = {**_spec_key(spec), "config": cfg.to_dict(), "format": FORMAT}
    if cfg.skip_count:  # the layers it leaves in float depend on the images they were ranked on
        key["sensitivity_images"] = SENSITIVITY_IMAGES
    path = Path(cache_dir) / f"{sha256_json(key)[:24]}.pt"
    clean_stale_temps(path.parent)
    if cache_integrity.reuse(path, log) is not None:
        try:
            return restore(load(path), log)
        except HarnessError:
            cache_integrity.discard(path)  # recorded but no longer restorable (the code changed): rebuilt
    qm = calibrate(spec, cfg, cache_dir, log)
    save(qm, path)
    cache_integrity.commit(path)
    return qm
