"""MLPerf LoadGen around any harness runner: a scenario's settings, its system under test, and what LoadGen logged.

LoadGen (`mlcommons-loadgen`, module mlperf_loadgen) issues queries the way its scenario prescribes; a
BatchServer (harness.measure.serving) answers them with the runner:

- single-stream: one one-sample query at a time, the next when it is answered; metric: the 90th percentile
  latency (LoadGen's early-stopping estimate), p99 beside it;
- multi-stream: the same with queries of `samples_per_query` samples (8, as in MLPerf); metric: p99 per query;
- server: one-sample queries at Poisson arrivals of `target_qps`; VALID when the 99th percentile is within the
  latency bound;
- offline: every sample in one query, batched up to the engine's batch; metric: samples per second.

Runs last `duration_s` (seconds, so a CPU sweep stays short; LoadGen's own minimum query counts are lifted);
`official` keeps MLPerf's minimums (600 s and the query counts) instead. What is reported comes from LoadGen's
detail log (its :::MLLOG records), kept with the summary in `log_dir`.

A short server run is judged on the bound alone: `valid` is LoadGen's "performance constraints met" (p99 within
the bound), while LoadGen's own verdict (`loadgen_result`) also needs its early-stopping test, which asks for more
queries than a few seconds give (about 840 at 1 % over the bound); with `official` both must hold.
"""

from __future__ import annotations

import json
import platform
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from harness.backends.base import Runner
from harness.errors import HarnessError, MissingDependency, first_line
from harness.measure.serving import WORKERS, BatchServer, Request

CLOSED_LOOP = "closed-loop"  # harness's own timed loop (Runner.time), not a LoadGen scenario
SCENARIOS = ("single-stream", "multi-stream", "server", "offline")
_LOADGEN_NAMES = {"single-stream": "SingleStream", "multi-stream": "MultiStream", "server": "Server",
                  "offline": "Offline"}
DEFAULT_BOUND_MS = 10.0
DEFAULT_SAMPLES_PER_QUERY = 8


class LoadgenMissing(MissingDependency):
    """mlcommons-loadgen is not importable: PyPI has no wheel for this Python or platform (see pyproject.toml)."""

    def __init__(self):
        HarnessError.__init__(
            self, f"mlcommons-loadgen is not installed (PyPI has wheels for CPython 3.10-3.13 on Linux x86_64, "
                  f"macOS arm64 and Windows x64; this is CPython {sys.version_info.major}.{sys.version_info.minor} "
                  f"on {sys.platform} {platform.machine()}): pip install -e '.[loadgen]' builds it from source "
                  "(needs a C++ compiler); --concurrency and closed-loop timing work without it")
        self.extra = "loadgen"


def loadgen():
    """The mlperf_loadgen module, or a one-line error naming the package."""
    try:
        import mlperf_loadgen
    except ImportError as exc:
        raise LoadgenMissing() from exc
    return mlperf_loadgen


@dataclass(frozen=True)
class ScenarioSettings:
    scenario: str
    duration_s: float = 2.0
    target_qps: float | None = None  # server
    latency_bound_ms: float = DEFAULT_BOUND_MS  # server
    samples_per_query: int = DEFAULT_SAMPLES_PER_QUERY  # multi-stream
    official: bool = False

    def __post_init__(self):
        if self.scenario not in SCENARIOS:
            raise HarnessError(f"scenario {self.scenario!r}: choose one of {', '.join(SCENARIOS)}")
        if self.scenario == "server" and not (self.target_qps and self.target_qps > 0):
            raise HarnessError("the server scenario needs a target rate: --target-qps Q (or --find-max-qps)")


@dataclass
class ScenarioResult:
    """One LoadGen run. Latencies in ms as LoadGen measured them (from a query's scheduled issue to its answer);
    `latencies_ms` holds the same per sample as the server saw them (from submit), for report compare."""

    scenario: str
    valid: bool | None  # server: p99 within the bound; None where the scenario has no bound
    loadgen_result: str  # LoadGen's own verdict, VALID or INVALID
    loadgen_note: str  # why LoadGen said INVALID, or its early-stopping remark ('' when none)
    qps: float | None  # queries per second (offline: samples per second, its one query holds them all)
    throughput_ips: float | None  # samples per second
    latency_min_ms: float | None
    latency_mean_ms: float | None
    latency_p50_ms: float | None
    latency_p90_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None
    early_stopping_p90_ms: float | None  # single-stream: the percentile LoadGen vouches for at its confidence
    early_stopping_p99_ms: float | None
    queries: int
    samples: int
    target_qps: float | None
    latency_bound_ms: float | None
    samples_per_query: int | None
    duration_s: float  # wall time of the run, LoadGen's set-up and drain included
    mean_batch: float  # samples per batch the server ran
    loadgen_log_dir: str
    official: bool = False
    latencies_ms: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("latencies_ms")
        return out


