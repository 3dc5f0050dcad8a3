"""Where quantizers go for each mode, which layers there are, and how a layer is left in float."""

from __future__ import annotations

import math
from contextlib import contextmanager
from fnmatch import fnmatch

from pytorch_quantization import nn as qnn
from pytorch_quantization.nn.modules._utils import QuantMixin
from pytorch_quantization.nn.modules.tensor_quantizer import TensorQuantizer
from torch import fx, nn

from harness.errors import HarnessError
from harness.quantize.attention import convert_attention
from harness.quantize.blocks import replace_blocks
from harness.quantize.fx_residual import output_layers, residual_aware, residuals_feeding_int8
from harness.quantize.modules import (
    NAIVE_MAP,
    RESIDUAL_SLOTS,
    SELECTIVE_MAP,
    QuantConcat,
    float_quantizer,
    slots,
    swap_layers,
)

UNFRIENDLY_CHANNELS = 4  # a weighted layer reading fewer channels (an image stem) gains nothing from INT8
# Layers that quantize a tensor only to hand one scale on: worth it only when an INT8 reader shares that scale.
_TIED = (QuantConcat, qnn.QuantMaxPool1d, qnn.QuantMaxPool2d, qnn.QuantMaxPool3d)


def placement(mode: str) -> str:
    """naive and hybrid place quantizers alike (hybrid only skips more), so they share calibration data."""
    return "residual" if mode == "selective" else "plain"


def prepare(model: nn.Module, mode: str, log=None, quantize_attention_matmul: bool = False) -> nn.Module:
    """The model with uncalibrated quantizers placed for `mode`; the float model's weights and device are kept.

    Every mode first makes attention explicit (harness.quantize.attention), so naive and selective differ in
    placement, not in which layers they can reach.
    naive / hybrid: pytorch-quantization's default set of layers, one quantizer per layer input.
    selective: registered blocks replaced explicitly, then (if torch.fx can trace the model) residual Adds
    found from the graph get a shortcut quantizer and each tensor one shared quantizer.
    """
    model = convert_attention(model, quantize_attention_matmul, log)
    if placement(mode) == "plain":
        return swap_layers(model, NAIVE_MAP)
    model = swap_layers(replace_blocks(model), SELECTIVE_MAP)
    try:
        return residual_aware(model)
    except Exception as exc:  # torch.fx raises many types on untraceable code
        if log:
            log(f"warning: {type(model).__name__} is not torch.fx-traceable ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:120]}); residual Adds outside registered blocks stay unquantized "
                "- register such blocks with harness.quantize.register_block")
        return model


def quant_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Layer name -> the module owning quantizer slots (weighted layers, pools, residual Adds, blocks)."""
    return {name: m for name, m in model.named_modules() if slots(m) and not isinstance(m, TensorQuantizer)}


def unfriendly_layers(model: nn.Module) -> list[str]:
    """Weighted layers reading so few channels that INT8 kernels cannot use them well (TensorRT pads to 4/32)."""
    return [name for name, m in quant_layers(model).items() if isinstance(m, QuantMixin)
            and getattr(m, "in_channels", getattr(m, "in_features", UNFRIENDLY_CHANNELS)) < UNFRIENDLY_CHANNELS]


def fp8_ineligible_layers(model: nn.Module) -> dict[str, str]:
    """Weighted layer -> the FP8 rules it breaks (harness.quantize.fp8_rules), for convolutions and Linears.
    'First convolution' is the first one registered, which is the stem of torchvision's CNNs and ViT."""
    from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

    from harness.quantize.fp8_rules import conv_rules, gemm_rules

    convs = [m for m in model.modules() if isinstance(m, _ConvNd)]
    found = {}
    for name, m in quant_layers(model).items():
        if isinstance(m, _ConvNd) and not isinstance(m, _ConvTransposeNd):
            rules = conv_rules(m.in_channels, m.out_channels, m.groups, math.prod(m.kernel_size), m is convs[0])
        elif isinstance(m, nn.Linear):
            rules = gemm_rules(m.in_features, m.out_features)
        else:
            continue
        if rules:
            found[name] = "; ".join(rules)
    return found


