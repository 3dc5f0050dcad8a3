"""Seeded weights with realistic activations, for checks that deep networks must pass.

torchvision's seeded initial weights keep BatchNorm's default statistics (mean 0, var 1), so activations vanish
or explode with depth (mobilenet_v2's logits come out ~1e-9 and input-independent) and hide what quantization
and rounding do to trained networks. Measuring the statistics on seeded inputs, as training would, fixes that.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, input_shape, batches: int = 2, batch_size: int = 8,
                        seed: int = 1) -> nn.Module:
    """Replace every BatchNorm's running statistics by those of seeded standard-normal inputs; eval mode after."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    model.train()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        model(torch.randn(batch_size, *input_shape, generator=generator))
    return model.eval()