def read_detail_log(log_dir: Path) -> dict:
    """Every :::MLLOG record of mlperf_log_detail.txt, key -> value (a later record of a key wins)."""
    path = Path(log_dir) / "mlperf_log_detail.txt"
    records = {}
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(":::MLLOG "):
            try:
                record = json.loads(line[len(":::MLLOG "):])
            except ValueError:
                continue
            records[record.get("key")] = record.get("value")
    return records


def _ms(records: dict, key: str) -> float | None:
    value = records.get(key)
    return None if value is None else float(value) / 1e6


def _early_stopping(text: str) -> dict[str, float]:
    """'Early stopping 90.0th percentile estimate: 5249596' -> {'p90': 5.249596} (ms)."""
    found = re.findall(r"Early stopping (\d+(?:\.\d+)?)th percentile estimate: (\d+)", text or "")
    return {f"p{float(p):g}": int(ns) / 1e6 for p, ns in found}


def parse_result(settings: ScenarioSettings, log_dir: Path, server: BatchServer, wall_s: float) -> ScenarioResult:
    r = read_detail_log(log_dir)
    if "result_validity" not in r:
        raise HarnessError(f"{log_dir}/mlperf_log_detail.txt has no result: LoadGen did not finish the run")
    scenario, queries = settings.scenario, int(r.get("result_query_count") or 0)
    per_query = settings.samples_per_query if scenario == "multi-stream" else 1
    samples = sum(server.batch_sizes)
    if scenario == "server":
        qps = r.get("result_completed_samples_per_sec")
        ips = qps
    elif scenario == "offline":
        qps = ips = r.get("result_samples_per_second")
    elif scenario == "single-stream":
        qps = ips = r.get("result_qps_with_loadgen_overhead")
    else:  # multi-stream: LoadGen logs no rate; queries over the server's busy span
        span = (server.last_answer or 0) - (server.first_issue or 0)
        qps = queries / span if span > 0 else None
        ips = None if qps is None else qps * per_query
    early = _early_stopping(r.get("early_stopping_result", ""))
    constraints = bool(r.get("result_perf_constraints_met")) and bool(r.get("result_min_duration_met", True))
    valid = None
    if scenario == "server":
        valid = r["result_validity"] == "VALID" if settings.official else constraints
    note = " ".join(str(r.get(k) or "").strip() for k in ("result_invalid_reason", "early_stopping_result"))
    latency = {f"latency_{name}_ms": None if scenario == "offline" else _ms(r, key) for name, key in (
        ("min", "result_min_latency_ns"), ("mean", "result_mean_latency_ns"),
        ("p50", "result_50.00_percentile_latency_ns"), ("p90", "result_90.00_percentile_latency_ns"),
        ("p99", "result_99.00_percentile_latency_ns"), ("max", "result_max_latency_ns"))}
    return ScenarioResult(
        scenario=scenario, valid=valid, loadgen_result=str(r["result_validity"]),
        loadgen_note=re.sub(r"\s+", " ", note).strip(), qps=None if qps is None else float(qps),
        throughput_ips=None if ips is None else float(ips), **latency,
        early_stopping_p90_ms=early.get("p90"), early_stopping_p99_ms=early.get("p99"), queries=queries,
        samples=samples, target_qps=settings.target_qps if scenario == "server" else None,
        latency_bound_ms=settings.latency_bound_ms if scenario == "server" else None,
        samples_per_query=per_query if scenario == "multi-stream" else None, duration_s=wall_s,
        mean_batch=samples / len(server.batch_sizes) if server.batch_sizes else 0.0, loadgen_log_dir=str(log_dir),
        official=settings.official, latencies_ms=np.asarray(server.latencies_ms, dtype=np.float64))


