"""What the sweep found, in sentences: the first thing a reader sees, so every figure in it is one a reader can
trust (stable cells only, intervals given) and every caveat (failures, unstable cells, suspect data) is named."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.backends.base import QUANTIZED_TYPES, quantized_type
from harness.report.merge import closed_loop, peer_values
from harness.report.pareto import unstable

MAX_TOP1_DROP_PP = 0.5  # the accuracy budget: top-1 within 0.5 points of FP32 ...
MIN_AGREEMENT_PCT = 99.0  # ... or, without labels, the FP32 answer kept on 99 % of inputs


def label(r) -> str:
    """'int8 selective/entropy' ('int8 modelopt/max' for ModelOpt cells, 'fp16' for float ones)."""
    text = str(r["precision"])
    if isinstance(r.get("tool"), str):
        recipe = r["mode"] if isinstance(r.get("mode"), str) and r["tool"] == "pq" else r["tool"]
        text += f" {recipe}/{r['calibrator']}"
    return text


def group_label(r) -> str:
    return f"{r['model']} on {r['dataset']}, {r['backend']}, batch {r['batch']}"


def speedup_interval(df: pd.DataFrame, precision: str) -> tuple[pd.Series, pd.Series]:
    """The range of speedups vs the `precision` peer that both cells' 95 % intervals of the median allow."""
    lo = peer_values(df, precision, "latency_p50_ci_lo_ms") / df["latency_p50_ci_hi_ms"]
    hi = peer_values(df, precision, "latency_p50_ci_hi_ms") / df["latency_p50_ci_lo_ms"]
    return lo, hi


def within_budget(df: pd.DataFrame) -> pd.Series:
    """Top-1 at most 0.5 points below the FP32 cell's where labels exist, else agreement with FP32 >= 99 %."""
    drop = peer_values(df, "fp32", "top1_pct") - df["top1_pct"]
    agreement = pd.to_numeric(df["top1_agreement_pct"], errors="coerce")
    return (drop <= MAX_TOP1_DROP_PP) | (drop.isna() & (agreement >= MIN_AGREEMENT_PCT))


def _accuracy(r) -> str:
    if pd.notna(r["top1_pct"]):
        return f"top-1 {r['top1_pct']:.2f} %"
    return f"top-1 agreement with FP32 {r['top1_agreement_pct']:.1f} %"


def _times(value, lo, hi) -> str:
    interval = f" (95 % {lo:.2f}-{hi:.2f})" if np.isfinite(lo) and np.isfinite(hi) else ""
    return f"{value:.2f}x{interval}"


def _cell(r) -> str:
    """'fp16 at 0.58 ms p50 (95 % 0.55-0.61)'."""
    lo, hi = r.get("latency_p50_ci_lo_ms"), r.get("latency_p50_ci_hi_ms")
    interval = f" (95 % {lo:.3g}-{hi:.3g})" if pd.notna(lo) and pd.notna(hi) else ""
    return f"{label(r)} at {r['latency_p50_ms']:.3g} ms p50{interval}"


def why_flagged(r) -> str:
    """The kinds of reason a cell was flagged ('drift, wide interval'); the row's unstable_reason has them whole."""
    reason = r.get("unstable_reason")
    if not isinstance(reason, str) or not reason:
        return "not within its target by the time budget"
    return ", ".join(dict.fromkeys(part.split(":")[0].strip() for part in reason.split(";")))


def noisy(group: pd.DataFrame) -> str | None:
    """'noisy machine (load 2.3): 9 of 11 cells flagged' when half the group's timed cells or more were flagged."""
    timed = group[(group["status"] == "ok") & group["latency_p50_ms"].notna()]
    flagged = int(unstable(timed).sum())
    if timed.empty or flagged * 2 < len(timed):
        return None
    loads = pd.to_numeric(pd.concat([timed.get(c, pd.Series(dtype=float))
                                     for c in ("load_avg_before", "load_avg_after")]), errors="coerce").dropna()
    load = f" (load {loads.max():.1f})" if not loads.empty else ""
    return f"noisy machine{load}: {flagged} of {len(timed)} cells flagged"


