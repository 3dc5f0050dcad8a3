"""Calibration cost: a statistics pass (|max| + histogram for every activation quantizer) over the quickstart's
calibration batches (4 of 50 images) against a plain float forward pass over the same batches, and the one-off
amax computation of each calibrator (all quantizers).

The figure is the median over rounds of (calibration ms / forward ms); the two alternate so machine drift hits
both. Goal: 1.5x or less. `--threads` sets torch's intra-op threads (default: torch's own); on a machine shared
with other jobs, run it with OMP_WAIT_POLICY=PASSIVE as the harness command sets it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from harness.data.datasets import resolve_dataset
from harness.models.registry import load_model, resolve_model
from harness.quantize.amax import compute_amax
from harness.quantize.calibrate import activation_quantizers, collect_stats
from harness.quantize.config import CALIBRATORS
from harness.quantize.replace import prepare


def _ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


@torch.no_grad()
def measure(model_name: str, mode: str, batch: int, batches: int, rounds: int, input_shape: str | None):
    spec = resolve_model(model_name, input_shape=input_shape)
    x, _ = resolve_dataset("digits", spec).take("calib", batch * batches)
    data = [x[i : i + batch] for i in range(0, len(x), batch)]
    float_model = load_model(spec)
    quant_model = prepare(load_model(spec), mode)
    tensors = [torch.from_numpy(b) for b in data]

    def forward():
        for t in tensors:
            float_model(t)

    forward()
    collect_stats(quant_model, data)  # warm-up both
    fwd, cal = [], []
    for _ in range(rounds):
        fwd.append(_ms(forward))
        cal.append(_ms(lambda: collect_stats(quant_model, data)))
    stats = collect_stats(quant_model, data)
    amax_ms = {c: _ms(lambda c=c: [compute_amax(s, c) for s in stats.values()]) for c in CALIBRATORS}
    ratio = statistics.median(c / f for c, f in zip(cal, fwd, strict=True))
    return statistics.median(fwd), statistics.median(cal), ratio, len(activation_quantizers(quant_model)), amax_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}; goal: calibration / forward <= 1.5")
    print("| model | mode | batches | forward ms | calibration ms | ratio | quantizers | "
          "amax ms (max / percentile / entropy / mse) |")
    print("|---|---|---|---|---|---|---|---|")
    for model, shape in (("digits-resnet", None), ("resnet18", "3x64x64")):
        for mode in ("naive", "selective"):
            f, c, ratio, n, amax = measure(model, mode, args.batch, args.batches, args.rounds, shape)
            name = model + (f" ({shape})" if shape else "")
            costs = " / ".join(f"{amax[k]:.0f}" for k in CALIBRATORS)
            print(f"| {name} | {mode} | {args.batches} x {args.batch} | {f:.1f} | {c:.1f} | {ratio:.2f} | {n} | "
                  f"{costs} |")


if __name__ == "__main__":
    main()
