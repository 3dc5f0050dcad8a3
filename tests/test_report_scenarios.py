"""Scenario cells in reports and in the regression gate: max-QPS sentences, curves with the knee, and
`report compare` judging a rate and a p99 as it judges closed-loop latency."""

import numpy as np
import pandas as pd
import pytest

from harness.measure.samples import write_samples
from harness.report.compare import compare
from harness.report.merge import results_frame
from harness.report.sections import build_sections
from harness.report.serving import figures, sentences

CELL = {"model": "m", "dataset": "digits", "backend": "tensorrt", "batch": 8, "status": "ok", "top1_pct": 99.0,
        "tool": None, "mode": None, "calibrator": None}
INT8 = {"precision": "int8", "tool": "pq", "mode": "selective", "calibrator": "entropy"}


def row(cid, scenario, precision="fp16", **values):
    return {**CELL, "cell_id": cid, "baseline_id": cid, "experiment": "e", "precision": precision,
            "scenario": scenario, **values}


def server(cid, max_qps, precision="fp16", invalid_at=None, **extra):
    return row(cid, "server", precision, max_qps=max_qps, max_qps_invalid_at=invalid_at, max_qps_runs=6,
               latency_bound_ms=10.0, latency_p99_ms=8.0, latency_p50_ms=2.0, target_qps=max_qps, valid=True,
               **extra)


def test_the_report_says_how_many_times_the_qps_of_fp16_each_variant_serves(tmp_path):
    curve = tmp_path / "curve.csv"
    pd.DataFrame({"concurrency": [1, 2, 4, 8], "throughput_ips": [100, 190, 260, 265],
                  "latency_p50_ms": [1, 1.1, 1.6, 3.1], "latency_p99_ms": [2, 2.2, 3, 6],
                  "knee": [False, False, True, False]}).to_csv(curve, index=False)
    df = results_frame([
        server("a", 1000.0), server("b", 2100.0, **INT8, energy_j_per_inference=0.012, avg_power_w=250.0),
        server("c", 700.0, "fp32"),
        row("d", "concurrency", curve_file=str(curve), knee_concurrency=4, throughput_ips=260.0,
            latency_p99_ms=3.0, concurrency_levels="1,2,4,8", peak_throughput_ips=265.0),
        row("e", "closed-loop", latency_p50_ms=1.0, latency_p50_ci_lo_ms=0.99, latency_p50_ci_hi_ms=1.01,
            stable=True)])
    said = sentences(df)
    assert ("m on digits, tensorrt, batches up to 8: int8 selective/entropy serves the most, 2100 QPS under "
            "p99 <= 10 ms; it serves 2.10x the QPS of FP16 (1000); it serves 3.00x the QPS of FP32 (700), 12 mJ "
            "per inference at 250 W.") in said
    assert any("fp16 reaches its knee at concurrency 4, 260 samples/s at p99 3 ms" in s for s in said)
    headline, sections = build_sections(df)
    assert set(said) <= set(headline)
    served = next(s for s in sections if s.title.startswith("Serving"))
    assert list(served.table.text["scenario"]).count("server") == 3
    results = next(s for s in sections if s.title == "Results")
    assert list(results.table.text["scenario"]) == ["closed-loop"]  # scenario cells are not ranked on p50
    figs = figures(df)
    assert figs["max-qps"]["data"][0]["x"] == [700.0, 1000.0, 2100.0]
    knee = figs["curves-0"]["data"][-1]
    assert knee["name"] == "knee" and knee["x"] == [260] and knee["y"] == [3]
    assert figs["curves-0"]["data"][0]["text"] == ["1", "2", "4", "8"]


def test_old_tables_without_a_scenario_column_read_as_closed_loop():
    df = results_frame([{**CELL, "cell_id": "x", "precision": "fp32", "latency_p50_ms": 1.0}])
    assert list(df["scenario"]) == ["closed-loop"] and df["speedup_vs_fp32"].iloc[0] == 1.0


def verdict(base, cur, **options):
    table = compare(results_frame(base), results_frame(cur), 5.0, 1.0, **options).table
    return dict(zip(table["scenario"], table["verdict"], strict=True)), table


def test_a_lower_max_qps_fails_only_beyond_the_searches_resolution():
    base = [server("s", 1000.0, invalid_at=1050.0)]
    ok, _ = verdict(base, [server("s", 980.0, invalid_at=1030.0)])
    assert ok == {"server": "ok"}  # 2 % lower: within the allowed 5 %
    bracketed, _ = verdict(base, [server("s", 900.0, invalid_at=1010.0)])
    assert bracketed == {"server": "ok"}  # 10 % lower, but INVALID only above what the baseline served
    lost, table = verdict(base, [server("s", 900.0, invalid_at=950.0)])
    assert lost == {"server": "REGRESSION: max-qps"} and table["qps_change_pct"].iloc[0] == pytest.approx(-10.0)
    assert verdict(base, [server("s", 900.0, invalid_at=950.0)], max_qps_drop_pct=15.0)[0] == {"server": "ok"}
    none, _ = verdict(base, [server("s", None, invalid_at=125.0)])
    assert none == {"server": "REGRESSION: max-qps (no VALID rate now)"}


def test_p99_at_the_same_load_is_tested_on_the_kept_latencies(tmp_path):
    rng = np.random.default_rng(0)
    fast = rng.gamma(4.0, 0.5, 3000)

    def fixed(cid, folder, latencies, valid=True):
        path = tmp_path / folder / write_samples(tmp_path / folder, cid, [latencies])
        return row(cid, "single-stream", samples_file=str(path), latency_p99_ms=float(np.percentile(latencies, 99)),
                   latency_p50_ms=float(np.median(latencies)))

    base = [fixed("q", "a", fast)]
    assert verdict(base, [fixed("q", "b", rng.gamma(4.0, 0.5, 3000))])[0] == {"single-stream": "ok"}
    slow_tail = np.concatenate([rng.gamma(4.0, 0.5, 2900), rng.gamma(4.0, 2.0, 100)])
    found, table = verdict(base, [fixed("q", "c", slow_tail)])
    assert found == {"single-stream": "REGRESSION: p99"} and table["p99_ratio_ci_lo"].iloc[0] > 1.0
    rate = {"target_qps": 200.0, "latency_bound_ms": 10.0, "latency_p99_ms": 8.0}
    invalid, _ = verdict([row("v", "server", **rate, valid=True)],
                         [row("v", "server", **{**rate, "latency_p99_ms": 8.2}, valid=False)])
    assert invalid == {"server": "REGRESSION: now INVALID"}


def test_report_compare_prints_a_scenario_cells_figures(run_cli, tmp_path):
    for side, max_qps, invalid_at in (("base", 1000.0, 1050.0), ("cur", 800.0, 850.0)):
        results_frame([server("s", max_qps, invalid_at=invalid_at),
                       row("o", "offline", throughput_ips=5000.0)]).to_csv(tmp_path / f"{side}.csv", index=False)
    result = run_cli("report", "compare", tmp_path / "base.csv", tmp_path / "cur.csv")
    assert result.exit_code == 1
    assert "REGRESSION: max-qps: m digits tensorrt fp16 b8 server: max qps -20.0 %" in result.output
    flagged = [line for line in result.output.splitlines() if line.startswith("REGRESSION")]
    assert len(flagged) == 1 and "1 regression(s) of 2 baseline cells" in result.output  # offline: same throughput
