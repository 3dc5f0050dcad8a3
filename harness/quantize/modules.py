"""Quantized layers made from float ones (same weights, same device) and the quantizer slots they expose.

A *slot* is a module attribute holding a TensorQuantizer. One tensor read by several quantized consumers gets
one TensorQuantizer object in all their slots (one tensor, one scale); skipping a layer swaps only its own
slots for a disabled quantizer, so a shared quantizer keeps serving the other consumers.

pytorch-quantization has no FP8. Fp8Quantizer is its TensorQuantizer (same calibration, amax, axis and slots)
quantizing to FP8 E4M3 instead: the arithmetic of ONNX's QuantizeLinear/DequantizeLinear with a FLOAT8E4M3FN zero
point, into which it exports, so the fake-quant model and its ONNX file compute the same thing.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from pytorch_quantization import nn as qnn
from pytorch_quantization.calib import HistogramCalibrator
from pytorch_quantization.nn.modules._utils import QuantInputMixin, QuantMixin
from pytorch_quantization.nn.modules.tensor_quantizer import TensorQuantizer
from pytorch_quantization.tensor_quant import QuantDescriptor
from torch import nn

NUM_BITS = 8
E4M3_MAX = 448.0  # the largest finite FP8 E4M3FN value: amax maps onto it, as 127 does for INT8
WEIGHT_AXIS = {nn.ConvTranspose1d: 1, nn.ConvTranspose2d: 1, nn.ConvTranspose3d: 1}  # else 0 (out channels)

# pytorch-quantization's own default map (quant_modules.initialize), applied per module instead of
# monkey-patching torch.nn; LSTMs are left out (no ONNX Q/DQ path in TensorRT for them).
NAIVE_MAP = {
    nn.Conv1d: qnn.QuantConv1d, nn.Conv2d: qnn.QuantConv2d, nn.Conv3d: qnn.QuantConv3d,
    nn.ConvTranspose1d: qnn.QuantConvTranspose1d, nn.ConvTranspose2d: qnn.QuantConvTranspose2d,
    nn.ConvTranspose3d: qnn.QuantConvTranspose3d, nn.Linear: qnn.QuantLinear,
    nn.AvgPool1d: qnn.QuantAvgPool1d, nn.AvgPool2d: qnn.QuantAvgPool2d, nn.AvgPool3d: qnn.QuantAvgPool3d,
    nn.AdaptiveAvgPool1d: qnn.QuantAdaptiveAvgPool1d, nn.AdaptiveAvgPool2d: qnn.QuantAdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d: qnn.QuantAdaptiveAvgPool3d,
}
# Selective quantizes weighted layers and MaxPool (whose two sides share one scale); average pools stay float.
SELECTIVE_MAP = {
    **{k: v for k, v in NAIVE_MAP.items() if issubclass(v, QuantMixin)},
    nn.MaxPool1d: qnn.QuantMaxPool1d, nn.MaxPool2d: qnn.QuantMaxPool2d, nn.MaxPool3d: qnn.QuantMaxPool3d,
}
RESIDUAL_SLOTS = ("shortcut_quantizer", "residual_quantizer")  # slots that quantize a residual shortcut


class StatsCalibrator(HistogramCalibrator):
    """pytorch-quantization's histogram calibrator that also keeps the running |max|.

    One collection pass then serves every calibrator: max from the running maximum, percentile / entropy / mse
    from the histogram. The histogram is upstream's, bin for bin (same edges, same growth when a batch exceeds
    them, same float32 counts; a test compares them), but counted with one bincount over |x| instead of
    torch.histc, which costs about as much as the convolution that made the tensor: collecting statistics then
    costs little more than the forward pass itself. All-zero batches seen before any non-zero one (a
    zero-initialised class token) are counted into the first bin once the histogram has a range: upstream would
    size its bins from a zero range and fail (OverflowError). A quantizer that only ever sees zeros keeps no
    histogram (`zero_range`).
    """

    def __init__(self):
        super().__init__(NUM_BITS, None, False)
        self.max = None
        self.zeros = 0

    @torch.no_grad()
    def collect(self, x):
        a = x.detach().abs().float()
        m = a.max().cpu()
        self.max = m if self.max is None else torch.maximum(self.max, m)
        if self._calib_hist is None and float(m) == 0:
            self.zeros += x.numel()
            return
        if self._calib_hist is None:
            self._calib_bin_edges = torch.linspace(0, float(m), self._num_bins + 1)
        elif m > self._calib_bin_edges[-1]:  # upstream's growth: more bins of the same width
            width = self._calib_bin_edges[1] - self._calib_bin_edges[0]
            self._num_bins = int((m / width).ceil().item())
            self._calib_bin_edges = torch.arange(0, m + width, width)
        top = float(self._calib_bin_edges[-1])
        # histc's own arithmetic (x * bins / max, truncated; x == max in the last bin), so the counts are its counts
        index = a.mul_(self._num_bins).div_(top).to(torch.int32).clamp_(max=self._num_bins - 1)
        hist = torch.bincount(index.flatten(), minlength=self._num_bins).float()
        if self._calib_hist is not None:
            hist[: self._calib_hist.numel()] += self._calib_hist
        self._calib_hist = hist
        if self.zeros:
            self._calib_hist[0] += self.zeros
            self.zeros = 0

    def reset(self):
        super().reset()
        self.max = None
        self.zeros = 0


def activation_quantizer() -> TensorQuantizer:
    """Per-tensor, symmetric INT8 (TensorRT quantizes activations per tensor only)."""
    q = TensorQuantizer(QuantDescriptor(num_bits=NUM_BITS))
    q._calibrator = StatsCalibrator()
    return q


def float_quantizer() -> TensorQuantizer:
    """A disabled quantizer: the slot it fills stays in float."""
    return TensorQuantizer(QuantDescriptor(), disabled=True)


def weight_quantizer(axis: int | None, cls: type = TensorQuantizer) -> TensorQuantizer:
    """Max-calibrated; axis = output-channel axis for per-channel scales, None for one scale per tensor."""
    return cls(QuantDescriptor(num_bits=NUM_BITS, axis=axis, calib_method="max"))


class _Fp8FakeQuant(torch.autograd.Function):
    """DequantizeLinear(QuantizeLinear(x)) with FP8 E4M3 values: x / scale saturated to +-448 and rounded to the
    nearest E4M3 value (ties to even), times scale; ONNX Runtime computes the same. Exported as those two nodes
    with a FLOAT8E4M3FN zero point (opset 19). Gradient: straight through where x / scale is in range (QAT)."""

    @staticmethod
    def forward(ctx, x, scale, axis, channels):
        shape = [1] * x.dim()
        if axis is not None:
            shape[axis] = channels
        s = scale.to(x.dtype).reshape(shape)
        y = x / s
        ctx.save_for_backward(y)
        return y.clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).to(x.dtype) * s

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (y.abs() <= E4M3_MAX).to(grad.dtype), None, None, None

    @staticmethod
    def symbolic(g, x, scale, axis, channels):
        zero = g.op("Constant", value_t=torch.zeros(() if axis is None else (channels,), dtype=torch.float8_e4m3fn))
        attrs = {} if axis is None else {"axis_i": axis}
        q = g.op("QuantizeLinear", x, scale, zero, **attrs)
        return g.op("DequantizeLinear", q, scale, zero, **attrs)


class Fp8Quantizer(TensorQuantizer):
    """A TensorQuantizer that quantizes to FP8 E4M3: per-tensor or per-channel (the axis rule of pytorch-
    quantization's own export), scale = amax / 448, zero point 0."""

    def forward(self, inputs):
        """TensorQuantizer.forward's switches (disabled, calibrating, quantizing), with FP8 fake quantization."""
        if self._disabled:
            return inputs
        if self._if_calib:
            self._calibrator.collect(inputs)
        if not self._if_quant:
            return inputs
        amax = self._get_amax(inputs).detach().float()
        dims = [int(d) for d in amax.shape]  # plain ints: numel() while tracing is a graph value, and breaks export
        channels = math.prod(dims)
        if channels == 1:
            return _Fp8FakeQuant.apply(inputs, amax.reshape(()) / E4M3_MAX, None, 1)
        return _Fp8FakeQuant.apply(inputs, amax.reshape(channels) / E4M3_MAX, dims.index(channels), channels)

    def extra_repr(self):
        return "fp8 e4m3 " + super().extra_repr().replace(f"{NUM_BITS}bit ", "")


def to_fp8(model: nn.Module) -> nn.Module:
    """Every quantizer of the model quantizes to FP8 E4M3 from now on (shared ones stay shared: same objects)."""
    for module in model.modules():
        if type(module) is TensorQuantizer:
            module.__class__ = Fp8Quantizer
    return model


def quant_bound(q: TensorQuantizer) -> float:
    """The largest quantized value amax maps onto: 448 for FP8 E4M3, 127 for signed INT8."""
    if isinstance(q, Fp8Quantizer):
        return E4M3_MAX
    return float((1 << (q._num_bits - 1 + int(q._unsigned))) - 1)


def twin(module: nn.Module, cls: type) -> nn.Module:
    """An instance of `cls` (a subclass of the module's class) holding the module's state as is.

    Parameters, buffers and device are the float module's own, and no constructor is re-run, so this works for
    any module whose quantized class only adds quantizers (pytorch-quantization's, ours, the torchvision blocks).
    """
    q = cls.__new__(cls)
    q.__dict__.update(module.__dict__)
    for attr in ("_parameters", "_buffers", "_modules"):
        q.__dict__[attr] = type(module.__dict__[attr])(module.__dict__[attr])
    return q


def swap(module: nn.Module, quant_cls: type) -> nn.Module:
    """The pytorch-quantization twin of a float layer, with fresh (uncalibrated) quantizers."""
    q = twin(module, quant_cls)
    q._input_quantizer = activation_quantizer()
    if issubclass(quant_cls, QuantMixin):
        q._weight_quantizer = weight_quantizer(WEIGHT_AXIS.get(type(module), 0))
    return q


def swap_layers(model: nn.Module, mapping: dict) -> nn.Module:
    """Replace every float module whose exact type is in `mapping` (the root included)."""
    if type(model) in mapping:
        return swap(model, mapping[type(model)])
    for name, child in list(model.named_children()):
        setattr(model, name, swap_layers(child, mapping))
    return model


class QuantResidualAdd(nn.Module):
    """branch + Q(shortcut): the residual Add quantized on its shortcut input only (Conv+Add fusion)."""

    def __init__(self):
        super().__init__()
        self.shortcut_quantizer = activation_quantizer()

    def forward(self, branch, shortcut):
        return branch + self.shortcut_quantizer(shortcut)

    def input_slots(self, index: int) -> list[tuple[nn.Module, str]]:
        return [(self, "shortcut_quantizer")] if index == 1 else []


class QuantConcat(nn.Module):
    """torch.cat with every input quantized by one quantizer, so inputs and output share a scale."""

    def __init__(self, dim: int = 0):
        super().__init__()
        self.dim = dim
        self.input_quantizer = activation_quantizer()

    def forward(self, tensors):
        return torch.cat([self.input_quantizer(t) for t in tensors], self.dim)

    def input_slots(self, index: int) -> list[tuple[nn.Module, str]]:
        return [(self, "input_quantizer")]


def input_slots(module: nn.Module, index: int = 0) -> list[tuple[nn.Module, str]]:
    """The slots with which `module` quantizes its `index`-th input (empty when it does not)."""
    if hasattr(module, "input_slots"):
        return module.input_slots(index)
    if isinstance(module, (QuantMixin, QuantInputMixin)) and index == 0:
        return [(module, "_input_quantizer")]
    return []


def slots(module: nn.Module) -> list[str]:
    """Names of the module's own quantizer attributes (aliases of one shared quantizer all count)."""
    return [name for name, child in module._modules.items() if isinstance(child, TensorQuantizer)]


def share(slot_list: list[tuple[nn.Module, str]]) -> None:
    """Put the first slot's quantizer into every slot of the list."""
    if slot_list:
        first = getattr(*slot_list[0])
        for module, attr in slot_list[1:]:
            setattr(module, attr, first)


@torch.no_grad()
def run_recording_quantizers(model: nn.Module, x, placement_samples: int):
    """What a Q/DQ file of `model` must reproduce: outputs, and where and with which scale each quantizer works.

    Returns (outputs of the fake-quant model on `x`, with the arithmetic the ONNX export writes; calls). calls:
    one (quantizer name, scale as float32 array, axis or None, input shape, input fingerprint) per call of a
    quantizer that quantizes, the input taken from a float run (every quantizer off) of the first
    `placement_samples` inputs, so a file's Q/DQ can be matched to the tensors they must read free of rounding.
    """
    from harness.export.verify import fingerprint

    quantizers = [m for m in model.modules() if isinstance(m, TensorQuantizer)]
    names = {id(m): n for n, m in model.named_modules()}
    scales: dict[int, tuple] = {}
    calls: list[tuple] = []

    def scale(q, _inputs, _output):
        if id(q) in scales or q._disabled or not q._if_quant or getattr(q, "_amax", None) is None:
            return
        bound = quant_bound(q)
        amax = q._amax.detach().float()
        if amax.numel() == 1:
            scales[id(q)] = ((amax.reshape(()) / bound).numpy(), None)
        else:  # the axis rule of TensorQuantizer._fb_fake_quant (and Fp8Quantizer)
            flat = amax.squeeze()
            scales[id(q)] = ((flat / bound).numpy(), list(amax.shape).index(flat.shape[0]))

    def placement(q, inputs, _output):
        if id(q) in scales:
            calls.append((names.get(id(q), "?"), *scales[id(q)], *fingerprint(inputs[0].detach().float().numpy())))

    was_training, was_disabled = model.training, [q._disabled for q in quantizers]
    model.eval()
    hooks = [q.register_forward_hook(scale) for q in quantizers]
    try:
        with fb_fake_quant():
            out = model(torch.as_tensor(x)).float().numpy()
        for h in hooks:
            h.remove()
        hooks = [q.register_forward_hook(placement) for q in quantizers]
        for q in quantizers:
            q.disable()
        model(torch.as_tensor(x[:placement_samples]))
    finally:
        for h in hooks:
            h.remove()
        for q, disabled in zip(quantizers, was_disabled, strict=True):
            q._disabled = disabled
        model.train(was_training)
    return out, calls


@contextmanager
def fb_fake_quant():
    """Quantize with torch.fake_quantize_* (exported as QuantizeLinear/DequantizeLinear, same math as ORT)."""
    before = TensorQuantizer.use_fb_fake_quant
    TensorQuantizer.use_fb_fake_quant = True
    try:
        yield
    finally:
        TensorQuantizer.use_fb_fake_quant = before
