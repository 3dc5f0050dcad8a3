"""The highest server rate that stays VALID under the latency bound: bisection from the offline figure down.

MLPerf submitters tune `server_target_qps` this way: the offline throughput is a ceiling (a server cannot
sustain more than the system answers with every sample queued), so the search tries the offline rate first and
halves the interval between the highest VALID rate and the lowest INVALID one until it is within `tolerance` of
the offline rate or `max_runs` runs are spent. Each probe is a whole LoadGen server run.

An INVALID verdict is tried again (`retries` times) before the search believes it: other processes on the
machine only ever add latency, so one VALID run shows the rate is served, while one INVALID run may be their
doing. On a quiet, dedicated runner the retry confirms the verdict and costs a run per INVALID step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from harness.measure.loadgen import ScenarioResult

TOLERANCE = 0.05  # of the offline rate: 1 + log2(20) = 6 rates
MAX_RUNS = 12
RETRIES = 1


@dataclass
class Search:
    offline_qps: float
    max_qps: float | None  # the highest VALID rate tried; None when every rate tried was INVALID
    invalid_at: float | None  # the lowest INVALID rate above it (None: VALID at the offline rate)
    runs: list[ScenarioResult] = field(default_factory=list)

    @property
    def best(self) -> ScenarioResult | None:
        """The run at max_qps."""
        return next((r for r in self.runs if r.valid and r.target_qps == self.max_qps), None)

    def note(self) -> str:
        if self.max_qps is None:
            return f"INVALID at every rate tried, down to {min(r.target_qps for r in self.runs):.4g} QPS"
        if self.invalid_at is None:
            return "VALID at the offline rate: throughput, not the latency bound, limits the server"
        return (f"VALID at {self.max_qps:.4g} QPS, INVALID at {self.invalid_at:.4g} QPS "
                f"({len(self.runs)} server runs)")

    def table(self) -> list[dict]:
        """Every run of the search, in order: the rate, the verdict and what was measured."""
        return [{"target_qps": r.target_qps, "valid": r.valid, "qps": r.qps, "latency_p99_ms": r.latency_p99_ms}
                for r in self.runs]


def find_max_qps(run_at: Callable[[float], ScenarioResult], offline_qps: float, tolerance: float = TOLERANCE,
                 max_runs: int = MAX_RUNS, retries: int = RETRIES) -> Search:
    """Bisect [0, offline_qps] with `run_at(rate)` (a server run at that target) as the test."""
    lo, hi = 0.0, float(offline_qps)
    search = Search(float(offline_qps), None, None)
    target = hi
    while len(search.runs) < max_runs:
        result = run_at(target)
        search.runs.append(result)
        for _ in range(retries):
            if result.valid or len(search.runs) >= max_runs:
                break
            result = run_at(target)
            search.runs.append(result)
        if result.valid:
            lo = target
        else:
            hi = target
        if lo == offline_qps or hi - lo <= tolerance * offline_qps:
            break
        target = (lo + hi) / 2
    search.max_qps = lo or None
    search.invalid_at = None if lo == offline_qps else hi
    return search
