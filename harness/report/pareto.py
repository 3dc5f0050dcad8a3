"""Which cells are worth having: the latency/accuracy Pareto front within each model, dataset and batch."""

from __future__ import annotations

import pandas as pd

from harness.report.merge import closed_loop

GROUP = ["model", "dataset", "batch"]


def accuracy_column(df: pd.DataFrame) -> str:
    """top-1 where the data has labels; otherwise agreement with the FP32 reference (synthetic data)."""
    return "top1_pct" if df["top1_pct"].notna().any() else "top1_agreement_pct"


def unstable(df: pd.DataFrame) -> pd.Series:
    """True for cells whose median latency did not settle within its target (rows from before the stopping
    rule, which have no `stable` column, are not called unstable)."""
    if "stable" not in df.columns:
        return pd.Series(False, index=df.index)
    return df["stable"].astype(str).str.lower().isin(["false", "0", "0.0"])


def ranked(df: pd.DataFrame) -> pd.DataFrame:
    """The cells that may be ranked on latency: finished, timed by the closed loop (a scenario's latency depends on
    its load), and stable."""
    return df[(df["status"] == "ok") & df["latency_p50_ms"].notna() & ~unstable(df) & closed_loop(df)]


def pareto_mask(df: pd.DataFrame) -> pd.Series:
    """True for ranked cells no other ranked cell of their group beats on both p50 latency and accuracy;
    unstable cells are never on the front, since their latency is not known well enough to rank."""
    mask = pd.Series(False, index=df.index)
    ok = ranked(df)
    for _, group in ok.groupby(GROUP, dropna=False):
        group = group[group[accuracy_column(group)].notna()]
        lat, score = group["latency_p50_ms"], group[accuracy_column(group)]
        for i in group.index:
            dominated = ((lat <= lat[i]) & (score >= score[i]) & ((lat < lat[i]) | (score > score[i]))).any()
            mask[i] = not dominated
    return mask
