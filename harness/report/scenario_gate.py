"""`report compare` for scenario cells: their metrics are a rate and a tail latency, not a closed-loop median.

A scenario cell (both sides finished) regresses when:
- max-qps: a server search found a lower max QPS, by more than the allowed drop, and CURRENT was INVALID at a rate
  BASELINE served (its lowest INVALID rate is at or below BASELINE's max QPS), so the searches' resolution cannot
  explain the drop;
- throughput: an offline or concurrency cell (its peak) answers fewer samples per second, by more than the allowed
  drop (one run each side: the threshold is the only guard against noise, so give these cells room);
- p99: a cell measured at the same load on both sides (fixed-rate server, single-stream, multi-stream) has a p99
  above BASELINE's by more than the allowed percentage and significantly: the bootstrap 95 % interval of the ratio
  of the p99s of the per-query latencies both runs kept lies above 1 (rows without samples: the ratio alone);
- valid: a fixed-rate server cell VALID in BASELINE is INVALID now.
The closed-loop p50 test (Mann-Whitney) does not apply to them: a scenario's median depends on its load.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.measure.samples import read_samples
from harness.report.merge import SETTINGS, truth
from harness.report.stats import bootstrap_ratio

COLUMNS = ["max_qps", "max_qps_invalid_at", "max_qps_runs", "throughput_ips", "peak_throughput_ips",
           "latency_p99_ms", "valid", "target_qps"]
FIXED_LOAD = ("single-stream", "multi-stream")


def _rate(r, scenario: str, side: str) -> tuple[str | None, float]:
    """(the rate this cell is judged on, its value on `side`)."""
    if scenario == "server" and pd.notna(r[f"max_qps_runs_{side}"]):
        return "max_qps", r[f"max_qps_{side}"]
    if scenario == "offline":
        return "throughput_ips", r[f"throughput_ips_{side}"]
    if scenario == "concurrency":
        return "peak_throughput_ips", r[f"peak_throughput_ips_{side}"]
    return None, np.nan


def _p99(r) -> tuple[float, float, float]:
    """(ratio of the p99s, 95 % interval lo, hi); the interval is NaN without samples on both sides."""
    base, cur = read_samples(r["samples_file_base"]), read_samples(r["samples_file_cur"])
    if base is not None and cur is not None and len(base) and len(cur):
        lo, hi = bootstrap_ratio(base, cur, q=99.0)
        return float(np.percentile(cur, 99) / np.percentile(base, 99)), lo, hi
    return r["latency_p99_ms_cur"] / r["latency_p99_ms_base"], np.nan, np.nan


def _fixed_load(r, scenario: str) -> bool:
    return scenario in FIXED_LOAD or (scenario == "server" and pd.isna(r["max_qps_runs_cur"])
                                      and r["target_qps_base"] == r["target_qps_cur"])


def check(r, scenario: str, max_qps_drop_pct: float, max_p99_pct: float) -> tuple[list[str], dict]:
    """(what regressed, the figures) for one joined row of a scenario cell finished on both sides."""
    found, figures = [], {}
    metric, cur = _rate(r, scenario, "cur")
    if metric is not None and metric == _rate(r, scenario, "base")[0]:
        base = _rate(r, scenario, "base")[1]
        change = 100.0 * (cur / base - 1.0) if base and pd.notna(cur) else np.nan
        figures.update(qps_metric=metric, qps_change_pct=change)
        if metric == "max_qps" and pd.isna(cur) and pd.notna(base):
            found.append("max-qps (no VALID rate now)")
        elif pd.notna(change) and -change > max_qps_drop_pct:
            served = metric != "max_qps" or (pd.notna(r["max_qps_invalid_at_cur"])
                                             and r["max_qps_invalid_at_cur"] <= base)
            if served:
                found.append(metric.replace("_", "-").replace("-ips", ""))
    if _fixed_load(r, scenario) and pd.notna(r["latency_p99_ms_base"]) and pd.notna(r["latency_p99_ms_cur"]):
        ratio, lo, hi = _p99(r)
        figures.update(p99_ratio=ratio, p99_ratio_ci_lo=lo, p99_ratio_ci_hi=hi)
        if 100.0 * (ratio - 1.0) > max_p99_pct and (not np.isfinite(lo) or lo > 1.0):
            found.append("p99")
    if scenario == "server" and _fixed_load(r, scenario) and truth(r["valid_base"]) and truth(r["valid_cur"]) is False:
        found.append("now INVALID")
    return found, figures


def apply(both: pd.DataFrame, max_qps_drop_pct: float, max_p99_pct: float) -> pd.DataFrame:
    """`both` (compare's joined table, SETTINGS as its index) with the scenario figures and verdicts added."""
    scenario = both.index.get_level_values(SETTINGS.index("scenario"))
    figures = []
    for (i, r), how in zip(both.iterrows(), scenario, strict=True):
        if how in ("closed-loop", "-") or r["status_base"] != "ok" or r["status_cur"] != "ok":
            figures.append({})
            continue
        found, values = check(r, how, max_qps_drop_pct, max_p99_pct)
        figures.append(values)
        if found:
            verdict = both.at[i, "verdict"]
            both.at[i, "verdict"] = (f"{verdict} and {' and '.join(found)}" if verdict.startswith("REGRESSION")
                                     else f"REGRESSION: {' and '.join(found)}")
    extra = pd.DataFrame(figures, index=both.index)
    for col in ("qps_metric", "qps_change_pct", "p99_ratio", "p99_ratio_ci_lo", "p99_ratio_ci_hi"):
        both[col] = extra[col] if col in extra.columns else np.nan
    return both
