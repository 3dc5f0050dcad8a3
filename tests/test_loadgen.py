"""MLPerf LoadGen scenarios around harness runners: verdicts on a runner whose speed is known, the max-QPS search,
the bundled model on the CPU, and `harness bench --scenario`'s options, output and logs.

Load from other processes only ever adds latency, so a claim that a rate is served (VALID) is shown by one VALID
run of up to three (`any_valid`); INVALID claims hold on every run.
"""

import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from harness.backends.base import Runner
from harness.errors import HarnessError
from harness.measure.deploy import COMMON, DeployRequest, measure
from harness.measure.loadgen import ScenarioResult, ScenarioSettings, run_scenario
from harness.measure.max_qps import find_max_qps

LIBRARY = np.arange(64, dtype=np.float32).reshape(64, 1, 1, 1) * np.ones((1, 1, 4, 4), np.float32)


class SleepyRunner(Runner):
    """Sleeps `ms` per sample of a batch (so batching gains nothing) and answers each sample's mean, tagged."""

    def __init__(self, ms: float = 5.0, fail_after: int | None = None):
        self.ms, self.fail_after, self.calls = ms, fail_after, 0

    def infer(self, x):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("device lost")
        time.sleep(self.ms / 1e3 * len(x))
        return x.reshape(len(x), -1).mean(axis=1, keepdims=True) * np.ones((1, 10), np.float32)

    def time(self, *args, **kwargs):
        raise NotImplementedError


def server(runner, qps, tmp_path, bound=10.0, duration=1.0) -> ScenarioResult:
    return run_scenario(runner, LIBRARY, ScenarioSettings("server", duration, qps, bound), tmp_path / f"s{qps}",
                        max_batch=8)


def any_valid(run, tries=3):
    """Runs until one is VALID (at most `tries`): every run's result, the last first checked by the caller."""
    results = []
    for _ in range(tries):
        results.append(run())
        if (results[-1]["valid"] if isinstance(results[-1], dict) else results[-1].valid):
            break
    return results


def outcome(rate, valid) -> ScenarioResult:
    """A server run's result with only what the search reads."""
    fields = {**dict.fromkeys(ScenarioResult.__dataclass_fields__), "scenario": "server", "valid": valid,
              "target_qps": rate, "qps": rate, "latencies_ms": np.zeros(0)}
    return ScenarioResult(**fields)


def test_a_runner_of_5_ms_per_query_is_invalid_at_400_qps_and_valid_at_50(tmp_path):
    overloaded = server(SleepyRunner(5.0), 400, tmp_path)
    assert overloaded.valid is False and overloaded.latency_p99_ms > 10.0
    assert overloaded.latency_bound_ms == 10.0 and overloaded.target_qps == 400
    light = any_valid(lambda: server(SleepyRunner(5.0), 50, tmp_path), tries=5)
    assert light[-1].valid is True, [r.latency_p99_ms for r in light]
    assert 5.0 <= light[-1].latency_p50_ms < 10.0 and light[-1].latency_p99_ms <= 10.0
    # LoadGen's own verdict also asks for its early-stopping test, which a one-second run cannot pass
    assert light[-1].loadgen_result == "INVALID" and "more queries" in light[-1].loadgen_note
    summary = (tmp_path / "s50" / "mlperf_log_summary.txt").read_text()
    assert "Scenario : Server" in summary and "target_qps : 50" in summary


def test_single_multi_stream_and_offline_report_their_metrics_and_keep_loadgens_logs(tmp_path):
    runner = SleepyRunner(1.0)
    single = run_scenario(runner, LIBRARY, ScenarioSettings("single-stream", 0.5), tmp_path / "ss", max_batch=8)
    assert single.valid is None and single.queries == single.samples > 50 and single.mean_batch == 1.0
    assert single.early_stopping_p90_ms is not None and single.early_stopping_p90_ms >= single.latency_p50_ms >= 1.0
    assert single.latency_p50_ms <= single.latency_p90_ms <= single.latency_p99_ms
    multi = run_scenario(runner, LIBRARY, ScenarioSettings("multi-stream", 0.5, samples_per_query=4),
                         tmp_path / "ms", max_batch=8)
    assert multi.samples == 4 * multi.queries and multi.mean_batch == 4.0 and multi.samples_per_query == 4
    assert multi.latency_p50_ms >= 4.0 and multi.throughput_ips == pytest.approx(4 * multi.qps)
    offline = run_scenario(runner, LIBRARY, ScenarioSettings("offline", 0.5), tmp_path / "off", max_batch=8)
    assert offline.queries == 1 and offline.samples > 100 and offline.mean_batch > 6  # batched up to 8
    assert offline.latency_p99_ms is None and 500 < offline.throughput_ips < 2 * 1000  # 2 workers, 1 ms a sample
    for folder in ("ss", "ms", "off"):
        assert {"mlperf_log_summary.txt", "mlperf_log_detail.txt"} <= {p.name for p in (tmp_path / folder).iterdir()}
        trace = tmp_path / folder / "mlperf_log_trace.json"
        assert not trace.exists() or trace.stat().st_size == 0  # no per-query trace: it can reach gigabytes


