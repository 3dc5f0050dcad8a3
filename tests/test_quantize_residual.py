"""Residual-aware placement: fx-found residual Adds, torchvision blocks, a registered untraceable block, and
one shared quantizer per tensor (one Q/DQ pair in the exported graph)."""

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from harness.export.onnx_export import trace_onnx
from harness.quantize.blocks import quantize_layers, quantized_residuals, register_block, unregister_block
from harness.quantize.calibrate import apply_calibration, check_calibrated, collect_stats
from harness.quantize.config import QuantConfig
from harness.quantize.inspect_onnx import check
from harness.quantize.modules import QuantConcat, QuantResidualAdd, activation_quantizer, fb_fake_quant
from harness.quantize.onnx_graph import merge_duplicate_qdq
from harness.quantize.replace import prepare, quant_layers


class TinyResidual(nn.Module):
    """x + f(x) written in forward, a projection shortcut, an Add of two equally deep branches, MaxPool, cat."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.a1, self.a2 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.proj, self.b1, self.b2 = nn.Conv2d(8, 16, 1), nn.Conv2d(8, 16, 3, padding=1), nn.Conv2d(16, 16, 1)
        self.left, self.right = nn.Conv2d(16, 8, 1), nn.Conv2d(16, 8, 1)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        x = self.pool(torch.relu(self.stem(x)))
        x = x + self.a2(torch.relu(self.a1(x)))  # identity shortcut
        x = torch.relu(self.b2(torch.relu(self.b1(x))) + self.proj(x))  # projection shortcut, written second
        y = self.left(x) + self.right(x)  # a tie: one weighted layer on each side
        return self.head(torch.cat([y, x[:, :8]], 1)).mean((2, 3))


def _calibrated(model, shape=(3, 16, 16)):
    torch.manual_seed(0)
    batches = [torch.randn(4, *shape).numpy() for _ in range(2)]
    apply_calibration(model, collect_stats(model, batches), QuantConfig(calib="max"))
    return model, batches[0]


def _export(model, x, tmp_path):
    check_calibrated(model)
    with fb_fake_quant():
        return merge_duplicate_qdq(trace_onnx(model, x, opset=19))


def test_fx_finds_residual_adds_from_the_graph(tmp_path):
    model = prepare(TinyResidual().eval(), "selective")
    adds = {n: m for n, m in quant_layers(model).items() if isinstance(m, QuantResidualAdd)}
    assert len(adds) == 3  # the two x + f(x) and the tie
    assert any(isinstance(m, QuantConcat) for m in model.modules())
    code = model.code
    assert "residual(a2, pool)" in code  # branch first, shortcut (the block input) quantized
    assert "(b2, proj)" in code  # the projection path (one conv) is the shortcut, the two-conv path the branch
    assert "(right, left)" in code  # tie: the input produced later is the branch, the earlier one is quantized
    first = next(iter(adds.values()))
    assert first.shortcut_quantizer is model.a1._input_quantizer  # block input: conv and shortcut share one
    assert model.pool._input_quantizer is model.a1._input_quantizer  # both sides of the MaxPool


def test_fx_placement_exports_one_qdq_per_tensor_and_passes_inspect(tmp_path):
    model, x = _calibrated(prepare(TinyResidual().eval(), "selective"))
    proto = _export(model, x, tmp_path)
    report = check(proto)
    assert len(report.residual_quantized) == 3 and report.hazard_count == 0
    quant_inputs = [n.input[0] for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert len(quant_inputs) == len(set(quant_inputs))  # shared quantizers: one Q per tensor after merging
    shared = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"
              and {c.op_type for c in proto.graph.node if n.output[0] in c.input} >= {"Conv", "Add"}]
    assert shared  # one DQ feeds both the first conv and the residual Add


def test_naive_placement_leaves_residual_adds_unquantized(tmp_path):
    model, x = _calibrated(prepare(TinyResidual().eval(), "naive"))
    report = check(_export(model, x, tmp_path))
    assert len(report.hazards["unquantized_shortcut"]) == 3


@pytest.mark.parametrize("block", [
    BasicBlock(8, 8),
    Bottleneck(16, 4, downsample=nn.Sequential(nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16))),
])
def test_torchvision_blocks_are_replaced_keeping_weights_and_device(block):
    block = block.eval()
    conv1 = block.conv1.weight
    x = torch.randn(2, block.conv1.in_channels, 8, 8)
    with torch.no_grad():
        expected = block(x)
    q = prepare(nn.Sequential(block), "selective").get_submodule("0")
    assert type(q).__name__.startswith("Quant") and q.conv1.weight is conv1
    assert q.conv1.weight.device == conv1.device
    if q.downsample is None:
        assert q.residual_quantizer is q.conv1._input_quantizer
    else:
        assert q.downsample[0]._input_quantizer is q.conv1._input_quantizer
        assert q.residual_quantizer is not q.conv1._input_quantizer
    for m in q.modules():
        if hasattr(m, "disable") and hasattr(m, "_calibrator"):
            m.disable()
    with torch.no_grad():
        torch.testing.assert_close(q(x), expected)  # same float computation with quantizers off


class Gated(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace this block."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        out = self.conv(x)
        if out.mean() > 100:  # never true here, but untraceable
            out = out * 0
        return out + x


class QuantGated(Gated):
    def forward(self, x):
        return self.conv(x) + self.skip_q(x)  # a user's own name for the shortcut quantizer


def test_registration_hook_quantizes_an_untraceable_block(tmp_path):
    @register_block(Gated)
    def convert(block):
        q = quantize_layers(block)
        q.__class__ = QuantGated
        q.skip_q = activation_quantizer()
        return q

    try:
        notes = []
        model = nn.Sequential(nn.Conv2d(3, 8, 1), Gated(), Gated()).eval()
        with pytest.raises(Exception):  # noqa: B017 - whatever torch.fx raises, the model is not traceable as is
            torch.fx.symbolic_trace(model)
        placed = prepare(model, "selective", log=notes.append)
        assert not notes  # traced fine with the converted blocks as leaves
        assert isinstance(placed.get_submodule("1"), QuantGated)
        placed, x = _calibrated(placed, (3, 8, 8))
        report = check(_export(placed, x, tmp_path))
        assert len(report.residual_quantized) == 2 and report.hazard_count == 0
        assert quantized_residuals(placed) == ["1", "2"]  # what `harness quantize` prints: the same two Adds
    finally:
        unregister_block(Gated)


def test_untraceable_model_falls_back_with_a_warning_naming_an_importable_hook():
    import importlib
    import re
    import subprocess
    import sys

    notes = []
    model = prepare(nn.Sequential(nn.Conv2d(8, 8, 1), Gated()).eval(), "selective", log=notes.append)
    assert notes and "not torch.fx-traceable" in notes[0]
    module, name = re.search(r"register such blocks with ([\w.]+)", notes[0]).group(1).rsplit(".", 1)
    assert getattr(importlib.import_module(module), name) is register_block  # the path the warning prints works
    cheap = subprocess.run([sys.executable, "-c", f"import sys, {module}; assert 'torch' not in sys.modules"])
    assert cheap.returncode == 0  # and importing that package still does not load torch
    assert hasattr(model[0], "_input_quantizer")  # layers are still quantized
    assert np.isfinite(model(torch.randn(1, 8, 4, 4)).detach().numpy()).all()


class TwoConvs(nn.Module):
    """conv3x3(x) + conv1x1(x): one weighted layer on each side of the Add (a tie), read by another conv."""

    def __init__(self):
        super().__init__()
        self.stem, self.c3, self.c1, self.out = (nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1),
                                                  nn.Conv2d(8, 8, 1), nn.Conv2d(8, 4, 1))

    def forward(self, x):
        x = torch.relu(self.stem(x))
        return self.out(torch.relu(self.c3(x) + self.c1(x)))


class ThreeWay(nn.Module):
    """x + f(x) + g(x): the second Add has one weighted layer on each side since x (a tie)."""

    def __init__(self):
        super().__init__()
        self.stem, self.f, self.g, self.out = (nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1),
                                               nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 4, 1))

    def forward(self, x):
        x = torch.relu(self.stem(x))
        return self.out(torch.relu(x + self.f(x) + self.g(x)))


class ConvThroughPermute(nn.Module):
    """A conv branch that reaches its Add through a permute, a layer-scale Mul and a permute back."""

    def __init__(self):
        super().__init__()
        self.stem, self.conv = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.out = nn.Conv2d(8, 4, 1)
        self.scale = nn.Parameter(torch.full((8,), 0.5))

    def forward(self, x):
        x = torch.relu(self.stem(x))
        y = (self.conv(x).permute(0, 2, 3, 1) * self.scale).permute(0, 3, 1, 2)
        return self.out(x + y)


def _convnext_like():
    from torchvision.models.convnext import CNBlock

    return nn.Sequential(nn.Conv2d(3, 16, 2, stride=2), CNBlock(16, 0.5, 0.0), CNBlock(16, 0.5, 0.0),
                         nn.Conv2d(16, 4, 1))


def _adds(proto):
    """Each Add of the exported graph -> how many of its inputs come from a DequantizeLinear."""
    producer = {o: n.op_type for n in proto.graph.node for o in n.output}
    return {n.name: sum(producer.get(i) == "DequantizeLinear" for i in n.input)
            for n in proto.graph.node if n.op_type == "Add" and all(i in producer for i in n.input)}


def _both_modes(build, tmp_path):
    protos = {}
    for mode in ("selective", "naive"):
        torch.manual_seed(0)
        model, x = _calibrated(prepare(build().eval(), mode))
        protos[mode] = _export(model, x, tmp_path)
    return protos


@pytest.mark.parametrize("build, adds", [(TwoConvs, 1), (ThreeWay, 2), (ConvThroughPermute, 1)],
                         ids=["conv3x3+conv1x1", "x+f(x)+g(x)", "conv-permute-scale"])
def test_every_residual_add_is_decided_and_inspect_sees_the_naive_ones(build, adds, tmp_path):
    protos = _both_modes(build, tmp_path)
    report = check(protos["selective"])
    assert len(report.residual_quantized) == adds and report.hazard_count == 0
    residual = {n for n in report.residual_quantized}
    assert all(count == 1 for name, count in _adds(protos["selective"]).items() if name in residual)  # one input
    naive_report = check(protos["naive"])
    assert len(naive_report.hazards["unquantized_shortcut"]) == adds  # through Transpose and layer scale too


def test_convnext_adds_follow_a_linear_and_keep_the_residual_stream_in_float(tmp_path):
    """ConvNeXt's branch ends in a Linear: TensorRT has no Conv+Add fusion there (Model Optimizer quantizes no
    such shortcut either), so both modes leave the stream in float and inspect reports the Adds as info."""
    protos = _both_modes(_convnext_like, tmp_path)
    for mode, proto in protos.items():
        report = check(proto)
        assert len(report.residual_not_conv) == 2 and report.hazard_count == 0, mode
        assert not report.residual_quantized and set(_adds(proto).values()) <= {0}, mode
        assert len(report.weighted_quantized) >= 6, mode  # the dwconvs and Linears themselves run in INT8


@pytest.mark.parametrize("after, kept", [(nn.Sigmoid(), False), (nn.Conv2d(8, 4, 1), True)])
def test_maxpool_is_quantized_only_when_an_int8_layer_reads_it(after, kept):
    from harness.quantize.replace import drop_idle

    model = prepare(nn.Sequential(nn.Conv2d(8, 8, 1), nn.MaxPool2d(2), after).eval(), "selective")
    drop_idle(model)
    assert model.get_submodule("1")._input_quantizer._disabled is not kept
