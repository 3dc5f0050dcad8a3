"""harness report compare: a CI gate that flags real regressions and lets noise pass. Fed generated per-query
latencies (seeded), never live timings, so the load of the machine running the tests cannot flip a verdict."""

import numpy as np
import pandas as pd
import pytest

from harness.measure.samples import write_samples
from harness.report.compare import compare
from harness.report.merge import load_results, results_frame
from harness.sweep.store import ResultStore

BATCHES = (1, 32)


def latencies(rng, n=300, scale=1.0):
    """What a CPU cell's queries look like: a log-normal body and an exponential tail of interruptions."""
    return scale * (rng.lognormal(0.0, 0.08, n) + rng.exponential(0.05, n))


def write_run(root, samples_per_batch: dict, status=None, top1=99.0):
    """A sweep folder whose cells kept the given samples; `status` maps batch -> 'failed'."""
    store = ResultStore(root)
    for batch, samples in samples_per_batch.items():
        cid = f"cell{batch}"
        row = {"cell_id": cid, "baseline_id": cid, "experiment": "t", "status": (status or {}).get(batch, "ok"),
               "model": "m", "dataset": "digits", "backend": "cpu", "precision": "fp32", "mode": None,
               "calibrator": None, "batch": batch,
               "top1_pct": top1, "latency_p50_ms": float(np.median(samples)),
               "samples_file": write_samples(root, cid, [samples[: len(samples) // 2], samples[len(samples) // 2:]])}
        store.write(row)
    return root


def test_injected_20_percent_regression_is_flagged_in_20_of_20_seeded_trials_and_reruns_pass(tmp_path):
    flagged = passed = covered = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        base = load_results([write_run(tmp_path / f"base{seed}", {b: latencies(rng, scale=b) for b in BATCHES})])
        same = load_results([write_run(tmp_path / f"same{seed}", {b: latencies(rng, scale=b) for b in BATCHES})])
        slow = load_results([write_run(tmp_path / f"slow{seed}",
                                       {b: latencies(rng, scale=1.2 * b) for b in BATCHES})])
        rerun, regressed = compare(base, same, 5.0, 0.2), compare(base, slow, 5.0, 0.2)
        passed += rerun.regressions == 0
        flagged += regressed.table["verdict"].tolist() == ["REGRESSION: latency"] * 2
        t = regressed.table
        assert (t["p_value"] < 1e-6).all() and (t["ratio_ci_lo"] > 1.1).all()
        covered += int(((t["ratio_ci_lo"] <= 1.2) & (1.2 <= t["ratio_ci_hi"])).sum())
    assert (flagged, passed) == (20, 20)
    assert covered >= 34  # of 40 intervals; a 95 % interval holds the true 1.2x about 38 times


def test_a_significant_slowdown_below_the_threshold_passes(tmp_path):
    rng = np.random.default_rng(7)
    base = load_results([write_run(tmp_path / "a", {1: latencies(rng, 2000)})])
    cur = load_results([write_run(tmp_path / "b", {1: latencies(rng, 2000, scale=1.03)})])
    table = compare(base, cur, 5.0, 0.2).table
    assert table["p_value"][0] < 0.05 and table["verdict"].tolist() == ["ok"]  # real, but 3 % < 5 % allowed
    assert compare(base, cur, 2.0, 0.2).table["verdict"].tolist() == ["REGRESSION: latency"]


def test_cli_fails_on_lost_and_newly_failing_cells_and_lists_new_ones(run_cli, tmp_path):
    rng = np.random.default_rng(0)
    write_run(tmp_path / "base", {1: latencies(rng), 8: latencies(rng), 32: latencies(rng)})
    write_run(tmp_path / "cur", {1: latencies(rng, scale=1.3), 8: latencies(rng), 64: latencies(rng)},
              status={8: "failed"})
    result = run_cli("report", "compare", tmp_path / "base", tmp_path / "cur", "--output", "cmp.csv")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    slow = next(line for line in lines if line.startswith("REGRESSION: latency: m digits cpu fp32 b1"))
    assert "p50 1.3" in slow and "[95 % " in slow and "p = " in slow  # ratio, its interval, the p-value
    assert "REGRESSION: now fails: m digits cpu fp32 b8" in lines
    assert "REGRESSION: missing in current: m digits cpu fp32 b32" in lines
    assert any(line.startswith("new: m digits cpu fp32 b64") for line in lines)
    assert "3 regression(s) of 3 baseline cells" in result.output
    table = pd.read_csv("cmp.csv")
    assert len(table) == 4 and table["p_value"].notna().sum() == 1
    assert run_cli("report", "compare", tmp_path / "base", tmp_path / "base").exit_code == 0


def frame(p50=1.0, ci_pct=2.0, top1=99.0, status="ok"):
    """A row without kept samples (a table from before they were kept): its 95 % interval is all there is."""
    row = {"cell_id": "a", "baseline_id": "a", "status": status, "model": "m", "dataset": "digits",
           "backend": "cpu", "precision": "fp32", "mode": None, "calibrator": None, "batch": 1,
           "latency_p50_ms": p50, "top1_pct": top1}
    if p50 is not None:
        row.update(latency_p50_ci_lo_ms=p50 * (1 - ci_pct / 100), latency_p50_ci_hi_ms=p50 * (1 + ci_pct / 100))
    return results_frame([row])


@pytest.mark.parametrize(
    "current, verdict",
    [
        (frame(p50=1.2), "REGRESSION: latency"),  # 20 % slower, intervals of ±2 % apart
        (frame(p50=1.04), "ok"),  # inside the allowed 5 %
        (frame(p50=1.15, ci_pct=15.0), "ok"),  # slower, but the intervals overlap: not significant
        (frame(top1=98.5), "REGRESSION: accuracy"),
        (frame(top1=98.9), "ok"),  # 0.1 pp drop is allowed at 0.2
        (frame(p50=None, status="failed"), "REGRESSION: now fails"),
        (frame(p50=0.5), "ok"),  # faster is never a regression
    ],
)
def test_verdicts_of_rows_without_samples(current, verdict):
    result = compare(frame(), current, max_latency_pct=5.0, max_drop_pp=0.2)
    assert result.table["verdict"].tolist() == [verdict]
    assert result.regressions == int(verdict.startswith("REGRESSION"))


@pytest.mark.parametrize("option, value, message", [
    ("--max-latency-regression", "five", "'five' is not a number"),
    ("--max-latency-regression", "nan%", "'nan%' is not a finite number"),
    ("--max-latency-regression", "inf", "'inf' is not a finite number"),
    ("--max-latency-regression", "-5%", "'-5%' is outside 0 <= x < 1000 %"),
    ("--max-accuracy-drop", "nan", "'nan' is not a finite number"),
    ("--max-accuracy-drop", "150", "'150' is outside 0 <= x <= 100 %"),
])
def test_numeric_options_refuse_nan_infinity_and_out_of_range_values_before_any_work(run_cli, option, value,
                                                                                      message):
    result = run_cli("report", "compare", "nowhere-a", "nowhere-b", option, value)
    assert result.exit_code == 2 and f"Invalid value for '{option}': {message}" in result.output, result.output


def test_percent_option_takes_5_and_5_percent(run_cli, tmp_path):
    rng = np.random.default_rng(0)
    base = write_run(tmp_path / "base", {1: latencies(rng)})
    for value in ("5%", "5"):
        result = run_cli("report", "compare", base, base, "--max-latency-regression", value)
        assert result.exit_code == 0 and "no regression in 1 baseline cells" in result.output, result.output


def test_rows_from_before_the_tool_axis_match_pq_rows():
    """A baseline table written before `tool` existed still gates the pq cells of a current one."""
    row = {"cell_id": "b", "baseline_id": "b", "status": "ok", "model": "m", "dataset": "digits", "backend": "cpu",
           "precision": "int8", "mode": "selective", "calibrator": "max", "batch": 1, "latency_p50_ms": 1.0,
           "top1_pct": 99.0}
    old = results_frame([row])
    assert old["tool"].tolist() == ["pq"]
    result = compare(old, results_frame([{**row, "tool": "pq", "top1_pct": 98.0}]), 5.0, 0.2)
    assert result.table["verdict"].tolist() == ["REGRESSION: accuracy"]


@pytest.mark.parametrize("damage, message", [
    (lambda t: t.drop(columns=["latency_p50_ms"]), "no latency figures (latency_p50_ms) in its finished cells"),
    (lambda t: t.assign(latency_p50_ms=t["latency_p50_ms"].astype(object).where(t.index != 1, "fast")),
     "column latency_p50_ms holds 'fast' (row 2), not a number"),
])
def test_a_side_that_cannot_be_compared_is_one_line(run_cli, tmp_path, damage, message):
    rng = np.random.default_rng(0)
    base = write_run(tmp_path / "base", {1: latencies(rng), 2: latencies(rng)})
    damage(load_results([base])).to_csv(tmp_path / "bad.csv", index=False)
    result = run_cli("report", "compare", base, tmp_path / "bad.csv")
    assert result.exit_code == 2 and message in result.output and len(result.output.splitlines()) == 1, result.output