def _fastest(df: pd.DataFrame, group: pd.DataFrame) -> str:
    """The fastest stable cell within the accuracy budget, with its speedups; a flagged cell that measured faster
    is named beside it, never passed over in silence. Without a stable cell, every timed cell's median with its
    interval, so a noisy machine still answers."""
    timed = group[(group["status"] == "ok") & group["latency_p50_ms"].notna()]
    timed = timed[within_budget(df).loc[timed.index]].sort_values("latency_p50_ms")
    shaky = unstable(timed)
    candidates, flagged = timed[~shaky], timed[shaky]
    machine = noisy(group)
    if candidates.empty:
        if flagged.empty:
            return f"{group_label(group.iloc[0])}: no timed cell within the accuracy budget."
        cells = "; ".join(f"{_cell(r)} [{why_flagged(r)}]" for _, r in flagged.iterrows())
        return (f"{group_label(group.iloc[0])}: no cell's median settled within its target"
                f"{f'; {machine}' if machine else ''}; measured within the accuracy budget, fastest first: "
                f"{cells}.")
    best = candidates.iloc[0]
    faster = flagged[flagged["latency_p50_ms"] < best["latency_p50_ms"]]
    which = "fastest stable cell" if not faster.empty else "fastest cell"
    text = (f"{group_label(best)}: the {which} within the accuracy budget is {label(best)} at "
            f"{best['latency_p50_ms']:.3g} ms p50, {_accuracy(best)}")
    for precision in ("fp32", "fp16"):
        speed = best[f"speedup_vs_{precision}"]
        if best["precision"] != precision and pd.notna(speed):
            lo, hi = (s[best.name] for s in speedup_interval(df, precision))
            text += f"; {_times(speed, lo, hi)} faster than {precision.upper()}"
    if not faster.empty:
        text += ("; measured faster but flagged, so not ranked: "
                 + "; ".join(f"{_cell(r)} [{why_flagged(r)}]" for _, r in faster.iterrows()))
    if machine:
        text += f"; {machine}"
    return text + "."


