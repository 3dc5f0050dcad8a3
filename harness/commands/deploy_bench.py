"""`harness bench ENGINE --scenario ... | --concurrency ...`: the deployment forms of bench, their option checks,
tables and JSON (LoadGen's logs beside it). Closed-loop timing, bench's default, stays in pipeline.py."""

from __future__ import annotations

from pathlib import Path

import click

from harness.commands.common import fmt, print_table, write_json
from harness.errors import HarnessError
from harness.measure.deploy import CONCURRENCY, DeployRequest, Measured, measure
from harness.measure.loadgen import CLOSED_LOOP, DEFAULT_BOUND_MS, DEFAULT_SAMPLES_PER_QUERY

SCENARIO_OPTIONS = {"target_qps": "--target-qps", "latency_bound_ms": "--latency-bound-ms",
                    "find_max_qps": "--find-max-qps", "samples_per_query": "--samples-per-query",
                    "official": "--official"}
CLOSED_LOOP_ONLY = {"shape": "--shape", "iterations": "--iterations", "warmup": "--warmup", "cv_warn": "--cv-warn",
                    "cuda_graph": "--cuda-graph", "no_data_transfers": "--no-data-transfers",
                    "spin_wait": "--spin-wait", "no_cuda_graph": "--no-cuda-graph",
                    "include_data_transfers": "--include-data-transfers", "no_spin_wait": "--no-spin-wait"}


def _given(ctx: click.Context, names) -> list[str]:
    return [flag for name, flag in names.items()
            if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)]


def deploy_request(ctx: click.Context, scenario: str, concurrency: str | None, max_batch: int, duration: float,
                   streams: int, target_qps, latency_bound_ms, find_max_qps, samples_per_query,
                   official) -> DeployRequest | None:
    """The request bench's options make, None for closed-loop timing, or a one-line error for options that do
    not fit together."""
    from harness.measure.concurrency import parse_levels

    scenario_flags = _given(ctx, SCENARIO_OPTIONS)
    if concurrency is not None and scenario != CLOSED_LOOP:
        raise HarnessError(f"--concurrency is a mode of its own: drop --scenario {scenario}")
    if scenario == CLOSED_LOOP and concurrency is None:
        if scenario_flags:
            raise HarnessError(f"{', '.join(scenario_flags)} apply to --scenario runs (closed-loop timing is the "
                               "default): add --scenario server|single-stream|multi-stream|offline")
        return None
    refused = _given(ctx, CLOSED_LOOP_ONLY)
    if refused:
        raise HarnessError(f"{', '.join(refused)} apply to closed-loop timing, not to --scenario or --concurrency "
                           "(requests of one sample each, batched up to --batch)")
    server_flags = [f for f in scenario_flags if f in ("--target-qps", "--latency-bound-ms", "--find-max-qps")]
    if scenario != "server" and server_flags:
        raise HarnessError(f"{', '.join(server_flags)} apply to --scenario server only")
    if scenario != "multi-stream" and samples_per_query is not None:
        raise HarnessError("--samples-per-query applies to --scenario multi-stream only")
    if concurrency is not None and official:
        raise HarnessError("--official applies to LoadGen scenarios, not to --concurrency")
    if scenario == "server" and (target_qps is None) == (not find_max_qps):
        raise HarnessError("--scenario server needs one of --target-qps Q (a fixed rate) or --find-max-qps (the "
                           "highest VALID rate)")
    return DeployRequest(
        scenario=CONCURRENCY if concurrency is not None else scenario, max_batch=max_batch, duration_s=duration,
        target_qps=target_qps, latency_bound_ms=latency_bound_ms or DEFAULT_BOUND_MS, find_max_qps=find_max_qps,
        samples_per_query=samples_per_query or DEFAULT_SAMPLES_PER_QUERY, official=official,
        concurrency=tuple(parse_levels(concurrency)) if concurrency is not None else (), streams=streams)


def _print_levels(measured: Measured, title: str) -> None:
    click.echo(title)
    head = ["concurrency", "samples/s", "p50 ms", "p90 ms", "p99 ms", "mean batch", "J/inference", ""]
    lines = [[str(r["concurrency"]), fmt(r["throughput_ips"]), fmt(r["latency_p50_ms"]), fmt(r["latency_p90_ms"]),
              fmt(r["latency_p99_ms"]), fmt(r["mean_batch"]), fmt(r["energy_j_per_inference"]),
              "<- knee" if r["knee"] else ""] for r in measured.rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    for line in [head, *lines]:
        click.echo("  " + "  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)).rstrip())
    knee = next((r for r in measured.rows if r["knee"]), None)
    click.echo(f"knee at concurrency {knee['concurrency']}: beyond it more requests in flight add latency, not "
               "throughput" if knee else "no knee: throughput still rises at the highest level; try higher ones")


SHOWN = ("valid", "loadgen_result", "qps", "throughput_ips", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms",
         "early_stopping_p90_ms", "early_stopping_p99_ms", "target_qps", "latency_bound_ms", "samples_per_query",
         "max_qps", "max_qps_invalid_at", "max_qps_runs", "offline_qps", "queries", "samples", "mean_batch",
         "duration_s", "energy_j_per_inference", "avg_power_w")


def default_name(request: DeployRequest) -> str:
    """'server-200qps', 'server-max-qps', 'multi-stream', 'concurrency': what the default JSON is named after."""
    if request.scenario != "server":
        return request.scenario
    return "server-max-qps" if request.find_max_qps else f"server-{request.target_qps:g}qps"


def run_deploy(meta, runner, request: DeployRequest, json_out: Path | None, title: str) -> None:
    """Measure, print, and write the JSON (LoadGen's logs in <json stem>.loadgen/ beside it)."""
    from harness.measure.serving import library_for

    out = Path(json_out or Path("reports") / "bench" / f"{Path(meta.artifact).stem}-{default_name(request)}.json")
    log_dir = out.with_name(f"{out.stem}.loadgen")
    measured = measure(runner, library_for(meta.spec), request, log_dir, log=lambda m: click.echo(m, err=True))
    head = {"engine": meta.artifact, "backend": meta.backend, "precision": meta.precision,
            "cuda_binding": getattr(runner, "cuda_binding", None), "max_batch": request.max_batch,
            "streams": request.streams}
    if request.scenario == CONCURRENCY:
        _print_levels(measured, title)
        payload = [{**head, **row} for row in measured.rows]
    else:
        row = measured.rows[0]
        print_table([(k, row[k]) for k in SHOWN if row.get(k) is not None], title)
        for note in (row.get("max_qps_note"), row["loadgen_note"] and f"LoadGen: {row['loadgen_note']}"):
            if note:
                click.echo(f"note: {note}", err=True)
        payload = {**head, **row}
        click.echo(f"LoadGen's logs: {log_dir}")
    click.echo(f"energy: {measured.rows[0]['energy_note']}", err=True)
    if measured.rows[0]["gpu_state_note"]:
        click.echo(f"warning: {measured.rows[0]['gpu_state_note']}", err=True)
    write_json(out, payload)
    click.echo(f"wrote {out}")
