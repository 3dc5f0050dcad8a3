"""A sweep cell measured by a deployment scenario (a LoadGen scenario or a concurrency sweep) instead of harness's
timed loop: the row's columns, with LoadGen's logs, the concurrency curve and the per-query latencies beside it.

The server forms batches up to the cell's batch (`batch_sizes` is the largest batch it may form). Files, relative
to the results folder: loadgen/<cell id>/ (LoadGen's summary and detail logs, one folder per run),
curves/<cell id>.csv (concurrency: one row per level), samples/<cell id>.parquet (single-stream, multi-stream and
fixed-rate server cells: each sample's latency from submit to answer, which `report compare` tests).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from harness.fileio import atomic_write
from harness.measure.deploy import CONCURRENCY, DeployRequest, measure
from harness.measure.gpu_state import COLUMNS as GPU_STATE
from harness.measure.samples import write_samples
from harness.sweep.experiment import Experiment
from harness.sweep.matrix import Cell

LOADGEN, CURVES = "loadgen", "curves"
FROM_ROW = ("valid", "loadgen_result", "loadgen_note", "qps", "throughput_ips", "latency_min_ms", "latency_mean_ms",
            "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_max_ms", "early_stopping_p90_ms",
            "early_stopping_p99_ms", "target_qps", "latency_bound_ms", "samples_per_query", "queries", "samples",
            "mean_batch", "max_qps", "max_qps_invalid_at", "max_qps_runs", "max_qps_note", "offline_qps",
            "energy_j", "energy_j_per_inference", "avg_power_w", "energy_note")


def request_for(exp: Experiment, cell: Cell, streams: int = 1) -> DeployRequest:
    s = exp.scenario
    return DeployRequest(scenario=cell.scenario, max_batch=cell.batch, duration_s=float(s["duration_s"]),
                         target_qps=s["target_qps"], latency_bound_ms=float(s["latency_bound_ms"]),
                         find_max_qps=bool(s["find_max_qps"]), samples_per_query=s["samples_per_query"],
                         official=s["official"], concurrency=tuple(s["concurrency"]), streams=streams)


def includes(request: DeployRequest) -> str:
    """What the row's figures include (its timing_includes)."""
    if request.scenario == CONCURRENCY:
        return (f"concurrency {','.join(map(str, request.concurrency))}: one-sample requests kept in flight, batched "
                f"up to {request.max_batch}; latency from submit to answer; figures at the knee (the highest level "
                "when there is none); every level in curve_file")
    what = {"server": "Poisson arrivals", "offline": "every sample in one query",
            "single-stream": "one query at a time", "multi-stream": f"{request.samples_per_query}-sample queries "
                                                                    "one at a time"}[request.scenario]
    return (f"MLPerf LoadGen {request.scenario} ({what}), batches up to {request.max_batch}: latency from a query's "
            "scheduled issue to its answer, harness's request queue included")


def measure_cell(root: Path, cid: str, cell: Cell, runner, library, exp: Experiment,
                 log=lambda message: None) -> dict:
    """Measure a scenario cell; its row columns."""
    request = request_for(exp, cell)
    logs = Path(LOADGEN) / cid
    measured = measure(runner, library, request, Path(root) / logs, log)
    if request.scenario == CONCURRENCY:
        curve = pd.DataFrame(measured.rows)[["concurrency", "throughput_ips", "latency_p50_ms", "latency_p90_ms",
                                             "latency_p99_ms", "latency_max_ms", "mean_batch", "requests", "knee",
                                             "energy_j_per_inference", "avg_power_w"]]
        rel = Path(CURVES) / f"{cid}.csv"
        atomic_write(Path(root) / rel, curve.to_csv(index=False))
        knee = next((r for r in measured.rows if r["knee"]), None)
        shown = knee or measured.rows[-1]
        row = {k: shown.get(k) for k in FROM_ROW}
        row.update(curve_file=str(rel), knee_concurrency=knee and knee["concurrency"],
                   concurrency_levels=",".join(map(str, request.concurrency)),
                   peak_throughput_ips=max(r["throughput_ips"] for r in measured.rows),
                   latency_samples=shown["requests"])
    else:
        shown = measured.rows[0]
        row = {k: shown.get(k) for k in FROM_ROW}
        row.update(loadgen_logs=str(logs), latency_samples=shown["queries"])
        if shown.get("max_qps_search") is not None:
            row["max_qps_search"] = json.dumps(shown["max_qps_search"])
    row.update({k: measured.rows[0].get(k) for k in GPU_STATE})
    if measured.latencies_ms is not None and len(measured.latencies_ms):
        row["samples_file"] = write_samples(root, cid, [measured.latencies_ms])
    row["timing_includes"] = includes(request)
    return row