def head_layers(model: nn.Module) -> list[str]:
    """The classifier head: weighted layers whose output reaches the model output without passing another one
    (found from the traced graph; for a model torch.fx cannot trace, the last weighted layer registered)."""
    layers = quant_layers(model)
    if isinstance(model, fx.GraphModule):
        heads = output_layers(model)
    else:
        heads = [n for n, m in layers.items() if isinstance(m, QuantMixin)][-1:]
    return [n for n in layers if any(matches(n, head) for head in heads)]


def matches(name: str, pattern: str) -> bool:
    return fnmatch(name, pattern) or name.startswith(pattern + ".")


def resolve_skip(layers, patterns, option: str = "--skip") -> list[str]:
    """Layer names matched by the patterns; a pattern that matches nothing is an error (a typo, mostly)."""
    names = list(layers)
    chosen: list[str] = []
    for pattern in patterns:
        found = [n for n in names if matches(n, pattern)]
        if not found:
            raise HarnessError(f"{option} {pattern!r} matches no quantized layer (some are: "
                               f"{', '.join(names[:5])}); `harness sensitivity` lists them all")
        chosen += [n for n in found if n not in chosen]
    return chosen


def set_float(model: nn.Module, names) -> None:
    """Leave the named layers in float: their own slots get a disabled quantizer, shared ones serve the rest."""
    layers = quant_layers(model)
    off = float_quantizer()
    for name in names:
        for attr in slots(layers[name]):
            setattr(layers[name], attr, off)


def drop_idle(model: nn.Module) -> None:
    """Turn off the quantizers whose INT8 tensor nothing uses (quantizing it would only add error).

    A MaxPool / Concat quantizer or a residual shortcut quantizer stays on only when the tensor is also read in
    INT8 (by a weighted layer or an attention MatMul sharing that quantizer: one Q/DQ serves all), or, for a
    shortcut, when the Add's output feeds an INT8 layer (TensorRT then fuses the Add into the branch's last layer
    with an INT8 output, which needs both Add inputs in INT8). A pre-LayerNorm transformer's residual stream
    (read by LayerNorm and the next Add only) therefore stays in float; so does any stream whose Add follows no
    conv (placement gives it no shortcut quantizer). For a model torch.fx cannot trace, the
    Add's consumers are unknown and every shortcut quantizer stays on.
    """
    while True:  # turning one off can leave another idle (a Concat quantizer an Add's output was read by)
        feeding = residuals_feeding_int8(model) if isinstance(model, fx.GraphModule) else None
        holders: dict[int, tuple[TensorQuantizer, list[tuple[nn.Module, str]]]] = {}
        for layer in quant_layers(model).values():
            for attr in slots(layer):
                q = getattr(layer, attr)
                if not q._disabled:
                    holders.setdefault(id(q), (q, []))[1].append((layer, attr))
        idle = [q for q, held in holders.values()
                if not any(attr not in RESIDUAL_SLOTS and not isinstance(layer, _TIED) for layer, attr in held)
                and not any(attr in RESIDUAL_SLOTS and (feeding is None or id(layer) in feeding)
                            for layer, attr in held)]
        if not idle:
            return
        for q in idle:
            q.disable()


@contextmanager
def floated(layers: dict[str, nn.Module], names):
    """Temporarily leave the named layers in float (sensitivity analysis)."""
    saved = [(layers[n], attr, getattr(layers[n], attr)) for n in names for attr in slots(layers[n])]
    off = float_quantizer()
    for module, attr, _ in saved:
        setattr(module, attr, off)
    try:
        yield
    finally:
        for module, attr, q in saved:
            setattr(module, attr, q)
