"""A fixed number of requests in flight: one row per level, the latency-throughput curve and its knee."""

import json
import time
from pathlib import Path

import numpy as np
import pytest

from harness.backends.base import Runner
from harness.measure.concurrency import Level, mark_knee, run_levels
from harness.measure.deploy import COMMON

LIBRARY = np.zeros((16, 1, 2, 2), np.float32)


class Device(Runner):
    """Sleeps `per_call` ms per batch plus `per_sample` ms per sample: how a batch's cost grows decides whether more
    requests in flight pay."""

    def __init__(self, per_call: float, per_sample: float):
        self.per_call, self.per_sample = per_call, per_sample

    def infer(self, x):
        time.sleep((self.per_call + self.per_sample * len(x)) / 1e3)
        return np.zeros((len(x), 3), np.float32)

    def time(self, *args, **kwargs):
        raise NotImplementedError


def level(n, throughput):
    return Level(n, 100, 1.0, throughput, 1.0, 1.0, 1.0, 1.0, 1.0)


def test_the_knee_is_the_last_level_that_still_raised_throughput_by_a_tenth():
    levels = [level(1, 100), level(2, 180), level(4, 200), level(8, 205)]
    assert mark_knee(levels).concurrency == 4 and [lv.knee for lv in levels] == [False, False, True, False]
    rising = [level(1, 100), level(2, 200), level(4, 400)]
    assert mark_knee(rising) is None and not any(lv.knee for lv in rising)
    assert mark_knee([level(1, 100)]) is None


def test_requests_in_flight_pay_until_the_batches_are_full_and_cost_latency_after():
    """20 ms a batch whatever its size (the GPU-like case), two batches at once: with batches of at most 2 the
    device answers 4 requests per 20 ms, reached with 4 in flight; with batches of 8, throughput keeps rising.
    Other processes only ever slow a level down, so the curve's shape is shown by one of up to three sweeps."""

    def sweep(max_batch):
        return run_levels(Device(20.0, 0.0), LIBRARY, [1, 2, 4, 8], duration_s=0.4, max_batch=max_batch)

    def shaped(levels):
        one, _, four, eight = levels
        return (four.throughput_ips > 3 * one.throughput_ips and eight.throughput_ips < 1.1 * four.throughput_ips
                and [lv.concurrency for lv in levels if lv.knee] == [4])

    attempts = [sweep(2)]
    while not shaped(attempts[-1]) and len(attempts) < 3:
        attempts.append(sweep(2))
    capped = attempts[-1]
    assert shaped(capped), [[round(lv.throughput_ips) for lv in levels] for levels in attempts]
    assert [lv.concurrency for lv in capped] == [1, 2, 4, 8]
    assert capped[3].mean_batch == pytest.approx(2) and capped[0].mean_batch == 1.0  # full batches past the knee
    assert capped[3].latency_p50_ms > 1.5 * capped[2].latency_p50_ms  # beyond the knee: latency, not throughput
    batched = sweep(8)
    assert batched[3].throughput_ips > 2 * batched[1].throughput_ips and batched[3].mean_batch > 2


def test_bench_concurrency_writes_a_row_per_level_and_prints_the_curve(run_cli, digits_engine):
    result = run_cli("bench", digits_engine.artifact, "--concurrency", "4,1,2", "--duration", "0.3", "--json",
                     "c.json")
    assert result.exit_code == 0, result.output
    rows = json.loads(Path("c.json").read_text())
    assert [r["concurrency"] for r in rows] == [1, 2, 4] and all(set(COMMON) <= set(r) for r in rows)
    for r in rows:
        assert r["scenario"] == "concurrency" and r["valid"] is None and r["qps"] == r["throughput_ips"] > 0
        assert 0 < r["latency_p50_ms"] <= r["latency_p90_ms"] <= r["latency_p99_ms"] and r["requests"] > 0
        assert r["energy_j_per_inference"] is None and "energy not measured" in r["energy_note"]
    assert sum(r["knee"] for r in rows) <= 1
    table = result.output.splitlines()
    head = next(i for i, line in enumerate(table) if line.split()[:2] == ["concurrency", "samples/s"])
    assert [line.split()[0] for line in table[head + 1:head + 4]] == ["1", "2", "4"]
    assert "knee at concurrency" in result.output or "no knee" in result.output
