"""Rows from any number of sweeps, shards and runners -> one tidy pandas table with comparison columns.

Comparison columns are recomputed after every merge, because a cell's baseline may have run on another shard.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.fileio import expect_file

SETTINGS = ["model", "dataset", "backend", "precision", "tool", "mode", "calibrator", "batch", "scenario"]
CLOSED_LOOP = "closed-loop"  # the scenario of rows from before scenarios existed
LATENCY = ["latency_min_ms", "latency_mean_ms", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms"]
DERIVED = ["speedup_vs_baseline", "speedup_vs_fp32", "speedup_vs_fp16", "top1_delta_pp"]
COLUMNS = [
    "cell_id", "experiment", "status", *SETTINGS, *LATENCY, "latency_cv", "latency_p50_ci_lo_ms",
    "latency_p50_ci_hi_ms", "latency_ci_pct", "ci_target_pct", "stable", "unstable_reason", "latency_drift_pct",
    "latency_trend_pct", "repeats_set_aside", "outlier_rule", "latency_spread_pct", "repeats", "latency_samples",
    "load_avg_before", "load_avg_after", "cpu_threads", "cpu_spin_wait", "throughput_ips", "top1_pct", "top5_pct",
    "top1_agreement_pct", "sqnr_db", "max_abs_error", "eval_samples", "reference_degenerate", "labels_unusable",
    "deployed_sqnr_db", "deployed_top1_agreement_pct", "deployed_matches_file", "qdq_hazards", "qdq_float_layers",
    *DERIVED, "engine_size_mb", "build_s", "calib_s", "export_s", "engine_cache_hit", "cell_s", "error",
    "failed_stage", "baseline_id", "timing_includes", "engine", "onnx", "layer_table", "samples_file",
    "finished_utc",
]
# A scenario cell's figures (harness.sweep.scenario_cell); empty in closed-loop rows.
SCENARIO_COLUMNS = ["valid", "loadgen_result", "qps", "max_qps", "max_qps_invalid_at", "max_qps_runs", "offline_qps",
                    "target_qps", "latency_bound_ms", "early_stopping_p90_ms", "early_stopping_p99_ms",
                    "samples_per_query", "knee_concurrency", "peak_throughput_ips", "concurrency_levels",
                    "curve_file", "loadgen_logs", "energy_j", "energy_j_per_inference", "avg_power_w", "energy_note"]
COLUMNS += SCENARIO_COLUMNS
# Columns every row must have for the table to be one of ours (tables from before `tool` existed hold pq rows,
# from before `scenario` existed closed-loop ones).
REQUIRED = ["cell_id", "status", *(c for c in SETTINGS if c not in ("tool", "scenario"))]


PEER_KEYS = ["model", "dataset", "backend", "batch", "scenario"]


def truth(value) -> bool | None:
    """A table's true/false (bool, numpy bool, or the text a CSV holds); None when empty."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value).strip().lower() in ("true", "1", "1.0")


def closed_loop(df: pd.DataFrame) -> pd.Series:
    """True for rows timed by harness's closed loop (the latency ranking, speedups and Pareto front are theirs)."""
    if "scenario" not in df.columns:
        return pd.Series(True, index=df.index)
    return df["scenario"].isna() | (df["scenario"] == CLOSED_LOOP)


def peer_values(df: pd.DataFrame, precision: str, column: str) -> pd.Series:
    """`column` of the ok cell of the same model, dataset, backend and batch at `precision`, for every row."""
    ok = df[(df["status"] == "ok") & (df["precision"] == precision)]
    peer = ok.drop_duplicates(PEER_KEYS).set_index(PEER_KEYS)[column]
    return pd.Series(peer.reindex(pd.MultiIndex.from_frame(df[PEER_KEYS])).to_numpy(), index=df.index)


NUMERIC = [*LATENCY, "top1_pct", "batch", "latency_p50_ci_lo_ms", "latency_p50_ci_hi_ms"]


