"""Modes, calibrators, per-layer overrides and the calibration cache on digits-resnet."""

import numpy as np
import pytest
import torch
from pytorch_quantization.calib.histogram import _compute_amax_entropy, _compute_amax_mse
from pytorch_quantization.nn.modules._utils import QuantMixin

from harness.data.datasets import resolve_dataset
from harness.errors import HarnessError
from harness.measure.accuracy import topk_accuracy
from harness.models.registry import load_model, resolve_model
from harness.quantize import calibrate as calibrate_mod
from harness.quantize.amax import entropy_amax, mse_amax
from harness.quantize.calibrate import activation_quantizers
from harness.quantize.checkpoint import calibrate, quantized
from harness.quantize.config import QuantConfig
from harness.quantize.modules import QuantResidualAdd
from harness.quantize.replace import quant_layers
from harness.quantize.sensitivity import logits

FAST = {"calib_batches": 2, "calib_batch_size": 32}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    spec = resolve_model("digits-resnet")
    x, y = resolve_dataset("digits", spec).take("val", 400)
    with torch.no_grad():
        fp32 = topk_accuracy(load_model(spec)(torch.from_numpy(x)).numpy(), y, 1)
    return spec, x, y, fp32, tmp_path_factory.mktemp("calib")


@pytest.mark.parametrize("mode", ["naive", "hybrid", "selective"])
def test_each_mode_places_quantizers_and_keeps_accuracy(digits, mode):
    spec, x, y, fp32, cache = digits
    qm = quantized(spec, QuantConfig(mode=mode, calib="max", **FAST).to_dict(), cache)
    layers = quant_layers(qm.model)
    residual = [n for n, m in layers.items() if isinstance(m, QuantResidualAdd) or hasattr(m, "residual_quantizer")]
    assert len([m for m in layers.values() if isinstance(m, QuantMixin)]) == 12
    if mode == "naive":
        assert not residual and not qm.skipped and "avgpool" in layers
    if mode == "hybrid":  # no skip list given: the sensitivity analysis picks two layers
        assert not residual and len(qm.skipped) == 2
    if mode == "selective":
        assert residual == ["layer1.0", "layer1.1", "layer2", "layer3"]
        assert qm.skipped == ["conv1", "fc"]  # the 1-channel stem is INT8-unfriendly, the head stays float
        assert "head" in qm.reasons["fc"] and "unfriendly" in qm.reasons["conv1"]
        assert qm.model.layer3.residual_quantizer._disabled  # last block: its Add feeds no INT8 layer
        assert not qm.model.layer2.residual_quantizer._disabled  # feeds layer3's convs
        block = qm.model.get_submodule("layer1.0")  # a GraphModule keeps qualified names
        assert block.residual_quantizer is block.conv1._input_quantizer  # the block input's one quantizer
        assert qm.model.layer2.downsample[0]._input_quantizer is qm.model.layer2.conv1._input_quantizer
    assert abs(topk_accuracy(logits(qm.model, x), y, 1) - fp32) <= 0.5


def test_one_statistics_pass_serves_every_calibrator(digits, monkeypatch):
    spec, x, y, fp32, cache = digits
    calls = []
    real = calibrate_mod.collect_stats
    monkeypatch.setattr(calibrate_mod, "collect_stats", lambda *a: calls.append(1) or real(*a))
    from harness.quantize import checkpoint

    monkeypatch.setattr(checkpoint, "collect_stats", calibrate_mod.collect_stats)
    amax = {}
    for calib in ("max", "percentile", "entropy", "mse"):
        qm = calibrate(spec, QuantConfig(mode="naive", calib=calib, calib_batches=3), cache / "one-pass")
        amax[calib] = {n: float(q._amax) for n, q in activation_quantizers(qm.model).items()}
        assert set(qm.calibrators.values()) == {calib}
    assert len(calls) == 1
    name = "layer3.conv2._input_quantizer"
    assert amax["percentile"][name] < amax["max"][name]
    assert len({round(amax[c][name], 6) for c in amax}) == 4  # four methods, four answers from one pass


