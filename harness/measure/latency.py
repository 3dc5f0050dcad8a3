"""Latency percentiles and stability from a Timing: no means of everything, percentiles first."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from harness.backends.base import Timing

CV_WARN = 0.05  # CPU default; TensorRT's runner asks for trtexec's 2.5 %


@dataclass
class LatencyStats:
    includes: str
    batch: int
    iterations: int
    wall_s: float
    latency_min_ms: float
    latency_mean_ms: float
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    latency_cv: float
    throughput_ips: float
    components: dict
    convention: str = ""
    streams: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    def warnings(self, cv_warn: float = CV_WARN) -> list[str]:
        """trtexec's warnings: unstable timings, enqueue-bound, transfer-bound, several streams; the fixes are
        named in the flags of the convention that ran (TensorRT 11 has CUDA graphs and no transfers by default)."""
        notes = []
        if self.latency_cv > cv_warn:
            notes.append(
                f"latency coefficient of variation is {100 * self.latency_cv:.1f} % (> {100 * cv_warn:.1f} %): "
                "the machine is noisy; close other work, pin threads or time for longer"
            )
        median = {name: s["p50_ms"] for name, s in self.components.items()}
        compute = median.get("gpu_compute_ms")
        compute_cv = self.components.get("gpu_compute_ms", {}).get("cv", 0.0)
        v11 = self.convention == "trtexec 11"
        if compute_cv > cv_warn:
            notes.append(f"GPU compute time is unstable: coefficient of variation {100 * compute_cv:.1f} % "
                         f"(> {100 * cv_warn:.1f} %); lock the GPU clocks (nvidia-smi --lock-gpu-clocks) "
                         + ("and keep spin wait on" if v11 else "or use --spin-wait"))
        if compute and median.get("enqueue_ms", 0.0) > 0.8 * compute:  # trtexec's enqueue-bound warning
            notes.append(f"enqueue takes {median['enqueue_ms']:.3g} ms for {compute:.3g} ms of GPU compute: the "
                         "host, not the GPU, limits throughput; "
                         + ("drop --no-cuda-graph" if v11 else "try --cuda-graph"))
        if compute and max(median.get("h2d_ms", 0.0), median.get("d2h_ms", 0.0)) >= compute:
            notes.append("H2D or D2H copies take as long as GPU compute: latency is transfer-bound; "
                         + ("drop --include-data-transfers" if v11 else "--no-data-transfers")
                         + " times the engine alone")
        if self.streams > 1:
            notes.append(f"{self.streams} streams run queries at once: they compete for the GPU, so latencies "
                         "are not reliable (as trtexec warns for --infStreams); read the throughput")
        return notes


def summarize(values_ms: np.ndarray) -> dict[str, float]:
    v = np.asarray(values_ms, dtype=np.float64)
    p50, p90, p95, p99 = np.percentile(v, [50, 90, 95, 99])
    mean = float(v.mean())
    return {"min_ms": float(v.min()), "mean_ms": mean, "p50_ms": float(p50), "p90_ms": float(p90),
            "p95_ms": float(p95), "p99_ms": float(p99), "max_ms": float(v.max()),
            "cv": float(v.std() / mean) if mean else 0.0}


def latency_stats(t: Timing) -> LatencyStats:
    """Throughput is samples over host wall time of the timed loop, as trtexec defines it."""
    s = summarize(t.latency_ms)
    return LatencyStats(
        includes=t.includes, batch=t.batch, iterations=t.queries, wall_s=t.wall_s,
        latency_min_ms=s["min_ms"], latency_mean_ms=s["mean_ms"], latency_p50_ms=s["p50_ms"],
        latency_p90_ms=s["p90_ms"], latency_p95_ms=s["p95_ms"], latency_p99_ms=s["p99_ms"],
        latency_max_ms=s["max_ms"], latency_cv=s["cv"],
        throughput_ips=t.batch * t.queries / t.wall_s if t.wall_s > 0 else float("nan"),
        components={name: summarize(vals) for name, vals in t.components.items()},
        convention=t.convention, streams=t.streams,
    )