def test_a_runner_that_fails_ends_the_run_with_one_line(tmp_path):
    with pytest.raises(HarnessError, match="the runner failed during the server run: device lost"):
        server(SleepyRunner(1.0, fail_after=3), 100, tmp_path, duration=0.5)


def test_the_search_bisects_down_from_offline_and_retries_an_invalid_verdict():
    def fake(capacity, flaky=()):
        tried = []

        def run_at(rate):
            tried.append(rate)
            return outcome(rate, rate <= capacity and not (rate in flaky and tried.count(rate) == 1))

        return run_at, tried

    run_at, tried = fake(300)
    search = find_max_qps(run_at, 1000)
    assert tried[0] == 1000 and tried[1] == 1000 and tried[2] == 500  # the offline rate first, an INVALID retried
    assert search.max_qps <= 300 < search.invalid_at and search.invalid_at - search.max_qps <= 0.05 * 1000
    assert search.best.target_qps == search.max_qps and "server runs" in search.note()
    run_at, tried = fake(300, flaky=(250.0,))
    assert find_max_qps(run_at, 1000).max_qps <= 300 and tried.count(250.0) == 2  # one bad run is not believed
    run_at, _ = fake(5000)
    assert find_max_qps(run_at, 1000).invalid_at is None  # served at the offline rate: throughput-bound
    run_at, _ = fake(0)
    nothing = find_max_qps(run_at, 1000, max_runs=4)
    assert nothing.max_qps is None and len(nothing.runs) == 4 and "INVALID at every rate" in nothing.note()


@pytest.fixture(scope="module")
def digits(digits_engine):
    from harness.build import load_engine
    from harness.measure.serving import library_for

    meta, runner = load_engine(digits_engine.artifact)
    return meta, runner, library_for(meta.spec)


def test_digits_server_is_valid_at_a_fifth_of_offline_and_invalid_at_three_times(digits, tmp_path):
    meta, runner, library = digits
    offline = measure(runner, library, DeployRequest("offline", max_batch=32, duration_s=0.5), tmp_path).rows[0]
    rate = offline["throughput_ips"]

    def at(factor):
        """A 50 ms bound: far above a batch's few ms, so only queueing (or other processes) can break it."""
        request = DeployRequest("server", max_batch=32, duration_s=0.5, target_qps=factor * rate, latency_bound_ms=50)
        return measure(runner, library, request, tmp_path).rows[0]

    fifth = any_valid(lambda: at(0.2))
    assert fifth[-1]["valid"] is True, [r["latency_p99_ms"] for r in fifth]
    triple = at(3.0)
    assert triple["valid"] is False and triple["latency_p99_ms"] > 50.0
    assert triple["qps"] < 0.9 * 3 * rate  # it cannot answer as fast as asked


def test_bench_find_max_qps_lands_between_a_fifth_and_1_1x_offline(run_cli, digits_engine):
    result = run_cli("bench", digits_engine.artifact, "--scenario", "server", "--find-max-qps", "--duration", "0.4",
                     "--latency-bound-ms", "50", "--json", "max.json")
    assert result.exit_code == 0, result.output
    row = json.loads(Path("max.json").read_text())
    assert set(COMMON) <= set(row) and row["scenario"] == "server" and row["valid"] is True
    assert 0.2 * row["offline_qps"] <= row["max_qps"] <= 1.1 * row["offline_qps"], row["max_qps_search"]
    assert row["max_qps_runs"] == len(row["max_qps_search"]) >= 1 and row["target_qps"] == row["max_qps"]
    if row["max_qps_invalid_at"] is None:  # VALID at the offline rate: the search ends there
        assert row["max_qps"] == row["offline_qps"] and "VALID at the offline rate" in row["max_qps_note"]
    else:
        assert row["max_qps"] < row["max_qps_invalid_at"] <= row["offline_qps"]
    assert row["latency_p99_ms"] <= row["latency_bound_ms"] == 50.0
    assert row["energy_j_per_inference"] is None and "no CPU energy counter" in row["energy_note"]
    logs = sorted(p.name for p in Path("max.loadgen").iterdir())
    assert logs[0] == "offline" and len(logs) == 1 + row["max_qps_runs"]
    assert re.search(rf"max_qps +{row['max_qps']:.4g}\n", result.output)
    assert f"server at {row['max_qps']:.4g} QPS: VALID" in result.output  # every run of the search is printed


