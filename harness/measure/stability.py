"""When to stop timing a cell: once the 95 % confidence interval of its median latency is narrow enough.

Two intervals are computed and the wider one is kept, because per-query latencies are not independent draws:
- the distribution-free interval of the median of all pooled samples (order statistics), which is right for
  independent samples and shrinks with their number;
- a Student-t interval on the medians of the repeats (batch means), which widens when the machine's load
  changes between repeats, the noise the first interval cannot see.
Repeats continue, `timing.repeats` at least, until the interval's half-width is within the target (percent of
the median) or the cell's time budget (`timing.max_s`) is spent; a cell that runs out of budget is unstable.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.backends.base import Timing

CONFIDENCE = 0.95
TARGET_PCT = {"tensorrt": 2.0}  # ±2 % on a GPU; everything else (host-timed CPU backends) ±5 %
DEFAULT_TARGET_PCT = 5.0


def target_pct(timing: dict, backend: str) -> float:
    """The experiment's `timing.ci_target_pct`, else the backend's default."""
    given = timing.get("ci_target_pct")
    return float(given) if given is not None else TARGET_PCT.get(backend, DEFAULT_TARGET_PCT)


def median_interval(samples: np.ndarray) -> tuple[float, float]:
    """Order-statistic 95 % interval of the median (normal approximation of the binomial ranks)."""
    x = np.sort(np.asarray(samples, dtype=np.float64))
    n = len(x)
    half = 0.98 * np.sqrt(n)  # z(0.975) / 2 * sqrt(n)
    lo, hi = int(np.floor(n / 2 - half)), int(np.ceil(n / 2 + half))
    return float(x[max(lo, 0)]), float(x[min(hi, n - 1)])


def repeats_interval(medians: list[float], center: float) -> tuple[float, float]:
    """Student-t 95 % interval of the mean of the repeats' medians, centred on the pooled median."""
    k = len(medians)
    if k < 2:
        return center, center
    from scipy.stats import t

    half = float(t.ppf(0.5 + CONFIDENCE / 2, k - 1) * np.std(medians, ddof=1) / np.sqrt(k))
    return center - half, center + half


@dataclass
class Interval:
    p50_ms: float
    lo_ms: float
    hi_ms: float

    @property
    def half_width_pct(self) -> float:
        return 100.0 * max(self.p50_ms - self.lo_ms, self.hi_ms - self.p50_ms) / self.p50_ms

    def columns(self) -> dict:
        return {"latency_p50_ci_lo_ms": self.lo_ms, "latency_p50_ci_hi_ms": self.hi_ms,
                "latency_ci_pct": self.half_width_pct}


def interval(runs: list[np.ndarray]) -> Interval:
    """The median of the pooled samples and the wider of the two intervals around it."""
    pooled = np.concatenate(runs)
    p50 = float(np.percentile(pooled, 50))
    a_lo, a_hi = median_interval(pooled)
    b_lo, b_hi = repeats_interval([float(np.percentile(r, 50)) for r in runs], p50)
    # The t-interval of a few wildly different repeats can pass the fastest query (even zero): no median can.
    return Interval(p50, max(min(a_lo, b_lo), float(pooled.min())), min(max(a_hi, b_hi), float(pooled.max())))


@dataclass
class StopRule:
    min_repeats: int
    max_s: float  # time budget per cell, warm-ups included
    target_pct: float

    @classmethod
    def of(cls, timing: dict, backend: str) -> StopRule:
        return cls(timing["repeats"], timing["max_s"], target_pct(timing, backend))

    def done(self, runs: list[np.ndarray], spent_s: float) -> bool:
        if len(runs) < self.min_repeats:
            return False
        return spent_s >= self.max_s or interval(runs).half_width_pct <= self.target_pct


def load_average() -> float | None:
    """The host's 1-minute load average, where the OS offers it (not on Windows)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def time_until_stable(repeat: dict[str, Callable[[], Timing]], rules: dict[str, StopRule]) -> dict[str, list]:
    """Repeat each key's timing until its rule is met, in rounds: one repeat of every unfinished key per round,
    so with several keys a change in load hits all of them alike (`timing.interleave`)."""
    runs: dict[str, list[Timing]] = {k: [] for k in repeat}
    spent = dict.fromkeys(repeat, 0.0)
    pending = list(repeat)
    while pending:
        for key in pending:
            start = time.perf_counter()
            runs[key].append(repeat[key]())
            spent[key] += time.perf_counter() - start
        pending = [k for k in pending if not rules[k].done([t.latency_ms for t in runs[k]], spent[k])]
    return runs
