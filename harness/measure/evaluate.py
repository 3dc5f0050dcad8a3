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


def collect_outputs(runner: Runner, data: Dataset, split: str, batch: tuple[int, int], limit=None):
    """Logits of the runner, the inputs' labels (or None) and the FP32 reference logits."""
    batch_min, batch_size = batch
    reference_model = load_model(data.spec)
    outs, refs, labels = [], [], []
    with torch.no_grad():
        for x, y in data.batches(split, batch_size, limit):
            outs.append(runner.infer(_padded(x, batch_min))[: len(x)])
            refs.append(reference_model(torch.from_numpy(x)).numpy())
            if y is not None:
                labels.append(y)
    return np.concatenate(outs), (np.concatenate(labels) if labels else None), np.concatenate(refs)


def evaluate(runner: Runner, data: Dataset, split: str = "val", batch: tuple[int, int] = (1, 64),
             limit: int | None = None) -> AccuracyResult:
    logits, labels, reference = collect_outputs(runner, data, split, batch, limit)
    return accuracy(logits, labels, reference)