def _score(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells by accuracy, SQNR breaking ties (top-1 often ties on an easy data set)."""
    acc = "top1_pct" if cells["top1_pct"].notna().any() else "top1_agreement_pct"
    sqnr = pd.to_numeric(cells["sqnr_db"], errors="coerce").fillna(-np.inf)
    return cells.assign(_acc=cells[acc].fillna(-np.inf), _sqnr=sqnr).sort_values(
        ["_acc", "_sqnr", "latency_p50_ms"], ascending=[False, False, True])


def _best(group: pd.DataFrame, dtype: str) -> pd.Series | None:
    """The most accurate finished cell whose Q/DQ hold `dtype` (int8 or fp8), or None."""
    precisions = group["precision"].map(lambda p: quantized_type(str(p)))
    quant = group[(group["status"] == "ok") & (precisions == dtype)]
    return None if quant.empty else _score(quant).iloc[0]


def _recipe(group: pd.DataFrame, best: pd.Series, dtype: str) -> str:
    """'Best INT8 recipe: ...', with what it gains over the naive recipe of the same precision."""
    quant = group[(group["status"] == "ok") & (group["precision"] == best["precision"])]
    text = f"Best {dtype.upper()} recipe: {label(best)} ({_accuracy(best)}"
    text += f", SQNR {best['sqnr_db']:.1f} dB)" if pd.notna(best["sqnr_db"]) else ")"
    naive = quant[quant["mode"] == "naive"]
    if best["mode"] != "naive" and not naive.empty:
        same = naive[naive["calibrator"] == best["calibrator"]]
        peer = _score(same if not same.empty else naive).iloc[0]
        text += "; against " + _versus(best, peer)
    return text + "."


def _versus(best: pd.Series, peer: pd.Series) -> str:
    """'int8 naive/max: +1.90 points, +3.0 dB SQNR, 0.95x its latency' (latency only when both are stable)."""
    acc = "top1_pct" if pd.notna(best["top1_pct"]) else "top1_agreement_pct"
    text = f"{label(peer)}: {best[acc] - peer[acc]:+.2f} points"
    if pd.notna(best["sqnr_db"]) and pd.notna(peer["sqnr_db"]):
        text += f", {best['sqnr_db'] - peer['sqnr_db']:+.1f} dB SQNR"
    if not (unstable(pd.DataFrame([best, peer])).any()):
        text += f", {best['latency_p50_ms'] / peer['latency_p50_ms']:.2f}x its latency"
    return text


def _names(rows: pd.DataFrame) -> str:
    names = [f"{label(r)} b{r['batch']} ({r['model']})" for _, r in rows.iterrows()]
    return ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")


def headline(df: pd.DataFrame) -> list[str]:
    """Closed-loop cells are ranked here; scenario cells have their own sentences (harness.report.serving)."""
    out = []
    timed = df[closed_loop(df)]
    for _, group in timed.groupby(["model", "dataset", "backend", "batch"], sort=True, dropna=False):
        out.append(_fastest(df, group))
    for _, group in timed.groupby(["model", "dataset", "backend"], sort=True, dropna=False):
        first = group[group["batch"] == group["batch"].min()]
        where = f"{group.iloc[0]['model']} ({group.iloc[0]['backend']})"
        best = {dtype: _best(first, dtype) for dtype in QUANTIZED_TYPES}
        for dtype, row in best.items():
            if row is not None:
                out.append(f"{where}: {_recipe(first, row, dtype)}")
        if all(row is not None for row in best.values()):
            out.append(f"{where}: best FP8 against best INT8, {label(best['fp8'])} against "
                       f"{_versus(best['fp8'], best['int8'])}.")
    failed, shaky = df[df["status"] != "ok"], df[(df["status"] == "ok") & unstable(df)]
    if not failed.empty:
        out.append(f"{len(failed)} cell(s) failed: {_names(failed)} (see Failed cells).")
    if not shaky.empty:
        reasons = [f"{label(r)} b{r['batch']} ({r['model']}): {why_flagged(r)}" for _, r in shaky.iterrows()]
        out.append(f"{len(shaky)} cell(s) are unstable (their median not within its target by the time budget, or "
                   f"their repeats disagree), so they are not ranked: {'; '.join(reasons[:8])}"
                   + (f" and {len(reasons) - 8} more" if len(reasons) > 8 else "") + ".")
    for model, reason in df.dropna(subset=["reference_degenerate"]).groupby("model")["reference_degenerate"]:
        out.append(f"Suspicious: {model}'s FP32 outputs are degenerate ({reason.iloc[0]}); agreement and SQNR "
                   "against them mean nothing.")
    for (model, dataset), why in df.dropna(subset=["labels_unusable"]).groupby(["model", "dataset"])["labels_unusable"]:
        out.append(f"Suspicious: {dataset}'s labels do not fit {model}'s head ({why.iloc[0]}), so top-1 is not "
                   "scored; agreement and SQNR against FP32 still are.")
    if "deployed_matches_file" in df.columns:
        wrong = df[df["deployed_matches_file"].astype("boolean").eq(False).fillna(False)]
        fp8 = wrong["precision"].map(lambda p: quantized_type(str(p)) == "fp8").astype(bool)
        fused = wrong[~fp8]
        if not fused.empty:
            isa = fused["env_cpu_isa"].iloc[0] if "env_cpu_isa" in fused.columns else "n/a"
            out.append(f"Suspicious: on this CPU ({isa}) ONNX Runtime's fused integer kernels do not compute what "
                       f"{len(fused)} file(s) say: {_names(fused)}; their latency is the fused run's, their "
                       "accuracy the file's as written (see deployed_sqnr_db against sqnr_db).")
        if not wrong[fp8].empty:
            out.append(f"Suspicious: ONNX Runtime's default session does not compute what {len(wrong[fp8])} FP8 "
                       f"file(s) say: {_names(wrong[fp8])} (its ReluQuantRewrite drops the Relu before an FP8 "
                       "QuantizeLinear; harness's reference run turns it off); their latency is that session's, their "
                       "accuracy the file's as written (see deployed_sqnr_db against sqnr_db).")
    return out
