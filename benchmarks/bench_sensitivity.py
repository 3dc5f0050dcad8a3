"""Hybrid mode's sensitivity analysis on a bounded subset of the calibration images: what it saves, and whether it
changes the answer.

For each model, the calibrated hybrid-placement model is ranked (each layer alone in float, SQNR of the logits
against FP32) on all calibration images and on evenly spaced subsets of them. Printed: seconds, the layers
hybrid leaves in float (the top HYBRID_AUTO_SKIP), whether they match the full ranking's, and Kendall's tau of
the subset's gains against the full set's over all layers.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from harness.models.registry import resolve_model
from harness.quantize.checkpoint import quantized
from harness.quantize.config import HYBRID_AUTO_SKIP, QuantConfig, calibration_data
from harness.quantize.sensitivity import analyse, most_sensitive, subset


def rank(model, x, skip):
    start = time.perf_counter()
    _, ranked = analyse(model, x, None, "sqnr", skip=skip, reverse=False)
    return time.perf_counter() - start, ranked


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="32,64,128")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print("| model | images | seconds | left in float | same as all images | Kendall tau of gains |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape, batch in (("digits-resnet", None, 50), ("resnet18", "3x64x64", 50)):
            spec = resolve_model(name, input_shape=shape)
            # hybrid placement, calibrated, no layer left in float yet: what the analysis ranks
            cfg = QuantConfig(mode="hybrid", calib="max", calib_batches=4, calib_batch_size=batch, auto_skip=0)
            qm = quantized(spec, cfg.to_dict(), Path(tmp))
            x = np.concatenate([b for b, _ in calibration_data(spec, cfg)])
            full_s, full = rank(qm.model, x, qm.skipped)
            gains = {r.layer: r.gain for r in full}
            chosen = most_sensitive(full, HYBRID_AUTO_SKIP)
            label = name + (f" ({shape})" if shape else "")
            print(f"| {label} | {len(x)} (all) | {full_s:.1f} | {', '.join(chosen)} | - | 1 |")
            for size in sizes:
                if size >= len(x):
                    continue
                seconds, ranked = rank(qm.model, subset(x, size), qm.skipped)
                picked = most_sensitive(ranked, HYBRID_AUTO_SKIP)
                tau = kendalltau([gains[r.layer] for r in ranked], [r.gain for r in ranked]).statistic
                print(f"| {label} | {size} | {seconds:.1f} | {', '.join(picked)} | "
                      f"{'yes' if picked == chosen else 'no'} | {tau:.2f} |")


if __name__ == "__main__":
    main()