def test_calibration_runs_exactly_the_requested_batches(digits):
    spec = digits[0]
    seen = []
    model = calibrate(spec, QuantConfig(mode="naive", calib="max", calib_batches=3, calib_batch_size=16),
                      digits[4] / "count").model
    model.register_forward_pre_hook(lambda m, a: seen.append(len(a[0])))
    stats = calibrate_mod.collect_stats(model, (x for x, _ in resolve_dataset("digits", spec).batches(
        "calib", 16, limit=3 * 16)))
    assert seen == [16, 16, 16] and stats  # not N + 1 batches (an upstream example bug)


def test_percentile_value_is_passed_through(digits):
    spec, *_, cache = digits
    name = "fc._input_quantizer"
    got = [float(activation_quantizers(calibrate(spec, QuantConfig(mode="naive", calib="percentile", percentile=p,
                                                                    **FAST), cache).model)[name]._amax)
           for p in (90.0, 99.99)]
    assert got[0] < got[1]


def test_per_layer_overrides_of_calibrator_and_granularity(digits):
    spec, *_, cache = digits
    cfg = QuantConfig(mode="selective", calib="entropy", overrides=("fc=max,per-tensor",), quantize_head=True, **FAST)
    qm = calibrate(spec, cfg, cache)
    assert qm.calibrators["fc._input_quantizer"] == "max"
    assert qm.calibrators["layer3.conv2._input_quantizer"] == "entropy"
    assert qm.model.fc._weight_quantizer._amax.numel() == 1
    assert qm.model.layer3.conv2._weight_quantizer._amax.shape == (64, 1, 1, 1)  # per output channel


def test_bad_override_and_unknown_skip_are_one_line_errors(digits):
    spec, *_, cache = digits
    with pytest.raises(HarnessError, match="--override 'fc=fast'"):
        QuantConfig(overrides=("fc=fast",))
    with pytest.raises(HarnessError, match="--skip 'layer9' matches no quantized layer"):
        calibrate(spec, QuantConfig(mode="naive", calib="max", skip=("layer9",), **FAST), cache)


@pytest.mark.parametrize("kind", ["half-normal", "relu", "sparse", "heavy-tailed"])
def test_entropy_and_mse_match_pytorch_quantization(monkeypatch, kind):
    """The vectorised searches pick upstream's amax, ties included (a 17-level input: many empty bins)."""
    rng = np.random.default_rng(0)
    x = {"half-normal": np.abs(rng.standard_normal(50_000)), "relu": np.maximum(rng.standard_normal(50_000), 0),
         "sparse": rng.integers(0, 17, 20_000) / 16.0, "heavy-tailed": np.abs(rng.standard_t(3, 50_000))}[kind]
    hist, edges = np.histogram(x, bins=320, range=(0, x.max()))
    hist = hist.astype(np.int32)
    assert entropy_amax(hist, edges) == pytest.approx(float(_compute_amax_entropy(hist.copy(), edges, 8, False)),
                                                      rel=1e-6)
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)  # upstream mse hard-codes .cuda()
    assert mse_amax(hist, edges) == pytest.approx(float(_compute_amax_mse(hist, edges.astype(np.float32), 8, False)),
                                                  rel=1e-6)


def test_statistics_collector_counts_upstreams_histogram_bin_for_bin():
    """bincount instead of torch.histc: the same edges, the same growth, the same counts."""
    from pytorch_quantization.calib import HistogramCalibrator

    from harness.quantize.modules import StatsCalibrator

    g = torch.Generator().manual_seed(0)
    upstream, ours, largest = HistogramCalibrator(8, None, False), StatsCalibrator(), 0.0
    for scale in (1.0, 3.3, 0.5, 7.1):  # later batches exceed the first range: the histogram grows
        x = torch.randn(8, 16, 12, 12, generator=g) * scale
        upstream.collect(x)
        ours.collect(x)
        largest = max(largest, float(x.abs().max()))
    assert torch.equal(upstream._calib_bin_edges, ours._calib_bin_edges)
    assert torch.equal(upstream._calib_hist, ours._calib_hist) and len(ours._calib_hist) > 2048
    assert float(ours.max) == largest
