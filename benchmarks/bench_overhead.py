"""Harness CPU timing overhead: `CpuRunner.time` against a bare ONNX Runtime loop, same model and inputs.

Rounds alternate between the two so machine drift hits both; the figure is the median over rounds of
harness p50 / bare p50 (target <= 1.03).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from harness.backends.base import BuildOptions
from harness.backends.cpu import CpuRunner
from harness.build import build_artifact
from harness.data.datasets import SyntheticDataset
from harness.models.registry import resolve_model


def bare_loop(session, feed, names, iterations: int) -> float:
    """The loop a user would write by hand: session.run between two clock reads."""
    for _ in range(10):
        session.run(names, feed)
    lat = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        session.run(names, feed)
        lat.append(time.perf_counter() - t0)
    return float(np.percentile(lat, 50) * 1e3)


def measure(model: str, batch: int, rounds: int, iterations: int, engines: Path) -> tuple[float, float, float]:
    spec = resolve_model(model)
    meta, _ = build_artifact(spec, "cpu", BuildOptions(batch_opt=batch, batch_max=max(batch, 32)), engines)
    x = np.resize(SyntheticDataset(spec).take("val", 1)[0], (batch, *spec.input_shape)).astype(np.float32)
    runner = CpuRunner(Path(meta.artifact))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    bare = ort.InferenceSession(meta.artifact, so, providers=["CPUExecutionProvider"])
    feed, names = {bare.get_inputs()[0].name: x}, [bare.get_outputs()[0].name]
    ratios, hs, bs = [], [], []
    for _ in range(rounds):
        b = bare_loop(bare, feed, names, iterations)
        h = float(np.percentile(runner.time(x, 0.05, iterations, 0.0).latency_ms, 50))
        ratios.append(h / b)
        hs.append(h)
        bs.append(b)
    return statistics.median(hs), statistics.median(bs), statistics.median(ratios)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iterations", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'model':<14}{'batch':>6}{'harness p50 ms':>16}{'bare ORT p50 ms':>17}{'ratio':>8}")
        for model, batch in (("digits-resnet", 1), ("digits-resnet", 32), ("resnet18", 1)):
            iters = args.iterations if model == "digits-resnet" else max(20, args.iterations // 10)
            h, b, r = measure(model, batch, args.rounds, iters, Path(tmp))
            print(f"{model:<14}{batch:>6}{h:>16.4f}{b:>17.4f}{r:>8.3f}  (target <= 1.03)")


if __name__ == "__main__":
    main()
