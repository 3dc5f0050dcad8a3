"""Calibration: one statistics pass per model x placement x dataset (cached), then amax per calibrator.

The pass runs the float model (every quantizer off) and records, for each activation quantizer, the running
|max| and the |x| histogram; max, percentile, entropy and mse are all computed from that one record, so a
sweep over calibrators costs one pass. Weights are max-calibrated per output channel from the weights alone.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pytorch_quantization.nn.modules._utils import QuantMixin
from pytorch_quantization.nn.modules.tensor_quantizer import TensorQuantizer
from torch import nn

from harness import cache_integrity
from harness.errors import HarnessError
from harness.fileio import atomic_write, clean_stale_temps
from harness.quantize.amax import compute_amax
from harness.quantize.attention import SOFTMAX_SLOT
from harness.quantize.config import QuantConfig
from harness.quantize.modules import RESIDUAL_SLOTS, StatsCalibrator, slots, weight_quantizer
from harness.quantize.replace import matches, placement, quant_layers, resolve_skip

# Selective mode's calibrator for residual shortcut quantizers: their error lands on the residual stream itself,
# so the amax that minimises it (mse) rather than one that clips (entropy: -13 dB on digits-resnet) or one that
# wastes levels on rare peaks (max: -1.1 to -1.6 dB on convnext_tiny; mse and max within 0.2 dB on digits-resnet).
# FP8 spends its levels logarithmically, so rare peaks cost little there: max (mse fits INT8's grid only).
SHORTCUT_CALIB = {"int8": "mse", "fp8": "max"}
STATS_FORMAT = 2  # 2: attention made explicit, zero-range records


def activation_quantizers(model: nn.Module) -> dict[str, TensorQuantizer]:
    """Canonical name -> each distinct calibratable activation quantizer (a shared one appears once)."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, TensorQuantizer) and isinstance(getattr(m, "_calibrator", None), StatsCalibrator)}


def owners(model: nn.Module) -> dict[int, list[tuple[str, str]]]:
    """id(quantizer) -> (layer, slot) pairs holding it (overrides match the layer names)."""
    found: dict[int, list[tuple[str, str]]] = {}
    for name, layer in quant_layers(model).items():
        for attr in slots(layer):
            found.setdefault(id(getattr(layer, attr)), []).append((name, attr))
    return found


@torch.no_grad()
def collect_stats(model: nn.Module, batches, log=None, total: int | None = None) -> dict[str, dict]:
    """Run `batches` (numpy NCHW) through the float model and return each activation quantizer's record; with
    `log` and the number of batches, progress and an ETA."""
    from harness.progress import Ticker

    ticker = Ticker("calibration batch", total, log) if log and total else None
    acts = activation_quantizers(model)
    weights = [m._weight_quantizer for m in model.modules() if isinstance(m, QuantMixin)]
    for q in weights:
        q.disable()
    for q in acts.values():
        q._calibrator.reset()
        q.disable_quant()
        q.enable_calib()
    was_training = model.training
    model.eval()
    try:
        for x in batches:
            model(torch.from_numpy(x))
            if ticker:
                ticker.tick()
    finally:
        for q in acts.values():
            q.disable_calib()
            q.enable_quant()
        for q in weights:
            q.enable()
        model.train(was_training)
    stats = {}
    for name, q in acts.items():
        cal = q._calibrator
        if cal.max is not None:
            hist = None if cal._calib_hist is None else cal._calib_hist.clone()  # None: only zeros seen
            edges = None if cal._calib_bin_edges is None else cal._calib_bin_edges.clone()
            stats[name] = {"max": cal.max.clone(), "hist": hist, "edges": edges}
        cal.reset()
    return stats


UNREACHED = "never reached by the calibration data"
ZERO_RANGE = "saw only zeros during calibration"


def left_off(model: nn.Module, stats: dict[str, dict]) -> dict[str, str]:
    """Activation quantizers with no range to calibrate -> why: never reached by the data (GoogLeNet's
    training-only aux heads), or reached by zeros only (a ViT's class token at init). No scale fits them, so they
    stay in float, which is exact for them, rather than uncalibrated (each batch quantized with its own range)."""
    return {name: UNREACHED if name not in stats else ZERO_RANGE for name in activation_quantizers(model)
            if name not in stats or float(stats[name]["max"]) == 0}


def _set_amax(q: TensorQuantizer, value: torch.Tensor) -> None:
    value = torch.as_tensor(value, dtype=torch.float32).detach().clone()
    if hasattr(q, "_amax") and q._amax.shape == value.shape:
        q._amax.copy_(value)
    else:
        if hasattr(q, "_amax"):
            del q._amax
        q.register_buffer("_amax", value)


