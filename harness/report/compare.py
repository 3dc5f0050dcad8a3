"""The CI gate: compare two result sets cell by cell and call a regression only what noise cannot explain.

A cell's latency regresses when CURRENT is slower both significantly (a one-sided Mann-Whitney U test on the
raw per-query latencies both runs kept, p < 0.05) and by more than the allowed percentage (the ratio of the
medians, reported with its bootstrap 95 % interval). A cell the baseline had and the current run lacks, or one
that now fails, is a regression too; new cells are listed, never silently passed as checked. A criterion that
cannot be evaluated on a cell both sides finished (its latency or accuracy missing or NaN on either side) fails
that cell: a gate that skips its check without a word is no gate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.measure.samples import read_samples
from harness.report import scenario_gate
from harness.report.merge import CLOSED_LOOP, SETTINGS
from harness.report.pareto import accuracy_column, unstable
from harness.report.stats import Shift, slowdown, slowdown_from_intervals

CI_COLUMNS = ["latency_p50_ci_lo_ms", "latency_p50_ci_hi_ms"]


@dataclass
class Comparison:
    table: pd.DataFrame  # one row per cell of either side: settings, figures of both, test results, verdict
    regressions: int


def _keyed(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    if "scenario" not in df.columns:  # rows from before scenarios existed were timed by the closed loop
        df["scenario"] = CLOSED_LOOP
    df[SETTINGS] = df[SETTINGS].astype(object).where(df[SETTINGS].notna(), "-").astype(str)
    df["batch"] = df["batch"].str.removesuffix(".0")
    df["unstable"] = unstable(df)
    return df.drop_duplicates(SETTINGS, keep="last").set_index(SETTINGS)


def _shift(r) -> Shift | None:
    if r["status_base"] != "ok" or r["status_cur"] != "ok":
        return None
    if r.name[SETTINGS.index("scenario")] not in (CLOSED_LOOP, "-"):  # its metrics: harness.report.scenario_gate
        return None
    base, cur = read_samples(r["samples_file_base"]), read_samples(r["samples_file_cur"])
    if base is not None and cur is not None and len(base) and len(cur):
        return slowdown(base, cur)
    side = {s: {c: r[f"{c}_{s}"] for c in ["latency_p50_ms", *CI_COLUMNS]} for s in ("base", "cur")}
    return slowdown_from_intervals(side["base"], side["cur"])


def _missing(r, column: str) -> str | None:
    """Which side lacks `column` for this cell ('baseline', 'current', 'both'), or None when both have it."""
    gone = [side for side, suffix in (("baseline", "_base"), ("current", "_cur")) if pd.isna(r[column + suffix])]
    return None if not gone else "both" if len(gone) == 2 else gone[0]


def _verdict(r, shift: Shift | None, max_latency_pct: float, max_drop_pp: float | None, acc: str) -> str:
    """max_drop_pp None: the accuracy criterion was not asked for (--latency-only)."""
    if pd.isna(r["status_cur"]):
        return "REGRESSION: missing in current"
    if pd.isna(r["status_base"]):
        return "new"
    base_ok, cur_ok = r["status_base"] == "ok", r["status_cur"] == "ok"
    if base_ok and not cur_ok:
        return "REGRESSION: now fails"
    if not cur_ok:
        return "still fails"
    if not base_ok:
        return "fixed"
    found, unevaluated = [], []
    closed_loop = r.name[SETTINGS.index("scenario")] in (CLOSED_LOOP, "-")  # scenarios: scenario_gate.apply
    if closed_loop and (shift is None or not np.isfinite(shift.ratio)):
        unevaluated.append(f"latency (latency_p50_ms missing in {_missing(r, 'latency_p50_ms') or 'the samples'})")
    elif closed_loop and shift.significant and 100.0 * (shift.ratio - 1.0) > max_latency_pct:
        found.append("latency")
    if max_drop_pp is not None:
        if pd.isna(r["accuracy_drop_pp"]):
            unevaluated.append(f"accuracy ({acc} missing in {_missing(r, acc) or 'both'})")
        elif r["accuracy_drop_pp"] > max_drop_pp:
            found.append("accuracy")
    if unevaluated:
        found.append(f"{' and '.join(unevaluated)} not evaluated")
    return f"REGRESSION: {' and '.join(found)}" if found else "ok"


def _states(base: pd.DataFrame, cur: pd.DataFrame, index) -> pd.DataFrame:
    """Each cell's gpu_state_note on both sides ('' where the rows have none: CPU cells, older tables)."""
    notes = {side: (_keyed(df)["gpu_state_note"] if "gpu_state_note" in df.columns else pd.Series(dtype=object))
             for side, df in (("base", base), ("current", cur))}
    return pd.DataFrame({side: s.reindex(index) for side, s in notes.items()}, index=index).fillna("")


