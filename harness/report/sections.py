"""The report's content, once: Markdown and HTML render these same sections and figures."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from harness.commands.common import fmt
from harness.report.pareto import pareto_mask

SHOWN = ["model", "dataset", "backend", "precision", "tool", "mode", "calibrator", "batch", "latency_p50_ms",
         "latency_p99_ms", "latency_spread_pct", "throughput_ips", "top1_pct", "top1_delta_pp",
         "top1_agreement_pct", "sqnr_db", "qdq_hazards", "speedup_vs_baseline", "speedup_vs_fp32", "speedup_vs_fp16",
         "engine_size_mb", "build_s", "calib_s"]
ENV = ["env_host", "env_cpu", "env_gpu", "env_driver", "env_cuda", "env_gpu_clocks", "env_tensorrt", "env_torch",
       "env_onnxruntime", "env_modelopt", "env_harness", "env_git_commit"]
FIGURES = {"latency_vs_accuracy": "Latency against accuracy and SQNR (dashed: Pareto front)",
           "speedup": "Speedup against the FP32 and FP16 baselines",
           "layer_precision": "Per-layer precision of inspected engines"}


@dataclass
class Section:
    title: str
    text: str = ""
    table: pd.DataFrame | None = None
    figure: str | None = None


def formatted(df: pd.DataFrame) -> pd.DataFrame:
    """Numbers to 4 significant digits, missing values as n/a, so both renderings read the same."""
    return df.astype(object).where(df.notna(), None).map(fmt)


def _baseline_text(df: pd.DataFrame) -> str:
    ids = df["baseline_id"].dropna().unique()
    base = df[df["cell_id"].isin(ids)]
    if base.empty:
        return "No baseline cell finished, so speedup_vs_baseline and top1_delta_pp read n/a."
    names = sorted({f"{r['backend']} {r['precision']}" for _, r in base.iterrows()})
    return (f"Baseline: {', '.join(names)} (per model, dataset and batch). speedup_vs_* = baseline p50 / cell "
            "p50; top1_delta_pp = cell top-1 - baseline top-1, in percentage points.")


def build_sections(df: pd.DataFrame, figures: dict[str, bytes]) -> list[Section]:
    ok, failed = df[df["status"] == "ok"], df[df["status"] != "ok"]
    front = pareto_mask(df)
    summary = (f"{len(df)} cells: {len(ok)} ok, {len(failed)} failed. Latency in ms (p50 over all timed "
               f"repeats; spread = range of the repeats' p50s), throughput in samples/s, accuracy in %. "
               + _baseline_text(df))
    out = [Section("Summary", summary)]
    out += [Section(title, figure=name) for name, title in FIGURES.items() if name in figures]
    shown = ok[SHOWN].copy()
    shown.insert(len(SHOWN), "pareto", front[ok.index].map({True: "yes", False: ""}))
    out.append(Section("Results", table=formatted(shown)))
    out.append(Section("Pareto front", "Cells no other cell of the same model, dataset and batch beats on both "
                       "p50 latency and accuracy.", formatted(df.loc[front[front].index, SHOWN[:11]])))
    if not failed.empty:
        cols = ["model", "dataset", "backend", "precision", "tool", "mode", "calibrator", "batch", "failed_stage",
                "error"]
        out.append(Section("Failed cells", f"{len(failed)} cell(s) did not finish; each is a row with its error.",
                           formatted(failed[cols])))
    profiled = ok[ok["profile_table"].notna()] if "profile_table" in ok.columns else ok.iloc[:0]
    if not profiled.empty:
        cols = ["model", "backend", "precision", "tool", "mode", "batch", "profile_int8_pct", "profile_fp16_pct",
                "profile_fp32_pct", "profile_reformat_pct", "profile_layers_sum_ms", "profile_engine_compute_ms",
                "profile_table"]
        out.append(Section("Per-layer profile", "Share of the summed layer times by precision, and reformat "
                           "layers (timing.profile; TensorRT's profiler, a separate run after the timed ones). "
                           "Per-layer timing adds events between layers, so the sum of the layers exceeds the "
                           "whole engine's GPU compute, more so on small networks: compare shares.",
                           formatted(profiled[[c for c in cols if c in profiled.columns]])))
    noted = ok[ok["gpu_state_note"].fillna("") != ""] if "gpu_state_note" in ok.columns else ok.iloc[:0]
    if not noted.empty:
        cols = ["model", "backend", "precision", "tool", "mode", "batch", "gpu_sm_clock_min_mhz",
                "gpu_sm_clock_max_mhz", "gpu_temp_c_after", "gpu_power_w_after", "gpu_state_note"]
        out.append(Section("GPU state", "Cells whose GPU throttled or changed clocks while they were timed "
                           "(NVML, before/after and every 0.1 s): their latencies are not comparable with steady "
                           "runs.", formatted(noted[cols])))
    env_cols = [c for c in ENV if c in df.columns]
    env = df[env_cols].drop_duplicates().rename(columns=lambda c: c.removeprefix("env_"))
    out.append(Section("Environment", "One row per distinct runner.", formatted(env)))
    return out