def probe_query_s(runner: Runner, library: np.ndarray, batch: int, runs: int = 5) -> float:
    """Median seconds of one query of `batch` samples (after one untimed run): the latency single- and multi-stream
    runs expect, from which LoadGen sizes the queries it generates."""
    x = library[np.arange(batch) % len(library)]
    infer = runner.serving(1)[0]  # what the queries will run (on the CPU: the deployed session)
    infer(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        infer(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def probe_offline_ips(runner: Runner, library: np.ndarray, max_batch: int, workers: int = WORKERS,
                      streams: int = 1) -> float:
    """Samples per second of a short burst (three full batches per worker) through a BatchServer: the rate an
    offline run expects, from which LoadGen sizes its one query."""
    count = 3 * workers * max_batch
    left = [count]
    with BatchServer(runner, library, max_batch, lambda requests, out: left.__setitem__(0, left[0] - len(requests)),
                     workers, streams) as server:
        server.submit((i % len(library), None) for i in range(count))
    if server.error is not None:
        raise HarnessError(f"the runner failed: {first_line(server.error)}") from server.error
    return count / max(server.last_answer - server.first_issue, 1e-9)


def expectation(runner: Runner, library: np.ndarray, settings: ScenarioSettings, max_batch: int,
                workers: int = WORKERS, streams: int = 1) -> float:
    """What LoadGen is told to expect: offline, samples per second; otherwise seconds per query."""
    if settings.scenario == "offline":
        return probe_offline_ips(runner, library, max_batch, workers, streams)
    return probe_query_s(runner, library, settings.samples_per_query if settings.scenario == "multi-stream" else 1)


def loadgen_settings(lg, settings: ScenarioSettings, library_size: int, expected: float):
    """LoadGen's TestSettings: the scenario, its figures and, unless official, the short duration. Too low an
    expected latency or too high an expected rate only makes LoadGen generate more queries than the run needs."""
    ts = lg.TestSettings()
    ts.scenario = getattr(lg.TestScenario, _LOADGEN_NAMES[settings.scenario])
    ts.mode = lg.TestMode.PerformanceOnly
    if not settings.official:
        ts.min_duration_ms = int(settings.duration_s * 1000)
        ts.min_query_count = 1
    ts.performance_sample_count_override = library_size
    if settings.scenario == "offline":
        ts.offline_expected_qps = max(1.3 * expected, 1.0)
    elif settings.scenario == "single-stream":
        ts.single_stream_expected_latency_ns = max(int(expected * 1e9 / 2), 1000)
    elif settings.scenario == "multi-stream":
        ts.multi_stream_expected_latency_ns = max(int(expected * 1e9 / 2), 1000)
        ts.multi_stream_samples_per_query = settings.samples_per_query
    else:
        ts.server_target_qps = float(settings.target_qps)
        ts.server_target_latency_ns = int(settings.latency_bound_ms * 1e6)
    return ts


def log_settings(lg, log_dir: Path):
    ls = lg.LogSettings()
    ls.log_output.outdir = str(log_dir)
    ls.log_output.copy_summary_to_stdout = False
    ls.enable_trace = False  # the trace of every query can reach gigabytes; the detail log holds the figures
    return ls


def run_scenario(runner: Runner, library: np.ndarray, settings: ScenarioSettings, log_dir: Path, max_batch: int,
                 streams: int = 1, workers: int = WORKERS, expected: float | None = None) -> ScenarioResult:
    """One LoadGen test of `runner` answering from `library`; LoadGen's logs go to `log_dir`. `expected` is
    what expectation() returns (probed here when not given; a max-QPS search probes once)."""
    lg = loadgen()
    if settings.scenario == "multi-stream" and settings.samples_per_query > len(library):
        raise HarnessError(f"--samples-per-query {settings.samples_per_query} exceeds the {len(library)} samples "
                           "of the sample library")
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    if expected is None and settings.scenario != "server":
        expected = expectation(runner, library, settings, max_batch, workers, streams)

    def answer(requests: list[Request], out: np.ndarray | None) -> None:
        if out is None:
            lg.QuerySamplesComplete([lg.QuerySampleResponse(r.tag, 0, 0) for r in requests])
            return
        rows = [np.ascontiguousarray(out[i]) for i in range(len(requests))]
        lg.QuerySamplesComplete([lg.QuerySampleResponse(r.tag, row.ctypes.data, row.nbytes)
                                 for r, row in zip(requests, rows, strict=True)])

    start = time.perf_counter()
    with BatchServer(runner, library, max_batch, answer, workers, streams) as server:
        sut = lg.ConstructSUT(lambda queries: server.submit((q.index, q.id) for q in queries), lambda: None)
        qsl = lg.ConstructQSL(len(library), len(library), lambda indices: None, lambda indices: None)
        try:
            lg.StartTestWithLogSettings(sut, qsl, loadgen_settings(lg, settings, len(library), expected or 0.0),
                                        log_settings(lg, log_dir))
        finally:
            lg.DestroyQSL(qsl)
            lg.DestroySUT(sut)
    wall = time.perf_counter() - start
    if server.error is not None:
        raise HarnessError(f"the runner failed during the {settings.scenario} run: {first_line(server.error)}") \
            from server.error
    return parse_result(settings, log_dir, server, wall)