def _gpu_state(states) -> str:
    """A flagged cell whose GPU throttled or moved clocks says so: the regression may be the GPU's state."""
    said = [f"{side}: {note}" for side, note in states.items() if note]
    return f" ({'; '.join(said)})" if said else ""


def checked_side(df: pd.DataFrame, source) -> pd.DataFrame:
    """One side of a comparison, or a one-line error: a side with no latency to compare must not read as 'no
    regression'."""
    ok = df["status"] == "ok"
    if "latency_p50_ms" not in df.columns or df.loc[ok, "latency_p50_ms"].isna().all():
        raise HarnessError(f"{source}: no latency figures (latency_p50_ms) in its finished cells; give a sweep "
                           "folder or a results table written by harness sweep")
    return df


def compare(base: pd.DataFrame, cur: pd.DataFrame, max_latency_pct: float, max_drop_pp: float | None,
            max_qps_drop_pct: float = 5.0, max_p99_pct: float | None = None) -> Comparison:
    """Every cell of either side with its verdict; max_drop_pp None leaves accuracy out (--latency-only).
    Scenario cells are judged on their rate and p99 (harness.report.scenario_gate); `max_p99_pct` defaults to
    `max_latency_pct`."""
    acc = "top1_pct" if any(accuracy_column(df) == "top1_pct" for df in (base, cur) if "top1_pct" in df.columns) \
        else "top1_agreement_pct"
    cols = list(dict.fromkeys(["status", "latency_p50_ms", *CI_COLUMNS, "samples_file", "unstable", acc,
                               *scenario_gate.COLUMNS]))
    base, cur = (df.reindex(columns=list(dict.fromkeys([*df.columns, *cols]))) for df in (base, cur))
    both = _keyed(base)[cols].join(_keyed(cur)[cols], how="outer", lsuffix="_base", rsuffix="_cur")
    both["accuracy_drop_pp"] = both[f"{acc}_base"] - both[f"{acc}_cur"]
    shifts = [_shift(r) for _, r in both.iterrows()]
    both["latency_ratio"] = [s.ratio if s else np.nan for s in shifts]
    both["latency_change_pct"] = 100.0 * (both["latency_ratio"] - 1.0)
    both["ratio_ci_lo"] = [s.lo if s else np.nan for s in shifts]
    both["ratio_ci_hi"] = [s.hi if s else np.nan for s in shifts]
    both["p_value"] = [s.p_value if s else None for s in shifts]
    both["test"] = [s.method if s else None for s in shifts]
    both["verdict"] = [_verdict(r, s, max_latency_pct, max_drop_pp, acc)
                       for (_, r), s in zip(both.iterrows(), shifts, strict=True)]
    both = scenario_gate.apply(both, max_qps_drop_pct, max_latency_pct if max_p99_pct is None else max_p99_pct)
    both["verdict"] = [v + _gpu_state(r) if v.startswith("REGRESSION") else v
                       for v, (_, r) in zip(both["verdict"], _states(base, cur, both.index).iterrows(), strict=True)]
    table = both.reset_index().drop(columns=["samples_file_base", "samples_file_cur"])
    regressions = int(table["verdict"].str.startswith("REGRESSION").sum())
    return Comparison(table.replace({np.nan: None}), regressions)
