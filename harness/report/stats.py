"""Is CURRENT slower than BASELINE? Two tests on the raw per-query latencies, as Google Benchmark's compare.py
and asv use them: a one-sided Mann-Whitney U test (no assumption about the shape of the distribution) and a
bootstrap interval of the ratio of the medians (how much slower, with its uncertainty)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
RESAMPLES = 1000
MAX_SAMPLES = 4000  # per side, evenly thinned: more adds nothing to a test that is already decisive


@dataclass
class Shift:
    ratio: float  # current median / baseline median
    lo: float  # 95 % interval of the ratio
    hi: float
    p_value: float | None  # one-sided: current is slower; None when no samples were kept
    method: str

    @property
    def significant(self) -> bool:
        if self.p_value is not None:
            return self.p_value < ALPHA
        return not np.isfinite(self.lo) or self.lo > 1.0


def _thin(x: np.ndarray) -> np.ndarray:
    return x if len(x) <= MAX_SAMPLES else x[np.linspace(0, len(x) - 1, MAX_SAMPLES).astype(int)]


def bootstrap_ratio(base: np.ndarray, cur: np.ndarray, seed: int = 0, q: float = 50.0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of percentile_q(cur) / percentile_q(base) (the medians by default; the
    p99s for scenario cells); seeded, so a verdict is repeatable."""
    rng = np.random.default_rng(seed)
    ratios = []
    for _ in range(RESAMPLES // 100):  # in chunks: 100 resamples of 4000 samples are 3 MB
        b = np.percentile(rng.choice(base, (100, len(base))), q, axis=1)
        c = np.percentile(rng.choice(cur, (100, len(cur))), q, axis=1)
        ratios.append(c / b)
    lo, hi = np.percentile(np.concatenate(ratios), [2.5, 97.5])
    return float(lo), float(hi)


def slowdown(base: np.ndarray, cur: np.ndarray) -> Shift:
    from scipy.stats import mannwhitneyu

    base, cur = _thin(np.asarray(base, np.float64)), _thin(np.asarray(cur, np.float64))
    p = float(mannwhitneyu(cur, base, alternative="greater").pvalue)
    lo, hi = bootstrap_ratio(base, cur)
    return Shift(float(np.median(cur) / np.median(base)), lo, hi, p, "mann-whitney")


def slowdown_from_intervals(base: dict, cur: dict) -> Shift:
    """Rows without samples (tables from before samples were kept): the ratio of the p50s, and the widest ratio
    their 95 % intervals allow; significant only when even the least slowdown they allow is one."""
    ratio = cur["latency_p50_ms"] / base["latency_p50_ms"]
    try:
        lo = cur["latency_p50_ci_lo_ms"] / base["latency_p50_ci_hi_ms"]
        hi = cur["latency_p50_ci_hi_ms"] / base["latency_p50_ci_lo_ms"]
    except (TypeError, ZeroDivisionError):
        lo = hi = float("nan")
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return Shift(ratio, float("nan"), float("nan"), None, "p50 only")
    return Shift(ratio, lo, hi, None, "intervals")
