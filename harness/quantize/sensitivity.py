"""Per-layer sensitivity: each layer alone in float (rest INT8), and each layer alone in INT8 (rest float)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from harness.measure.accuracy import sqnr_db, topk_accuracy
from harness.progress import Ticker
from harness.quantize.modules import fb_fake_quant
from harness.quantize.replace import floated, quant_layers

METRICS = ("sqnr", "top1")


@dataclass
class LayerSensitivity:
    layer: str
    float_alone: float  # metric with only this layer in float, the rest quantized
    quant_alone: float | None  # metric with only this layer quantized, the rest float (None: not measured)
    gain: float  # float_alone - all-quantized metric: what leaving this layer in float recovers

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def logits(model: nn.Module, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """PyTorch fake-quant outputs, with the same quantize math as the exported QuantizeLinear."""
    model.eval()
    with fb_fake_quant():
        return np.concatenate([model(torch.from_numpy(x[i : i + batch])).numpy() for i in range(0, len(x), batch)])


def subset(x: np.ndarray, count: int) -> np.ndarray:
    """`count` evenly spaced samples of `x` (all of them when it holds no more): every calibration batch is
    represented, and the same images are picked every time."""
    if len(x) <= count:
        return x
    return x[np.linspace(0, len(x) - 1, count).round().astype(int)]


def score(metric: str, out: np.ndarray, reference: np.ndarray, labels: np.ndarray | None) -> float:
    if metric == "top1":
        return topk_accuracy(out, labels, 1)
    value = sqnr_db(reference, out)
    return min(value, 200.0)  # identical outputs: a large finite figure keeps rankings and JSON sane


def analyse(model: nn.Module, x: np.ndarray, labels: np.ndarray | None, metric: str = "sqnr",
            skip=(), reverse: bool = True, log=None) -> tuple[dict, list[LayerSensitivity]]:
    """Rank the layers not in `skip` by how much leaving them in float recovers (largest gain first).

    `reverse` also measures each layer quantized alone (the rest float), which doubles the cost. With `log`,
    progress and an ETA per layer.
    """
    layers = quant_layers(model)
    names = [n for n in layers if n not in skip]
    ticker = Ticker(f"sensitivity analysis ({len(x)} images): layer", len(names), log)
    if log:
        log(f"sensitivity analysis: {len(names)} layers, {len(names) * (2 if reverse else 1) + 2} passes over "
            f"{len(x)} images")
    with floated(layers, list(layers)):
        reference = logits(model, x)
    with floated(layers, list(skip)):
        quantized = logits(model, x)
        rows = []
        for name in names:
            with floated(layers, [name]):
                alone_float = score(metric, logits(model, x), reference, labels)
            alone_quant = None
            if reverse:
                with floated(layers, [n for n in names if n != name]):
                    alone_quant = score(metric, logits(model, x), reference, labels)
            rows.append((name, alone_float, alone_quant))
            ticker.tick()
    base = {"fp32": score(metric, reference, reference, labels), "int8": score(metric, quantized, reference, labels)}
    ranked = [LayerSensitivity(n, f, q, f - base["int8"]) for n, f, q in rows]
    ranked.sort(key=lambda r: (-r.gain, r.quant_alone or 0.0))  # ties: the worse alone, the more sensitive
    return base, ranked


def most_sensitive(ranked: list[LayerSensitivity], count: int) -> list[str]:
    """The `count` layers whose float-alone gain is largest, among those with any gain at all."""
    return [r.layer for r in ranked if r.gain > 0][:count]
