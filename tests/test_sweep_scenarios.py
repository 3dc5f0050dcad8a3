"""The `scenarios:` axis of experiment files: cells measured by LoadGen scenarios and concurrency sweeps, stored
beside the closed-loop ones with a `scenario` column, and reported with their sentences and curves."""

import json
from pathlib import Path

import pandas as pd
import pytest

from harness.build import sha256_json
from harness.errors import HarnessError
from harness.sweep.experiment import LATER_TIMING_KEYS, load_experiment
from harness.sweep.matrix import cell_id, expand, quant_config


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


BASE = "models: [digits-resnet]\nprecisions: [fp32, fp16]\nbatch_sizes: [1, 8]\n"


def test_closed_loop_stays_the_default_and_keeps_the_ids_stored_before_scenarios(tmp_path):
    exp = load_experiment(write(tmp_path, BASE))
    assert exp.scenarios == ["closed-loop"] and {c.scenario for c in expand(exp)} == {"closed-loop"}
    for cell in expand(exp):  # the hash as it was computed before cells had a scenario
        settings = {k: v for k, v in cell.settings().items() if k != "scenario"}
        quant = quant_config(exp, cell)
        timing = {k: v for k, v in exp.timing.items() if k not in LATER_TIMING_KEYS}  # at their defaults here
        old = sha256_json({"cell": settings, "model": exp.specs[cell.model].to_dict(),
                           "quant": quant.to_dict() if quant else None, "timing": timing,
                           "evaluation": exp.evaluation, "build": exp.build})[:16]
        assert cell_id(exp, cell) == old


def test_a_scenario_cells_id_follows_its_own_settings_only(tmp_path):
    text = BASE + "scenarios: [closed-loop, single-stream, server]\n"
    exp = load_experiment(write(tmp_path, text))
    cells = expand(exp)
    assert len(cells) == 12 and [c.scenario for c in cells[:3]] == ["closed-loop", "single-stream", "server"]
    assert exp.scenario["find_max_qps"] is True  # no target rate: the server cells search for the highest
    ids = {c: cell_id(exp, c) for c in cells}
    bound = load_experiment(write(tmp_path, text + "scenario: {latency_bound_ms: 20}\n"))
    changed = {c.scenario for c in cells if cell_id(bound, c) != ids[c]}
    assert changed == {"server"}
    assert "digits-resnet digits cpu fp32 b1 server" in [c.label() for c in cells]


def test_the_bundled_serving_experiment_asks_the_deployment_questions():
    exp = load_experiment(Path(__file__).resolve().parents[1] / "experiments" / "serving.yaml")
    cells = expand(exp)
    assert {(c.precision, c.scenario) for c in cells} == {(p, s) for p in ("fp32", "fp16", "int8")
                                                          for s in ("server", "concurrency")}
    assert exp.scenario["find_max_qps"] and exp.scenario["latency_bound_ms"] == 10


@pytest.mark.parametrize("text, needle", [
    (BASE + "scenarios: [serverless]\n", "scenarios[0]: 'serverless' is not allowed; use one of closed-loop, "
                                         "single-stream, multi-stream, server, offline, concurrency"),
    (BASE + "scenarios: [server]\nscenario: {find_max_qps: false}\n",
     "scenario.find_max_qps: false needs scenario.target_qps"),
    (BASE + "scenario: {concurrency: [1, 0]}\n", "scenario.concurrency[1]: 0 must be a positive integer"),
    (BASE + "scenario: {target_qps: 0}\n", "scenario.target_qps: 0 must be a positive rate"),
    (BASE + "scenario: {latency_bound: 10}\n", "scenario.latency_bound: unknown key"),
    (BASE + "exclude: [{scenario: offlin}]\n", "exclude[0].scenario: 'offlin' is not allowed"),
])
def test_bad_scenario_settings_are_one_line_errors_naming_the_key(tmp_path, text, needle):
    with pytest.raises(HarnessError) as err:
        load_experiment(write(tmp_path, text))
    assert needle in err.value.message, err.value.message


SWEEP = """
name: served
models: [digits-resnet]
precisions: [fp32]
batch_sizes: [8]
scenarios: [single-stream, server, concurrency]
scenario: {duration_s: 0.3, target_qps: 100, latency_bound_ms: 50, concurrency: [1, 2]}
timing: {warmup_s: 0.01, iterations: 3, duration_s: 0.05, repeats: 3, max_s: 0.5}
evaluation: {limit: 64}
"""


def test_a_sweep_stores_each_scenario_with_its_files_and_reports_it(run_cli, tmp_path, engines_dir):
    path = write(tmp_path, SWEEP)
    result = run_cli("sweep", path, "--engines-dir", engines_dir)
    assert result.exit_code == 0, result.output
    root = Path("reports/served")
    table = pd.read_csv(root / "results.csv")
    assert list(table["scenario"]) == ["single-stream", "server", "concurrency"]  # the matrix order
    rows = table.set_index("scenario")
    assert rows.loc["server", "target_qps"] == 100 and rows.loc["server", "valid"] in (True, False)
    assert rows.loc["single-stream", "early_stopping_p90_ms"] > 0 and rows.loc["single-stream", "qps"] > 0
    assert rows.loc["concurrency", "concurrency_levels"] == "1,2" and rows.loc["concurrency", "peak_throughput_ips"] > 0
    assert table["top1_pct"].notna().all() and table["speedup_vs_fp32"].isna().all()
    assert table["energy_note"].str.contains("no CPU energy counter").all()
    for scenario in ("server", "single-stream"):
        cid = rows.loc[scenario, "cell_id"]
        assert (root / "loadgen" / cid / scenario / "mlperf_log_summary.txt").is_file()
        assert (root / "samples" / f"{cid}.parquet").is_file()
    curve = pd.read_csv(root / "curves" / f"{rows.loc['concurrency', 'cell_id']}.csv")
    assert list(curve["concurrency"]) == [1, 2] and (curve["throughput_ips"] > 0).all()
    html = (root / "report.html").read_text()
    assert 'id="plot-curves-0"' in html and "latency against throughput" in html
    markdown = (root / "report.md").read_text()
    assert "## Serving: LoadGen scenarios and concurrency" in markdown
    assert "fp32 at 100 QPS is " in markdown and ("reaches its knee" in markdown or "no knee" in markdown)
    stored = json.loads(next((root / "cells").glob(f"{rows.loc['server', 'cell_id']}.json")).read_text())
    assert stored["scenario"] == "server" and stored["loadgen_logs"] == f"loadgen/{stored['cell_id']}"
    again = run_cli("sweep", path, "--engines-dir", engines_dir)
    assert again.exit_code == 0 and "all 3 cells finished" in again.output


def test_without_loadgen_its_cells_are_rows_naming_the_package_and_the_rest_run(run_cli, tmp_path, engines_dir,
                                                                               monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mlperf_loadgen", None)
    text = SWEEP.replace("name: served", "name: bare").replace("[single-stream, server, concurrency]",
                                                               "[offline, concurrency]")
    result = run_cli("sweep", write(tmp_path, text), "--engines-dir", engines_dir)
    assert result.exit_code == 0, result.output  # what the machine lacks is named apart, not a failure
    rows = pd.read_csv("reports/bare/results.csv").set_index("scenario")
    assert rows.loc["offline", "status"] == "failed" and rows.loc["offline", "missing_extra"] == "loadgen"
    assert "mlcommons-loadgen is not installed" in rows.loc["offline", "error"]
    assert rows.loc["concurrency", "status"] == "ok"
