"""Short quantization-aware fine-tuning from a calibrated PTQ model (pytorch-quantization's recipe).

SGD with momentum, cosine LR from 1 % of the base LR, about 10 % of the original schedule. Scales are
frozen: amax values are buffers, not parameters, so only weights (and BatchNorm statistics) move.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from harness.data.datasets import Dataset
from harness.errors import HarnessError
from harness.progress import Ticker

BASE_LR, BASE_EPOCHS = 0.05, 30  # the digits-resnet schedule (harness train)
QAT_LR, QAT_EPOCHS = BASE_LR * 0.01, max(1, round(BASE_EPOCHS * 0.1))


def finetune(model: nn.Module, data: Dataset, epochs: int = QAT_EPOCHS, lr: float = QAT_LR,
             batch_size: int = 64, limit: int | None = None, seed: int = 0, log=None) -> nn.Module:
    """Train `model` in place on the train split (at most `limit` samples an epoch) with fake quantization on."""
    if not data.has_labels:
        raise HarnessError(f"--dataset {data.name} has no labels: QAT needs a labelled train split")
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    steps = epochs * math.ceil(min(data.size("train"), limit or data.size("train")) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    ticker = Ticker("qat step", steps, log)
    model.train()
    for epoch in range(epochs):
        total = count = 0
        for x, y in data.batches("train", batch_size, limit):
            loss = nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total, count = total + float(loss.detach()) * len(y), count + len(y)
            ticker.tick(note=f" (epoch {epoch + 1}/{epochs})")
        if log:
            log(f"qat epoch {epoch + 1}/{epochs}: loss {total / max(count, 1):.4f}")
    return model.eval()
