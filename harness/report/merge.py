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

SETTINGS = ["model", "dataset", "backend", "precision", "tool", "mode", "calibrator", "batch"]
LATENCY = ["latency_min_ms", "latency_mean_ms", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms"]
DERIVED = ["speedup_vs_baseline", "speedup_vs_fp32", "speedup_vs_fp16", "top1_delta_pp"]
COLUMNS = [
    "cell_id", "experiment", "status", *SETTINGS, *LATENCY, "latency_cv", "latency_p50_lo_ms",
    "latency_p50_hi_ms", "latency_spread_pct", "repeats", "throughput_ips", "top1_pct", "top5_pct",
    "top1_agreement_pct", "sqnr_db", "max_abs_error", "eval_samples", "qdq_hazards", "qdq_float_layers",
    *DERIVED, "engine_size_mb", "build_s", "calib_s", "export_s", "engine_cache_hit", "cell_s", "error",
    "failed_stage", "baseline_id", "timing_includes", "engine", "onnx", "layer_table", "finished_utc",
]
# Columns every row must have for the table to be one of ours (tables from before `tool` existed hold pq rows).
REQUIRED = ["cell_id", "status", *(c for c in SETTINGS if c != "tool")]


def _with_peer_speedup(df: pd.DataFrame, precision: str) -> pd.Series:
    """p50 of the same model, dataset, backend and batch at `precision`, over this cell's p50."""
    ok = df[(df["status"] == "ok") & (df["precision"] == precision)]
    keys = ["model", "dataset", "backend", "batch"]
    peer = ok.drop_duplicates(keys).set_index(keys)["latency_p50_ms"]
    index = pd.MultiIndex.from_frame(df[keys])
    return pd.Series(peer.reindex(index).to_numpy() / df["latency_p50_ms"].to_numpy(), index=df.index)


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
    numeric = [*LATENCY, "top1_pct", "batch"]
    df[numeric] = df[numeric].apply(pd.to_numeric, errors="coerce")
    for col in ("tool", "mode", "calibrator", "error", "failed_stage"):
        df[col] = df[col].where(df[col].notna() & (df[col] != ""), None)
    # Rows from before there was a choice of quantizer are pytorch-quantization's.
    df["tool"] = df["tool"].where(df["tool"].notna() | df["mode"].isna(), "pq")
    ok = df[df["status"] == "ok"].drop_duplicates("cell_id").set_index("cell_id")
    base = df["baseline_id"].map(ok["latency_p50_ms"])
    df["speedup_vs_baseline"] = base / df["latency_p50_ms"]
    df["top1_delta_pp"] = df["top1_pct"] - df["baseline_id"].map(ok["top1_pct"])
    df["speedup_vs_fp32"] = _with_peer_speedup(df, "fp32")
    df["speedup_vs_fp16"] = _with_peer_speedup(df, "fp16")
    extra = sorted(c for c in df.columns if c not in COLUMNS)
    return df[COLUMNS + extra].reset_index(drop=True)


def _read(path: Path) -> list[dict]:
    """Rows of one source: a sweep folder (its per-cell files, else its table) or a table file."""
    if path.is_dir():
        from harness.sweep.store import ResultStore

        if any((path / "cells").glob("*.json")):
            rows = list(ResultStore(path).rows().values())
            for row in rows:
                if row.get("layer_table"):
                    row["layer_table"] = str((path / row["layer_table"]).resolve())
            return rows
        for name in ("results.parquet", "results.csv"):
            if (path / name).is_file():
                return _read(path / name)
        raise HarnessError(f"{path}: no sweep results here (no cells/ or results.parquet); "
                           "give a reports/<name>/ folder written by harness sweep")
    if not expect_file(path, "results").is_file():
        raise HarnessError(f"{path}: no such file or folder; give sweep results (reports/<name>/)")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path).to_dict("records")
        if path.suffix == ".csv":
            return pd.read_csv(path).to_dict("records")
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
