"""The deployment questions, measured: a LoadGen scenario, the server's max QPS under a bound, or a concurrency
sweep, each with its energy per inference. `harness bench` prints and writes what this returns, and a sweep's
scenario cells store it; both get the same figures, named the same way.

Every result is a plain dict (one per measurement; one per level for a concurrency sweep) holding at least
COMMON. Energy covers exactly the measured run (LoadGen's run, or a level's window), never the probes before it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.backends.base import Runner
from harness.errors import HarnessError
from harness.measure import concurrency as conc
from harness.measure.energy import EnergyMeter
from harness.measure.gpu_state import GpuMonitor
from harness.measure.loadgen import (
    CLOSED_LOOP,
    DEFAULT_BOUND_MS,
    DEFAULT_SAMPLES_PER_QUERY,
    SCENARIOS,
    ScenarioResult,
    ScenarioSettings,
    expectation,
    loadgen,
    run_scenario,
)
from harness.measure.max_qps import MAX_RUNS, TOLERANCE, find_max_qps
from harness.measure.serving import WORKERS

CONCURRENCY = "concurrency"
MODES = (CLOSED_LOOP, *SCENARIOS, CONCURRENCY)  # what a sweep's `scenarios:` axis takes
COMMON = ("scenario", "valid", "qps", "throughput_ips", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms",
          "concurrency", "energy_j_per_inference", "avg_power_w", "energy_note")


@dataclass(frozen=True)
class DeployRequest:
    """What to measure; `max_batch` is the largest batch the server forms, `streams` TensorRT's lanes."""

    scenario: str  # a LoadGen scenario or "concurrency"
    max_batch: int
    duration_s: float = 2.0
    target_qps: float | None = None
    latency_bound_ms: float = DEFAULT_BOUND_MS
    find_max_qps: bool = False
    samples_per_query: int = DEFAULT_SAMPLES_PER_QUERY
    official: bool = False
    concurrency: tuple[int, ...] = (1, 2, 4, 8)
    streams: int = 1
    tolerance: float = TOLERANCE
    max_runs: int = MAX_RUNS

    @property
    def workers(self) -> int:
        """Serving threads: one batch in flight ahead of each stream's, as trtexec keeps (2 off TensorRT)."""
        return self.streams + WORKERS - 1

    def settings(self, scenario: str | None = None, target_qps: float | None = None) -> ScenarioSettings:
        return ScenarioSettings(scenario or self.scenario, self.duration_s, target_qps or self.target_qps,
                                self.latency_bound_ms, self.samples_per_query, self.official)


@dataclass
class Measured:
    rows: list[dict]  # the JSON objects
    latencies_ms: np.ndarray | None = None  # per-sample latencies of the reported run, where they mean something
    extra: dict = field(default_factory=dict)


def _row(values: dict) -> dict:
    return {**dict.fromkeys(COMMON), **values}


def _scenario_row(result: ScenarioResult, energy: dict) -> dict:
    return _row({**result.to_dict(), "concurrency": None, **energy})


def clear_logs(log_dir: Path) -> None:
    """Remove the LoadGen run folders an earlier measurement left in `log_dir` (a search of more runs would
    otherwise leave some beside the new ones); nothing else there is touched."""
    for folder in Path(log_dir).glob("*"):
        if folder.is_dir() and (folder / "mlperf_log_detail.txt").exists() and (
                folder.name in SCENARIOS or (folder.name.startswith("server-") and folder.name.endswith("qps"))):
            shutil.rmtree(folder)


def measure(runner: Runner, library: np.ndarray, request: DeployRequest, log_dir: Path,
            log: Callable[[str], None] = lambda message: None) -> Measured:
    """Run what `request` asks; LoadGen's logs go under `log_dir` (one folder per run). Every row also holds the
    GPU's state over the whole measurement (harness.measure.gpu_state; empty off a GPU)."""
    if request.scenario not in (*SCENARIOS, CONCURRENCY):
        raise HarnessError(f"scenario {request.scenario!r}: choose one of {', '.join((*SCENARIOS, CONCURRENCY))}")
    if request.scenario != CONCURRENCY:
        loadgen()  # where it is missing, say so before any probe runs
    clear_logs(log_dir)
    with GpuMonitor(enabled=getattr(runner, "on_gpu", False)) as gpu:
        measured = _measure(runner, library, request, log_dir, log)
    for row in measured.rows:
        row.update(gpu.columns())
    return measured


def _measure(runner: Runner, library: np.ndarray, request: DeployRequest, log_dir: Path,
             log: Callable[[str], None]) -> Measured:
    on_gpu = getattr(runner, "on_gpu", False)
    if request.scenario == CONCURRENCY:
        levels = conc.run_levels(runner, library, list(request.concurrency), request.duration_s, request.max_batch,
                                 request.workers, request.streams, lambda: EnergyMeter(on_gpu), log)
        rows = [_row({"scenario": CONCURRENCY, "qps": lv.throughput_ips, **lv.to_dict()}) for lv in levels]
        return Measured(rows, None, {"levels": levels})

    def run(settings: ScenarioSettings, folder: str, expected: float | None) -> tuple[ScenarioResult, dict]:
        if expected is None and settings.scenario != "server":
            expected = expectation(runner, library, settings, request.max_batch, request.workers, request.streams)
        with EnergyMeter(on_gpu) as meter:
            result = run_scenario(runner, library, settings, Path(log_dir) / folder, request.max_batch,
                                  request.streams, request.workers, expected)
        energy = meter.columns(result.samples)
        log(f"{settings.scenario}{f' at {settings.target_qps:.4g} QPS' if settings.target_qps else ''}: "
            + (f"{'VALID' if result.valid else 'INVALID'}, " if result.valid is not None else "")
            + (f"p99 {result.latency_p99_ms:.4g} ms, " if result.latency_p99_ms is not None else "")
            + f"{result.throughput_ips or 0:.4g} samples/s")
        return result, energy

    if not (request.scenario == "server" and request.find_max_qps):
        result, energy = run(request.settings(), request.scenario, None)
        keep = result.latencies_ms if request.scenario != "offline" else None
        return Measured([_scenario_row(result, energy)], keep)
    offline, _ = run(request.settings("offline"), "offline", None)
    if not offline.throughput_ips:
        raise HarnessError("the offline run answered nothing: no rate to search the server's from")
    energies: dict[int, dict] = {}

    def server_at(rate: float) -> ScenarioResult:
        folder = f"server-{len(energies) + 1:02d}-{rate:.6g}qps"
        result, energy = run(request.settings("server", rate), folder, None)
        energies[id(result)] = energy
        return result

    search = find_max_qps(server_at, offline.throughput_ips, request.tolerance, request.max_runs)
    shown = search.best or search.runs[-1]
    row = _scenario_row(shown, energies[id(shown)])
    row.update(valid=search.max_qps is not None, max_qps=search.max_qps, max_qps_invalid_at=search.invalid_at,
               max_qps_runs=len(search.runs), max_qps_search=search.table(), max_qps_note=search.note(),
               offline_qps=search.offline_qps, loadgen_log_dir=str(log_dir))
    return Measured([row], None, {"search": search})
