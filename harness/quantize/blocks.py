"""Explicit residual-aware replacement of known blocks, and the hook that registers a user's block class.

Replacing a block is the way in for blocks that torch.fx cannot trace: the quantized block quantizes its
residual Add on the shortcut input only, and the block input that feeds both the first conv and the shortcut
(or the downsample conv) gets one shared quantizer.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from harness.quantize.modules import (
    RESIDUAL_SLOTS,
    SELECTIVE_MAP,
    activation_quantizer,
    input_slots,
    share,
    slots,
    swap_layers,
    twin,
)

BlockConverter = Callable[[nn.Module], nn.Module]
_REGISTRY: dict[type, BlockConverter] = {}
QUANT_BLOCK = "_harness_quant_block"  # marks converted blocks: torch.fx treats them as leaves
RESIDUAL_BLOCK = "_harness_residual_block"  # ...of them, the registered residual blocks (not attention modules)


def register_block(cls: type, convert: BlockConverter | None = None):
    """Quantize every `cls` instance with `convert(block) -> quantized block`, not by tracing into it.

    Usable as a decorator on the converter. The converter typically calls `quantize_layers(block)` and
    `activation_quantizer()`, applies the shortcut quantizer in its forward, and may define
    `input_slots(index)` so the block's input quantizer is shared with other consumers of that tensor.
    """
    if convert is None:
        return lambda fn: register_block(cls, fn)
    _REGISTRY[cls] = convert
    return convert


def unregister_block(cls: type) -> None:
    _REGISTRY.pop(cls, None)


def quantize_layers(module: nn.Module) -> nn.Module:
    """Quantized twins for the weighted layers and max-pools inside `module` (weights and device kept)."""
    return swap_layers(module, SELECTIVE_MAP)


def replace_blocks(model: nn.Module) -> nn.Module:
    """Convert every registered block class (the root included), outermost first."""
    convert = _REGISTRY.get(type(model))
    if convert is not None:
        block = convert(model)
        setattr(block, QUANT_BLOCK, True)
        setattr(block, RESIDUAL_BLOCK, True)
        return block
    for name, child in list(model.named_children()):
        setattr(model, name, replace_blocks(child))
    return model


def residual_slots(module: nn.Module) -> list[str]:
    """The module's own slots that quantize a residual shortcut: the standard names, and every quantizer a
    converted (registered) block holds itself, whatever the converter named it (the block's own quantizers serve
    its residual Add, per register_block's contract)."""
    own = slots(module)
    return own if getattr(module, RESIDUAL_BLOCK, False) else [attr for attr in own if attr in RESIDUAL_SLOTS]


def quantized_residuals(model: nn.Module) -> list[str]:
    """Names of the residual Adds (and converted blocks) whose shortcut runs in INT8: the one count `harness
    quantize` prints, the same Adds `harness inspect` finds quantized in the exported file."""
    return [name for name, m in model.named_modules()
            if any(not getattr(m, attr)._disabled for attr in residual_slots(m))]


class _ResidualBlock:
    """Shared input and shortcut wiring for torchvision's BasicBlock and Bottleneck."""

    def _shortcut(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.residual_quantizer(identity)

    def input_slots(self, index: int) -> list[tuple[nn.Module, str]]:
        found = input_slots(self.conv1)
        if self.downsample is None:
            found.append((self, "residual_quantizer"))
        elif isinstance(self.downsample, nn.Sequential) and len(self.downsample):
            found += input_slots(self.downsample[0])
        return found

    @classmethod
    def from_float(cls, block: nn.Module) -> nn.Module:
        q = quantize_layers(twin(block, cls))
        if q.downsample is None:
            q.residual_quantizer = q.conv1._input_quantizer
        else:
            q.residual_quantizer = activation_quantizer()
        share(q.input_slots(0))
        return q


class QuantBasicBlock(_ResidualBlock, BasicBlock):
    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self._shortcut(x))


class QuantBottleneck(_ResidualBlock, Bottleneck):
    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self._shortcut(x))


register_block(BasicBlock, QuantBasicBlock.from_float)
register_block(Bottleneck, QuantBottleneck.from_float)
