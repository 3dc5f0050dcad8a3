"""The report's content, once: the Markdown and the HTML page render these same sentences and tables."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.commands.common import fmt
from harness.report import serving
from harness.report.headline import headline
from harness.report.merge import SETTINGS, closed_loop
from harness.report.pareto import pareto_mask, unstable

LATENCY = "latency_p50_ms"
SERVING = "Serving: LoadGen scenarios and concurrency"
SHOWN = [*SETTINGS, LATENCY, "stable", "unstable_reason", "speedup_vs_fp32", "speedup_vs_fp16", "speedup_vs_baseline",
         "top1_pct", "top1_delta_pp", "top1_agreement_pct", "sqnr_db", "engine_size_mb", "pareto"]
MORE = ["latency_p90_ms", "latency_p99_ms", "latency_min_ms", "latency_mean_ms", "latency_cv", "latency_ci_pct",
        "ci_target_pct", "latency_drift_pct", "latency_trend_pct", "repeats_set_aside", "outlier_rule",
        "latency_spread_pct", "repeats", "latency_samples", "cpu_threads", "cpu_spin_wait", "throughput_ips",
        "top5_pct", "max_abs_error", "qdq_hazards", "qdq_float_layers", "export_check", "build_s", "calib_s",
        "export_s", "engine_cache_hit", "cell_s", "load_avg_before", "load_avg_after", "timing_includes", "cell_id",
        "finished_utc"]
PARETO = [*SETTINGS, LATENCY, "speedup_vs_fp32", "speedup_vs_fp16", "top1_pct", "top1_delta_pp",
          "top1_agreement_pct", "sqnr_db"]
FAILED = [*SETTINGS, "failed_stage", "error"]
PROFILE = [*SETTINGS, "profile_int8_pct", "profile_fp8_pct", "profile_fp16_pct", "profile_bf16_pct",
           "profile_fp32_pct", "profile_reformat_pct", "profile_layers_sum_ms", "profile_engine_compute_ms",
           "profile_table"]
GPU_STATE = [*SETTINGS, "gpu_sm_clock_min_mhz", "gpu_sm_clock_max_mhz", "gpu_temp_c_after", "gpu_power_w_after",
             "gpu_state_note"]
ENV = ["env_host", "env_cpu", "env_gpu", "env_driver", "env_cuda", "env_gpu_clocks", "env_tensorrt", "env_torch",
       "env_onnxruntime", "env_modelopt", "env_harness", "env_git_commit"]


@dataclass
class Table:
    """Cell texts, the values they sort by, which columns show by default, and a CSS class per row."""

    text: pd.DataFrame
    keys: pd.DataFrame
    shown: list[str]
    classes: list[str] = field(default_factory=list)


@dataclass
class Section:
    title: str
    text: str = ""
    table: Table | None = None


def _text(data: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """`data`'s numbers to 4 significant digits, missing values as n/a; p50 with its 95 % interval (from `df`,
    the whole rows); stable as a word."""
    out = data.astype(object).where(data.notna(), None).map(fmt)
    if LATENCY in data.columns and "latency_p50_ci_lo_ms" in df.columns:
        lo, hi = df["latency_p50_ci_lo_ms"], df["latency_p50_ci_hi_ms"]
        known = lo.notna() & hi.notna()
        out.loc[known, LATENCY] = [f"{fmt(p)} [{fmt(a)}, {fmt(b)}]" for p, a, b in
                                   zip(df.loc[known, LATENCY], lo[known], hi[known], strict=True)]
    if "stable" in data.columns:
        out["stable"] = np.where(unstable(df), "UNSTABLE", np.where(df["stable"].isna(), "n/a", "yes"))
    return out


def table(df: pd.DataFrame, columns: list[str], shown: list[str] | None = None, classes=None) -> Table:
    cols = [c for c in columns if c in df.columns]
    data = df[cols]
    keys = data.apply(pd.to_numeric, errors="coerce").where(lambda k: k.notna(), data.astype(str))
    return Table(_text(data, df), keys, [c for c in (shown or cols) if c in cols], list(classes or []))


def _baseline(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """speedup_vs_baseline goes when it repeats speedup_vs_fp32; otherwise its header names the baseline."""
    base = df[df["cell_id"].isin(df["baseline_id"].dropna().unique())]
    names = sorted({f"{r['backend']} {r['precision']}" for _, r in base.iterrows()})
    same = np.allclose(df["speedup_vs_baseline"].astype(float), df["speedup_vs_fp32"].astype(float), equal_nan=True)
    if same or not names:
        return df.drop(columns=["speedup_vs_baseline"]), "FP32"
    header = f"speedup_vs_baseline ({', '.join(names)})"
    return df.rename(columns={"speedup_vs_baseline": header}), ", ".join(names)


def ordered(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["model", "batch", LATENCY], kind="stable", na_position="last")


def build_sections(df: pd.DataFrame) -> tuple[list[str], list[Section]]:
    """(headline sentences, sections)."""
    ok, failed = ordered(df[df["status"] == "ok"]), df[df["status"] != "ok"]
    scenario_rows, ok = ok[~closed_loop(ok)], ok[closed_loop(ok)]
    front = pareto_mask(df)
    ok = ok.assign(pareto=np.where(front[ok.index], "yes", ""))
    ok, baseline = _baseline(ok)
    shown = [c if c != "speedup_vs_baseline" else next((h for h in ok.columns if h.startswith(c)), c) for c in SHOWN]
    classes = [" ".join(name for name, on in (("pareto", p), ("unstable", u)) if on)
               for p, u in zip(front[ok.index], unstable(ok), strict=True)]
    counts = (f"{len(df)} cells: {len(ok) + len(scenario_rows)} ok, {len(failed)} failed"
              + (f" ({len(scenario_rows)} measured by deployment scenarios)" if len(scenario_rows) else "") + ".")
    summary = (f"{counts} Closed-loop timing: p50 latency in ms with its 95 % interval; "
               f"speedup = {baseline} p50 / cell p50; top1_delta_pp = cell top-1 - baseline top-1 (points); "
               "Pareto rows highlighted, unstable rows struck through and never ranked.")
    out = []
    if not ok.empty or scenario_rows.empty:  # a sweep of scenario cells alone has no closed-loop ranking
        out.append(Section("Results", summary, table(ok, [*shown, *MORE], shown, classes)))
        out.append(Section("Pareto front", "Stable cells no other stable cell of the same model, dataset and batch "
                           "beats on both p50 latency and accuracy.", table(ordered(df[front]), PARETO)))
    if not scenario_rows.empty:
        out.append(Section(SERVING, ("" if out else f"{counts} ") + " ".join(serving.sentences(df))
                           + " Figures from MLPerf LoadGen (its logs in loadgen_logs) and the concurrency sweeps "
                           "(each level in curve_file); energy from NVML where the GPU has a counter, else empty "
                           "with energy_note saying why.",
                           table(scenario_rows, [*serving.SCENARIO_TABLE, *serving.SCENARIO_MORE],
                                 serving.SCENARIO_TABLE)))
    if not failed.empty:
        out.append(Section("Failed cells", f"{len(failed)} cell(s) did not finish; each is a row with its error.",
                           table(failed, FAILED)))
    profiled = ok[ok["profile_table"].notna()] if "profile_table" in ok.columns else ok.iloc[:0]
    if not profiled.empty:
        out.append(Section("Per-layer profile", "Share of the summed layer times by precision, and reformat "
                           "layers (timing.profile; TensorRT's profiler, a separate run after the timed ones). "
                           "Per-layer timing adds events between layers, so the sum of the layers exceeds the "
                           "whole engine's GPU compute, more so on small networks: compare shares.",
                           table(profiled, PROFILE)))
    noted = ok[ok["gpu_state_note"].fillna("") != ""] if "gpu_state_note" in ok.columns else ok.iloc[:0]
    if not noted.empty:
        out.append(Section("GPU state", "Cells whose GPU throttled or changed clocks while they were timed "
                           "(NVML, before/after and every 0.1 s): their latencies are not comparable with steady "
                           "runs.", table(noted, GPU_STATE)))
    env = df[[c for c in ENV if c in df.columns]].drop_duplicates().rename(columns=lambda c: c.removeprefix("env_"))
    out.append(Section("Environment", "One row per distinct runner.", table(env, list(env.columns))))
    return headline(df) + serving.sentences(df), out
