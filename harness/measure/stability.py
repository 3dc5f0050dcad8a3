"""When to stop timing a cell, and whether its median can be trusted: precision and drift, judged apart.

- Precision: the distribution-free 95 % interval of the median of all pooled queries (order statistics). With
  a few hundred queries it is a few percent wide; it must be within the target (±5 % on a CPU, ±2 % on TensorRT).
- Drift: whether the repeats (windows of time) agree. Each repeat's median is compared with the median of the
  repeat medians: a repeat more than 3 scaled MADs (1.4826 x MAD) and more than the target away is set aside as
  an outlier window (a burst of other work), up to a quarter of the repeats. Drift is real, and the cell
  unstable, when more are set aside (bimodal: the machine switched between two states), when the kept repeats
  still spread wider than the target, or when the repeat medians trend (Kendall's tau p < 0.05 and a Theil-Sen
  change over the run wider than the target).
One slow window therefore widens nothing, while a machine that keeps changing is still refused. Every verdict
says why. Repeats continue, `timing.repeats` kept windows at least, until the verdict is stable or the cell's time
budget (`timing.max_s`) is spent; a sub-millisecond cell's repeats are cut to SAMPLES_PER_REPEAT queries, so its
budget holds more, shorter windows and one slow window is one of many.
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
OUTLIER_MADS = 3.0
MAD_SCALE = 1.4826  # MAD -> standard deviation of a normal distribution
MAX_OUTLIER_SHARE = 0.25  # at most a quarter of the repeats (at least one) may be set aside
TREND_P = 0.05
TREND_MIN_REPEATS = 5  # fewer cannot reach p < 0.05 with Kendall's tau
MIN_SAMPLES = 30  # fewer queries pin no median
SAMPLES_PER_REPEAT = 200  # a repeat needs no more to know its own median to a percent or two


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


def outlier_rule(target: float) -> str:
    return f"repeat median > {OUTLIER_MADS:g} MADs and > {target:g} % from the median of repeat medians"


@dataclass
class Verdict:
    """What the rule concludes about one cell's repeats; `reason` is None exactly when it is stable."""

    p50_ms: float
    lo_ms: float
    hi_ms: float
    target_pct: float
    repeats: int
    samples: int
    set_aside: int  # repeats set aside as outlier windows (their queries stay in the pooled median)
    drift_pct: float  # the kept repeat medians lie within ± this of the median of repeat medians (% of p50)
    trend_pct: float | None  # Theil-Sen change of the repeat medians over the run (% of p50); None: too few
    reason: str | None

    @property
    def stable(self) -> bool:
        return self.reason is None

    @property
    def half_width_pct(self) -> float:
        return 100.0 * max(self.p50_ms - self.lo_ms, self.hi_ms - self.p50_ms) / self.p50_ms

    def columns(self) -> dict:
        return {"latency_p50_ci_lo_ms": self.lo_ms, "latency_p50_ci_hi_ms": self.hi_ms,
                "latency_ci_pct": self.half_width_pct, "ci_target_pct": self.target_pct, "stable": self.stable,
                "unstable_reason": self.reason, "latency_drift_pct": self.drift_pct,
                "latency_trend_pct": self.trend_pct, "repeats_set_aside": self.set_aside,
                "outlier_rule": outlier_rule(self.target_pct)}


def _outliers(medians: np.ndarray, center: float, target: float) -> np.ndarray:
    spread = MAD_SCALE * float(np.median(np.abs(medians - center)))
    return np.abs(medians - center) > max(OUTLIER_MADS * spread, target / 100 * center)


def _trend(medians: np.ndarray) -> tuple[float | None, float]:
    """(Theil-Sen change over the run, Kendall's p) of the repeat medians in time order."""
    k = len(medians)
    if k < TREND_MIN_REPEATS:
        return None, 1.0
    from scipy.stats import kendalltau, theilslopes

    p = float(kendalltau(np.arange(k), medians).pvalue)
    slope = float(theilslopes(medians, np.arange(k))[0])
    return slope * (k - 1), (p if np.isfinite(p) else 1.0)


def _ms(value: float) -> str:
    return f"{value:.3g} ms"


def _overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _spread(kept: np.ndarray, drift: float, target: float, p50: float, drifted: int) -> str:
    """How kept repeats that spread beyond the target do: at two levels (a gap wider than the target with two
    repeats or more on each side), or spread out."""
    levels = np.sort(kept)
    gaps = np.diff(levels)
    i = int(np.argmax(gaps)) if len(gaps) else 0
    if len(gaps) and 100.0 * gaps[i] / p50 > target and 2 <= i + 1 <= len(levels) - 2:
        low, high = levels[: i + 1], levels[i + 1 :]
        return (f"bimodal: the repeat medians sit at two levels, {_ms(float(np.median(low)))} ({len(low)} repeats) "
                f"and {_ms(float(np.median(high)))} ({len(high)})")
    return (f"drift: the repeat medians spread ±{drift:.1f} % ({_ms(float(levels[0]))}-{_ms(float(levels[-1]))}), "
            f"{drifted} of them beyond ±{target:g} % with their own 95 % interval")