def _numbers_checked(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    """A table's figures must read as numbers: a hand-edited 'fast' in a latency column is named, not dropped."""
    for col in [c for c in NUMERIC if c in table.columns]:
        text = table[col].where(pd.to_numeric(table[col], errors="coerce").isna() & table[col].notna())
        text = text[text.astype(str).str.strip() != ""].dropna()
        if not text.empty:
            raise HarnessError(f"{path}: column {col} holds {text.iloc[0]!r} (row {text.index[0] + 1}), not a "
                               "number; fix the table or write it again with harness report")
    return table


def results_frame(rows: list[dict]) -> pd.DataFrame:
    """The table in its column order (extra columns, such as env_*, after), comparison columns recomputed."""
    df = pd.DataFrame(rows)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise HarnessError(f"results have no {missing[0]!r} column: give harness sweep output "
                           "(reports/<name>/ or its results.parquet/csv)")
    df = df.drop(columns=[c for c in DERIVED if c in df.columns])
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
    df[NUMERIC] = df[NUMERIC].apply(pd.to_numeric, errors="coerce")
    for col in ("tool", "mode", "calibrator", "error", "failed_stage"):
        df[col] = df[col].where(df[col].notna() & (df[col] != ""), None)
    # Rows from before there was a choice of quantizer are pytorch-quantization's, and closed-loop timed.
    df["tool"] = df["tool"].where(df["tool"].notna() | df["mode"].isna(), "pq")
    df["scenario"] = df["scenario"].where(df["scenario"].notna() & (df["scenario"] != ""), CLOSED_LOOP)
    ok = df[df["status"] == "ok"].drop_duplicates("cell_id").set_index("cell_id")
    base = df["baseline_id"].map(ok["latency_p50_ms"])
    df["speedup_vs_baseline"] = base / df["latency_p50_ms"]
    df["top1_delta_pp"] = df["top1_pct"] - df["baseline_id"].map(ok["top1_pct"])
    df["speedup_vs_fp32"] = peer_values(df, "fp32", "latency_p50_ms") / df["latency_p50_ms"]
    df["speedup_vs_fp16"] = peer_values(df, "fp16", "latency_p50_ms") / df["latency_p50_ms"]
    # A scenario's p50 depends on the load it ran at: its speedups are the report's max-QPS ratios, not these.
    df.loc[~closed_loop(df), ["speedup_vs_baseline", "speedup_vs_fp32", "speedup_vs_fp16"]] = np.nan
    extra = sorted(c for c in df.columns if c not in COLUMNS)
    return df[COLUMNS + extra].reset_index(drop=True)


def _resolved(rows: list[dict], root: Path) -> list[dict]:
    """Files a row names relative to its sweep folder (layer tables, profiles, latency samples), made absolute."""
    for row in rows:
        for key in ("layer_table", "profile_table", "samples_file", "curve_file", "loadgen_logs"):
            if isinstance(row.get(key), str) and row[key] and not Path(row[key]).is_absolute():
                row[key] = str((root / row[key]).resolve())
    return rows


def _read(path: Path) -> list[dict]:
    """Rows of one source: a sweep folder (its per-cell files, else its table; with the rows of the shard
    folders `--shard` made in it) or a table file."""
    if path.is_dir():
        shards = sorted(p for p in path.glob("shard-*-of-*") if (p / "cells").is_dir())
        if shards:
            own = _read_own(path) if (path / "cells").is_dir() else []
            return own + [row for shard in shards for row in _read(shard)]
        return _read_own(path)
    return _read_table(path)


def _read_own(path: Path) -> list[dict]:
    """A sweep folder's own rows: its per-cell files, else its table."""
    from harness.sweep.store import ResultStore

    if any((path / "cells").glob("*.json")):  # read as the store reads them: a damaged cell file is skipped
        return _resolved(list(ResultStore(path).rows().values()), path)
    for name in ("results.parquet", "results.csv"):
        if (path / name).is_file():
            return _read_table(path / name)
    raise HarnessError(f"{path}: no sweep results here (no cells/ or results.parquet); "
                       "give a reports/<name>/ folder written by harness sweep")


def _read_table(path: Path) -> list[dict]:
    if not expect_file(path, "results").is_file():
        raise HarnessError(f"{path}: no such file or folder; give sweep results (reports/<name>/)")
    try:
        if path.suffix in (".parquet", ".csv"):
            table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
            return _resolved(_numbers_checked(table, path).to_dict("records"), path.parent)
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            return data if isinstance(data, list) else [data]
    except (OSError, ValueError) as exc:
        raise HarnessError(f"{path}: cannot read it as results ({exc})") from exc
    raise HarnessError(f"{path}: unknown results format; give a sweep folder, .parquet, .csv or .json")


def load_results(paths: list[Path]) -> pd.DataFrame:
    """Merge sources; a cell measured more than once keeps its latest row (resumed runs, re-run shards)."""
    if not paths:
        raise HarnessError("give at least one results folder or file (reports/<name>/)")
    rows = [row for path in paths for row in _read(Path(path))]
    if not rows:
        raise HarnessError(f"{', '.join(map(str, paths))}: no finished cells yet")
    df = pd.DataFrame(rows)
    if "finished_utc" in df.columns:
        df = df.sort_values("finished_utc", kind="stable")
    if "cell_id" in df.columns:
        df = df.drop_duplicates("cell_id", keep="last")
    merged = results_frame(df.to_dict("records"))
    return merged.sort_values(SETTINGS, kind="stable", na_position="first").reset_index(drop=True)
