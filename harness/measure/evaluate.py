"""Run an artifact over a dataset split and score it against labels and the FP32 PyTorch reference."""

from __future__ import annotations

from dataclasses import dataclass

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
    return evaluate_outputs(runner, data, split, batch, limit, reference)[0]


def evaluate_outputs(runner: Runner, data: Dataset, split: str = "val", batch: tuple[int, int] = (1, 64),
                     limit: int | None = None, reference: np.ndarray | None = None):
    """(accuracy, the runner's logits, the FP32 reference's), for checks that reuse the same outputs."""
    logits, labels, reference = collect_outputs(runner, data, split, batch, limit, reference)
    return accuracy(logits, labels, reference, data.num_classes), logits, reference


FUSION_GAP_DB = 1.0  # the strict export check's allowed gap between two roundings of one quantized model


@dataclass
class DeployedCheck:
    """Does the deployed run (ONNX Runtime's fused integer kernels on this CPU) compute what the file says?
    Both runs are scored against FP32, as two roundings of one quantized model are in the export check."""

    as_written_sqnr_db: float | None
    deployed_sqnr_db: float | None
    as_written_top1_agreement_pct: float | None
    deployed_top1_agreement_pct: float | None

    @property
    def agrees(self) -> bool | None:
        if self.as_written_sqnr_db is None or self.deployed_sqnr_db is None:
            return None  # a degenerate reference scores neither
        return self.as_written_sqnr_db - self.deployed_sqnr_db <= FUSION_GAP_DB

    def warning(self) -> str | None:
        if self.agrees is not False:
            return None
        return (f"ONNX Runtime's fused integer kernels on this CPU do not compute what the file says: against FP32 "
                f"the deployed run reads {self.deployed_sqnr_db:.2f} dB SQNR, "
                f"{self.deployed_top1_agreement_pct:.1f} % top-1 agreement, the file as written "
                f"{self.as_written_sqnr_db:.2f} dB, {self.as_written_top1_agreement_pct:.1f} %; the latency is the "
                "deployed run's, the accuracy the file's")

    def columns(self) -> dict:
        return {"deployed_sqnr_db": self.deployed_sqnr_db,
                "deployed_top1_agreement_pct": self.deployed_top1_agreement_pct,
                "deployed_matches_file": self.agrees}


DEPLOYED_SAMPLES = 128  # a paired SQNR gap over 128 inputs is as steady as the export check's over 32


def check_deployed(runner: Runner, data: Dataset, split: str, batch: tuple[int, int], as_written: np.ndarray,
                   reference: np.ndarray) -> DeployedCheck | None:
    """Score the runner's timed (deployed) session too, where it is not the session accuracy was measured on: on
    the first DEPLOYED_SAMPLES inputs of the split, paired with the as-written run's logits on the same inputs."""
    deployed = getattr(runner, "deployed_runner", lambda: None)()
    if deployed is None:
        return None
    n = min(len(as_written), DEPLOYED_SAMPLES)
    logits = collect_outputs(deployed, data, split, batch, n, reference[:n])[0]
    written, fused = (accuracy(out, None, reference[:n]) for out in (as_written[:n], logits))
    return DeployedCheck(written.sqnr_db, fused.sqnr_db, written.top1_agreement, fused.top1_agreement)