def judge(runs: list[np.ndarray], target: float, min_repeats: int = 1) -> Verdict:
    """The verdict on a cell's repeats (per-query latencies in ms, in the order they ran)."""
    pooled = np.concatenate(runs) if runs else np.empty(0)
    if len(pooled) == 0:
        return Verdict(np.nan, np.nan, np.nan, target, 0, 0, 0, np.nan, None, "too short: no query was timed")
    p50 = float(np.median(pooled))
    lo, hi = median_interval(pooled)
    medians = np.array([float(np.median(r)) for r in runs])
    center = float(np.median(medians))
    outlying = _outliers(medians, center, target)
    allowed = max(1, int(MAX_OUTLIER_SHARE * len(runs)))
    set_aside = int(outlying.sum()) if outlying.sum() <= allowed else 0
    keep = ~outlying if set_aside else np.ones(len(runs), dtype=bool)
    kept = medians[keep]
    drift = 100.0 * float(np.max(np.abs(kept - center))) / p50
    # A kept repeat drifts when even its own median's interval lies beyond the target: short repeats of noisy
    # queries scatter their medians by chance, which is no drift.
    band = (center * (1 - target / 100), center * (1 + target / 100))
    drifted = [i for i in np.flatnonzero(keep) if not _overlaps(median_interval(runs[i]), band)]
    change, p = _trend(medians)
    trend = None if change is None else 100.0 * change / p50
    reasons = []
    if len(runs) < min_repeats or len(pooled) < MIN_SAMPLES:
        reasons.append(f"too short: {len(runs)} repeat(s), {len(pooled)} queries (needs {min_repeats} repeats "
                       f"and {MIN_SAMPLES} queries)")
    if trend is not None and p < TREND_P and abs(trend) > target:
        reasons.append(f"trend: the repeat medians {'rose' if trend > 0 else 'fell'} {abs(trend):.1f} % over "
                       f"{len(runs)} repeats (Kendall p {p:.2g})")
    if outlying.sum() > allowed:
        slow = outlying & (medians > center)
        side = "slower than" if slow.sum() == outlying.sum() else "faster than" if not slow.any() else "away from"
        reasons.append(f"bimodal: {int(outlying.sum())} of {len(runs)} repeats sit {side} the rest (median "
                       f"{_ms(float(np.median(medians[outlying])))} against {_ms(float(np.median(kept)))}), more "
                       "than a quarter")
    elif drifted:
        reasons.append(_spread(kept, drift, target, p50, len(drifted)))
    width = 100.0 * max(p50 - lo, hi - p50) / p50
    if width > target:
        reasons.append(f"wide interval: the median's 95 % interval is ±{width:.1f} % (> ±{target:g} %)")
    return Verdict(p50, lo, hi, target, len(runs), len(pooled), set_aside, drift, trend,
                   "; ".join(reasons) or None)


@dataclass
class StopRule:
    min_repeats: int
    max_s: float  # time budget per cell, warm-ups included
    target_pct: float
    duration_s: float = 1.0  # the longest repeat (timing.duration_s)

    @classmethod
    def of(cls, timing: dict, backend: str) -> StopRule:
        return cls(timing["repeats"], timing["max_s"], target_pct(timing, backend), timing["duration_s"])

    def repeat_s(self, runs: list[np.ndarray]) -> float:
        """The next repeat's length: `duration_s`, or as long as SAMPLES_PER_REPEAT queries took so far."""
        if not runs:
            return self.duration_s
        return min(self.duration_s, SAMPLES_PER_REPEAT * float(np.median(np.concatenate(runs))) / 1e3)

    def done(self, runs: list[np.ndarray], spent_s: float) -> bool:
        """Stop when stable with `min_repeats` repeats kept (a set-aside window buys another), or out of budget."""
        if len(runs) < self.min_repeats:
            return False
        if spent_s >= self.max_s:
            return True
        verdict = judge(runs, self.target_pct, self.min_repeats)
        return verdict.stable and verdict.repeats - verdict.set_aside >= self.min_repeats


def load_average() -> float | None:
    """The host's 1-minute load average, where the OS offers it (not on Windows)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def time_until_stable(repeat: dict[str, Callable[[float, bool], Timing]], rules: dict[str, StopRule],
                      on_done: Callable[[str, list[Timing], float], None] | None = None) -> dict[str, list]:
    """Repeat each key's timing until its rule is met, in rounds: one repeat of every unfinished key per round, so
    with several keys a change in load hits all of them alike (`timing.interleave`). A repeat is called with its
    length in seconds and whether it is the key's first (which warms up; later ones need one untimed query to
    refill the caches the other keys used). `on_done(key, runs, seconds spent)` hears of each key as it
    finishes."""
    runs: dict[str, list[Timing]] = {k: [] for k in repeat}
    spent = dict.fromkeys(repeat, 0.0)
    pending = list(repeat)
    while pending:
        for key in pending:
            start = time.perf_counter()
            runs[key].append(repeat[key](rules[key].repeat_s([t.latency_ms for t in runs[key]]), not runs[key]))
            spent[key] += time.perf_counter() - start
        finished = [k for k in pending if rules[k].done([t.latency_ms for t in runs[k]], spent[k])]
        for key in finished:
            if on_done:
                on_done(key, runs[key], spent[key])
        pending = [k for k in pending if k not in finished]
    return runs
