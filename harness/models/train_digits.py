"""Reproduce the bundled digits-resnet weights (`harness train`): seeded, CPU."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from harness.data.datasets import DigitsDataset
from harness.fileio import atomic_write
from harness.models.digits_resnet import DigitsResNet
from harness.models.registry import BUNDLED_WEIGHTS, resolve_model

SEED = 0


def train_digits(out: Path, epochs: int = 30, lr: float = 0.05, log=print) -> float:
    """Train with SGD + cosine LR and light shift augmentation; returns validation top-1 (%)."""
    torch.manual_seed(SEED)
    spec = resolve_model("digits-resnet")
    data = DigitsDataset(spec)
    x, y = data.take("train", data.size("train"))
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    model = DigitsResNet()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = epochs * ((len(x) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(SEED)
    started = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            xb, yb = x[perm[i : i + 64]], y[perm[i : i + 64]]
            dx, dy = torch.randint(-2, 3, (2,), generator=gen).tolist()
            xb = torch.roll(xb, shifts=(dx, dy), dims=(2, 3))
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        elapsed = time.perf_counter() - started
        eta = elapsed / (epoch + 1) * (epochs - epoch - 1)
        log(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.4f}  elapsed {elapsed:.0f} s  ETA {eta:.0f} s")
    acc = evaluate_torch(model.eval(), data)
    atomic_write(out, lambda tmp: torch.save(model.state_dict(), tmp))
    log(f"validation top-1 {acc:.2f} % -> {out}")
    return acc


@torch.no_grad()
def evaluate_torch(model: torch.nn.Module, data: DigitsDataset) -> float:
    correct = total = 0
    for xb, yb in data.batches("val", 256):
        correct += int((model(torch.from_numpy(xb)).argmax(1).numpy() == yb).sum())
        total += len(yb)
    return 100.0 * correct / total


if __name__ == "__main__":
    train_digits(BUNDLED_WEIGHTS)
