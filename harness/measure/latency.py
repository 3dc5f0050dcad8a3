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

    def to_dict(self) -> dict:
        return asdict(self)

    def warnings(self, cv_warn: float = CV_WARN) -> list[str]:
        notes = []
        if self.latency_cv > cv_warn:
            notes.append(
                f"latency coefficient of variation is {100 * self.latency_cv:.1f} % (> {100 * cv_warn:.1f} %): "
                "the machine is noisy; close other work, pin threads or time for longer"
            )
        median = {name: s["p50_ms"] for name, s in self.components.items()}
        compute = median.get("gpu_compute_ms")
        if compute and median.get("enqueue_ms", 0.0) > 0.8 * compute:  # trtexec's enqueue-bound warning
            notes.append(f"enqueue takes {median['enqueue_ms']:.3g} ms for {compute:.3g} ms of GPU compute: the "
                         "host, not the GPU, limits throughput; try --cuda-graph")
        if compute and max(median.get("h2d_ms", 0.0), median.get("d2h_ms", 0.0)) >= compute:
            notes.append("H2D or D2H copies take as long as GPU compute: latency is transfer-bound; "
                         "--no-data-transfers times the engine alone")
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
    )
