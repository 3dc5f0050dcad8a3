"""Run an artifact over a dataset split and score it against labels and the FP32 PyTorch reference."""

from __future__ import annotations

import numpy as np
import torch

from harness.backends.base import Runner
from harness.data.datasets import Dataset
from harness.measure.accuracy import AccuracyResult, accuracy
from harness.models.registry import load_model


def _padded(x: np.ndarray, batch_min: int) -> np.ndarray:
    """Repeat the last sample so a short final batch still fits the engine's minimum batch."""
    if len(x) >= batch_min:
        return x
    return np.concatenate([x, np.repeat(x[-1:], batch_min - len(x), axis=0)])


def reference_outputs(data: Dataset, split: str, batch_size: int, limit: int | None = None) -> np.ndarray:
    """The FP32 PyTorch logits of a split: the same for every artifact of a model, so a sweep computes them once."""
    model = load_model(data.spec)
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x)).numpy() for x, _ in data.batches(split, batch_size, limit)])


def collect_outputs(runner: Runner, data: Dataset, split: str, batch: tuple[int, int], limit=None,
                    reference: np.ndarray | None = None):
    """Logits of the runner, the inputs' labels (or None) and the FP32 reference logits (given, or computed)."""
    batch_min, batch_size = batch
    if reference is None:
        reference = reference_outputs(data, split, batch_size, limit)
    outs, labels = [], []
    for x, y in data.batches(split, batch_size, limit):
        outs.append(runner.infer(_padded(x, batch_min))[: len(x)])
        if y is not None:
            labels.append(y)
    return np.concatenate(outs), (np.concatenate(labels) if labels else None), reference


def evaluate(runner: Runner, data: Dataset, split: str = "val", batch: tuple[int, int] = (1, 64),
             limit: int | None = None, reference: np.ndarray | None = None) -> AccuracyResult:
    logits, labels, reference = collect_outputs(runner, data, split, batch, limit, reference)
    return accuracy(logits, labels, reference, data.num_classes)
