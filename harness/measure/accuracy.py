"""Accuracy against labels and agreement with the FP32 PyTorch reference."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class AccuracyResult:
    samples: int
    top1: float | None  # %, None where the dataset has no labels
    top5: float | None
    top1_agreement: float | None  # % of samples whose argmax equals the reference's
    max_abs_error: float | None
    sqnr_db: float | None
    reference_top1: float | None = None  # % top-1 of the FP32 PyTorch reference on the same inputs
    top1_delta: float | None = None  # top1 - reference_top1, in points
    reference_degenerate: str | None = None  # why agreement with the reference is not scored, when it is not
    labels_beyond_head: int = 0  # samples whose label is no class the model's head outputs: top-1 cannot count them

    def to_dict(self) -> dict:
        return asdict(self)


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return 100.0 * float((top == labels[:, None]).any(axis=1).mean())


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio: 10 log10(|ref|^2 / |ref - test|^2); inf when identical."""
    ref = reference.astype(np.float64)
    noise = float(((ref - test.astype(np.float64)) ** 2).sum())
    signal = float((ref**2).sum())
    if noise == 0.0:
        return float("inf")
    return 10.0 * float(np.log10(signal / noise)) if signal > 0 else float("-inf")


def degenerate_outputs(outputs: np.ndarray) -> str | None:
    """Why a model's outputs cannot serve as a reference (SQNR and agreement against them mean nothing), or None.

    Seeded random weights give such models (mobilenet_v2's logits are ~1e-9 and the same for every input).
    """
    if outputs.size == 0:
        return "there are no outputs"
    if not np.all(np.isfinite(outputs)):
        return "some outputs are NaN or Inf"
    peak = float(np.abs(outputs).max())
    if peak < 1e-6:
        return f"every output is ~0: max |output| {peak:.2g}"
    if len(outputs) > 1 and float(outputs.std(axis=0).max()) <= 1e-4 * peak:
        return f"the outputs do not depend on the input: the same for all {len(outputs)} inputs"
    return None


def accuracy(logits: np.ndarray, labels: np.ndarray | None, reference: np.ndarray | None) -> AccuracyResult:
    logits = logits.astype(np.float32)
    top1 = topk_accuracy(logits, labels, 1) if labels is not None else None
    top5 = topk_accuracy(logits, labels, 5) if labels is not None else None
    agree = err = sq = None
    degenerate = degenerate_outputs(reference) if reference is not None else None
    if reference is not None and not degenerate:
        agree = 100.0 * float((logits.argmax(1) == reference.argmax(1)).mean())
        err = float(np.abs(logits - reference).max())
        sq = sqnr_db(reference, logits)
    ref_top1 = topk_accuracy(reference, labels, 1) if labels is not None and reference is not None else None
    delta = top1 - ref_top1 if ref_top1 is not None else None
    beyond = int((labels >= logits.shape[1]).sum()) if labels is not None else 0
    return AccuracyResult(len(logits), top1, top5, agree, err, sq, ref_top1, delta, degenerate, beyond)
