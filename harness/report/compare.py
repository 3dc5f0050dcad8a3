"""The CI gate: compare two result sets cell by cell and call a regression only what noise cannot explain.

Each cell was timed in several repeats; the range of their p50s (latency_spread_pct) is the run-to-run noise
that cell showed. A latency change counts only beyond the allowed regression plus the larger of the two
runs' spreads, so two runs of the same build pass and a real slowdown does not hide behind a fixed threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.report.merge import SETTINGS
from harness.report.pareto import accuracy_column


@dataclass
class Comparison:
    table: pd.DataFrame  # one row per cell of either side: settings, figures of both, verdict
    regressions: int


def parse_percent(text: str, option: str) -> float:
    """'5%' or '5' -> 5.0 (percent)."""
    try:
        value = float(str(text).strip().removesuffix("%"))
    except ValueError:
        value = -1.0
    if not 0 <= value < 1000:
        raise HarnessError(f"{option} {text!r} must be a percentage like 5% (or 5)")
    return value


def _keyed(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df[SETTINGS] = df[SETTINGS].astype(object).where(df[SETTINGS].notna(), "-").astype(str)
    df["batch"] = df["batch"].str.removesuffix(".0")
    return df.drop_duplicates(SETTINGS, keep="last").set_index(SETTINGS)


def _verdict(r, max_latency_pct: float, max_drop_pp: float) -> str:
    base_ok, cur_ok = r["status_base"] == "ok", r["status_cur"] == "ok"
    if pd.isna(r["status_cur"]):
        return "missing in current"
    if pd.isna(r["status_base"]):
        return "new"
    if base_ok and not cur_ok:
        return "REGRESSION: now fails"
    if not cur_ok:
        return "still fails"
    if not base_ok:
        return "fixed"
    found = []
    if r["latency_change_pct"] > max_latency_pct + r["noise_pct"]:
        found.append("latency")
    if r["accuracy_drop_pp"] > max_drop_pp:
        found.append("accuracy")
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


def compare(base: pd.DataFrame, cur: pd.DataFrame, max_latency_pct: float, max_drop_pp: float) -> Comparison:
    acc = accuracy_column(pd.concat([base, cur]))
    cols = ["status", "latency_p50_ms", "latency_spread_pct", acc]
    both = _keyed(base)[cols].join(_keyed(cur)[cols], how="outer", lsuffix="_base", rsuffix="_cur")
    both["latency_change_pct"] = 100.0 * (both["latency_p50_ms_cur"] / both["latency_p50_ms_base"] - 1.0)
    spreads = both[["latency_spread_pct_base", "latency_spread_pct_cur"]].astype(float)
    both["noise_pct"] = spreads.max(axis=1).fillna(0.0)
    both["allowed_pct"] = max_latency_pct + both["noise_pct"]
    both["accuracy_drop_pp"] = both[f"{acc}_base"] - both[f"{acc}_cur"]
    both["verdict"] = [_verdict(r, max_latency_pct, max_drop_pp) for _, r in both.iterrows()]
    both["verdict"] = [v + _gpu_state(r) if v.startswith("REGRESSION") else v
                       for v, (_, r) in zip(both["verdict"], _states(base, cur, both.index).iterrows(), strict=True)]
    table = both.reset_index()
    regressions = int(table["verdict"].str.startswith("REGRESSION").sum())
    return Comparison(table.replace({np.nan: None}), regressions)
