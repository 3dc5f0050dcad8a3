"""Where quantizers go for each mode, which layers there are, and how a layer is left in float."""

from __future__ import annotations

from contextlib import contextmanager
from fnmatch import fnmatch

from pytorch_quantization.nn.modules._utils import QuantMixin
from pytorch_quantization.nn.modules.tensor_quantizer import TensorQuantizer
from pytorch_quantization.tensor_quant import QuantDescriptor
from torch import nn

from harness.errors import HarnessError
from harness.quantize.blocks import replace_blocks
from harness.quantize.fx_residual import residual_aware
from harness.quantize.modules import NAIVE_MAP, SELECTIVE_MAP, slots, swap_layers

UNFRIENDLY_CHANNELS = 4  # a weighted layer reading fewer channels (an image stem) gains nothing from INT8


def placement(mode: str) -> str:
    """naive and hybrid place quantizers alike (hybrid only skips more), so they share calibration data."""
    return "residual" if mode == "selective" else "plain"


def prepare(model: nn.Module, mode: str, log=None) -> nn.Module:
    """The model with uncalibrated quantizers placed for `mode`; the float model's weights and device are kept.

    naive / hybrid: pytorch-quantization's default set of layers, one quantizer per layer input.
    selective: registered blocks replaced explicitly, then (if torch.fx can trace the model) residual Adds
    found from the graph get a shortcut quantizer and each tensor one shared quantizer.
    """
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


def _off() -> TensorQuantizer:
    return TensorQuantizer(QuantDescriptor(), disabled=True)


def set_float(model: nn.Module, names) -> None:
    """Leave the named layers in float: their own slots get a disabled quantizer, shared ones serve the rest."""
    layers = quant_layers(model)
    off = _off()
    for name in names:
        for attr in slots(layers[name]):
            setattr(layers[name], attr, off)


@contextmanager
def floated(layers: dict[str, nn.Module], names):
    """Temporarily leave the named layers in float (sensitivity analysis)."""
    saved = [(layers[n], attr, getattr(layers[n], attr)) for n in names for attr in slots(layers[n])]
    off = _off()
    for module, attr, _ in saved:
        setattr(module, attr, off)
    try:
        yield
    finally:
        for module, attr, q in saved:
            setattr(module, attr, q)