def test_bench_scenarios_write_one_object_each_with_the_fields_asked_for(run_cli, digits_engine):
    for scenario, extra in (("single-stream", []), ("multi-stream", ["--samples-per-query", "4"]),
                            ("offline", []), ("server", ["--target-qps", "100", "--latency-bound-ms", "50"])):
        result = run_cli("bench", digits_engine.artifact, "--scenario", scenario, "--duration", "0.3", *extra,
                         "--json", f"{scenario}.json")
        assert result.exit_code == 0, result.output
        row = json.loads(Path(f"{scenario}.json").read_text())
        assert set(COMMON) <= set(row) and row["scenario"] == scenario and row["concurrency"] is None
        assert row["valid"] is (None if scenario != "server" else row["latency_p99_ms"] <= 50)
        assert (Path(f"{scenario}.loadgen") / scenario / "mlperf_log_summary.txt").is_file()
    assert json.loads(Path("multi-stream.json").read_text())["samples_per_query"] == 4
    closed = run_cli("bench", digits_engine.artifact, "--duration", "0.1", "--json", "closed.json")
    row = json.loads(Path("closed.json").read_text())
    assert closed.exit_code == 0 and row["scenario"] == "closed-loop" and set(COMMON) <= set(row)
    assert row["energy_j_per_inference"] is None and row["energy_note"]


@pytest.mark.parametrize("args, message", [
    (["--scenario", "server"], "--scenario server needs one of --target-qps Q"),
    (["--scenario", "server", "--target-qps", "5", "--find-max-qps"], "needs one of --target-qps Q"),
    (["--scenario", "offline", "--target-qps", "5"], "--target-qps apply to --scenario server only"),
    (["--target-qps", "5"], "--target-qps apply to --scenario runs"),
    (["--scenario", "server", "--samples-per-query", "4", "--target-qps", "5"],
     "--samples-per-query applies to --scenario multi-stream only"),
    (["--scenario", "offline", "--concurrency", "1,2"], "--concurrency is a mode of its own"),
    (["--scenario", "offline", "--iterations", "5"], "--iterations apply to closed-loop timing"),
    (["--concurrency", "1,0"], "--concurrency '1,0' must be positive integers"),
    (["--concurrency", "1", "--official"], "--official applies to LoadGen scenarios"),
    (["--scenario", "offline", "--streams", "2"], "--streams applies to tensorrt engines only"),
])
def test_options_that_do_not_fit_are_one_line_errors(run_cli, digits_engine, args, message):
    result = run_cli("bench", digits_engine.artifact, *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_without_loadgen_a_scenario_is_one_line_naming_the_package_and_concurrency_still_runs(
        run_cli, digits_engine, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlperf_loadgen", None)
    result = run_cli("bench", digits_engine.artifact, "--scenario", "offline")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "mlcommons-loadgen is not installed" in result.output and "pip install" in result.output
    assert run_cli("bench", digits_engine.artifact, "--concurrency", "1", "--duration", "0.1").exit_code == 0


def test_loadgen_comes_as_a_wheel_where_pypi_has_one_and_is_skipped_elsewhere():
    """pip install -e . must not need a compiler: the dependency's marker admits only platforms with a wheel."""
    from importlib.metadata import distribution

    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    req = next(Requirement(r) for r in project["dependencies"] if r.startswith("mlcommons-loadgen"))
    assert str(req.specifier) == "==6.0.*"
    assert project["optional-dependencies"]["loadgen"] == ["mlcommons-loadgen==6.0.*"]  # compiles it on purpose
    with_wheels = [("3.10", "linux", "x86_64"), ("3.13", "linux", "x86_64"), ("3.11", "darwin", "arm64"),
                   ("3.12", "win32", "AMD64")]
    without = [("3.12", "linux", "aarch64"), ("3.14", "linux", "x86_64"), ("3.11", "darwin", "x86_64")]
    for cases, expected in ((with_wheels, True), (without, False)):
        for version, system, machine in cases:
            env = {"python_version": version, "sys_platform": system, "platform_machine": machine}
            assert req.marker.evaluate(env) is expected, env
    if req.marker.evaluate():  # here: installed from PyPI's manylinux wheel, not built from source
        assert "manylinux" in distribution("mlcommons-loadgen").read_text("WHEEL")