def apply_calibration(model: nn.Module, stats: dict[str, dict], cfg: QuantConfig) -> dict[str, str]:
    """Set every quantizer's amax from the statistics and the config; returns quantizer -> calibrator used.

    Selective mode calibrates quantizers that feed a residual shortcut with SHORTCUT_CALIB (mse; FP8: max): their
    error adds straight onto the residual stream. Attention probabilities (softmax output) are calibrated with max in
    every mode: a histogram calibrator clips the few large weights that matter most (entropy there cost 5 dB on a
    reduced Swin and 19 dB on swin_t). --override still decides last. Quantizers with no range (`left_off`) are
    not calibrated.
    """
    overrides = cfg.layer_overrides()
    resolve_skip(quant_layers(model), [pattern for pattern, _ in overrides], "--override")  # a typo is an error
    held_by = owners(model)

    def choice(q, key, default):
        value = default
        for pattern, chosen in overrides:
            if key in chosen and any(matches(n, pattern) for n, _ in held_by.get(id(q), [])):
                value = chosen[key]
        return value

    used = {}
    off = left_off(model, stats)
    for name, q in activation_quantizers(model).items():
        if name in off:
            continue  # no range to calibrate: left_off() names it, switch_off() leaves it in float
        slots_held = [attr for _, attr in held_by.get(id(q), [])]
        shortcut = cfg.mode == "selective" and any(attr in RESIDUAL_SLOTS for attr in slots_held)
        method = choice(q, "calib", SHORTCUT_CALIB[cfg.dtype] if shortcut else "max" if SOFTMAX_SLOT in slots_held
                        else cfg.calib)
        _set_amax(q, compute_amax(stats[name], method, cfg.percentile))
        used[name] = method
    for layer in quant_layers(model).values():
        if isinstance(layer, QuantMixin):
            q = layer._weight_quantizer
            if choice(q, "weights", "per-channel") == "per-tensor":
                q = layer._weight_quantizer = weight_quantizer(None, type(q))
            q._calibrator.reset()
            q._calibrator.collect(layer.weight.detach())
            amax = q._calibrator.compute_amax()
            # An all-zero weight channel (a zero-initialised head) is exact at any scale; TensorRT needs one > 0.
            _set_amax(q, torch.where(amax > 0, amax, torch.ones_like(amax)))
            q._calibrator.reset()
    return used


def switch_off(model: nn.Module, reasons: dict[str, str]) -> None:
    """Disable the named activation quantizers (see left_off)."""
    acts = activation_quantizers(model)
    for name in reasons:
        acts[name].disable()


def check_calibrated(model: nn.Module) -> None:
    """Refuse a model that would export a Q/DQ pair without a scale, or with a zero scale."""
    for name, q in model.named_modules():
        if not isinstance(q, TensorQuantizer) or q._disabled:
            continue
        amax = getattr(q, "_amax", None)
        if amax is None:
            raise HarnessError(f"quantizer {name} is not calibrated (no amax): calibrate with harness quantize "
                               "(or --mode/--calib) before exporting INT8")
        if not bool(torch.isfinite(amax).all()) or float(amax.min()) <= 0:
            bad = int((~(amax > 0)).flatten().nonzero()[0]) if amax.numel() > 1 else None
            where = f" in channel {bad}" if bad is not None else ""
            raise HarnessError(f"quantizer {name} has a zero or invalid scale (amax {float(amax.min()):g}{where}): "
                               "recalibrate with harness quantize, or leave its layer in float with --skip")


def stats_key(spec_key: dict, cfg: QuantConfig) -> dict:
    """What a statistics pass depends on: not the calibrator, the skip list or the overrides."""
    return {"format": STATS_FORMAT, **spec_key, "placement": placement(cfg.mode), "dataset": cfg.dataset,
            "calib_batches": cfg.calib_batches, "calib_batch_size": cfg.calib_batch_size,
            "attention_matmul": cfg.quantize_attention_matmul}


def cached_stats(path: Path, collect, log=None) -> dict[str, dict]:
    """Load the statistics at `path` if they still match their recorded hash, or collect and store them."""
    clean_stale_temps(path.parent)
    if cache_integrity.reuse(path, log) is not None:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # unreadable though recorded (another torch version): recollected, never trusted
            cache_integrity.discard(path)
    stats = collect()
    atomic_write(path, lambda tmp: torch.save(stats, tmp))
    cache_integrity.commit(path)
    return stats
