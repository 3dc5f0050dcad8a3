"""harness report: shards merge into the unsharded table; the report is self-contained and shows what exists."""

from pathlib import Path

import pandas as pd

from harness.report.charts import figures
from harness.report.merge import SETTINGS, load_results
from harness.report.sections import build_sections

SAME = ["cell_id", "baseline_id", "status", *SETTINGS, "top1_pct", "top1_agreement_pct", "error", "failed_stage"]


def test_two_shards_merged_equal_one_unsharded_run(run_cli, tiny_experiment, engines_dir):
    path = tiny_experiment()
    for k in (1, 2):
        result = run_cli("sweep", path, "--shard", f"{k}/2", "--reports-dir", f"shard{k}",
                         "--engines-dir", engines_dir)
        assert f"(shard {k}/2: 2 of 4)" in result.output
    run_cli("sweep", path, "--reports-dir", "full", "--engines-dir", engines_dir)
    merged = run_cli("report", "shard1/tiny", "shard2/tiny", "-o", "merged")
    assert merged.exit_code == 0 and "merged 4 cells (2 ok, 2 failed) from 2 source(s)" in merged.output
    a, b = load_results([Path("merged")]), load_results([Path("full/tiny")])
    shard_ids = [set(pd.read_csv(f"shard{k}/tiny/shard-{k}-of-2/results.csv")["cell_id"]) for k in (1, 2)]
    assert not shard_ids[0] & shard_ids[1] and shard_ids[0] | shard_ids[1] == set(b["cell_id"])
    pd.testing.assert_frame_equal(a[SAME], b[SAME])
    assert pd.read_csv("merged/results.csv")["cell_id"].tolist() == b["cell_id"].tolist()
    assert list(a.columns) == list(b.columns)
    assert a["speedup_vs_baseline"].notna().sum() == b["speedup_vs_baseline"].notna().sum() == 2
    for name in ("report.md", "report.html", "results.parquet"):
        assert Path("merged", name).is_file(), name


def test_merging_a_resumed_cell_keeps_its_latest_row(run_cli, tiny_experiment, engines_dir):
    run_cli("sweep", tiny_experiment(), "--reports-dir", "a", "--engines-dir", engines_dir)
    run_cli("sweep", tiny_experiment(), "--reports-dir", "b", "--engines-dir", engines_dir)
    df = load_results([Path("a/tiny"), Path("b/tiny")])
    newest = pd.read_csv("b/tiny/results.csv").set_index("cell_id")["finished_utc"]
    assert len(df) == 4 and (df.set_index("cell_id")["finished_utc"] == newest[df["cell_id"]]).all()


def _rows(layer_table=None):
    base = {"experiment": "x", "status": "ok", "model": "m", "dataset": "digits", "backend": "tensorrt",
            "mode": None, "calibrator": None, "batch": 1, "top1_pct": 99.0}
    rows = [{**base, "cell_id": "a", "baseline_id": "a", "precision": "fp32", "latency_p50_ms": 2.0},
            {**base, "cell_id": "b", "baseline_id": "a", "precision": "fp16", "latency_p50_ms": 1.0},
            {**base, "cell_id": "c", "baseline_id": "a", "precision": "int8", "mode": "selective",
             "calibrator": "entropy", "latency_p50_ms": 0.5, "top1_pct": 98.5, "layer_table": layer_table}]
    return pd.DataFrame(rows)


def test_speedups_pareto_and_layer_section_only_when_an_engine_was_inspected(tmp_path):
    from harness.report.merge import results_frame

    plain = results_frame(_rows().to_dict("records"))
    assert plain.set_index("cell_id")["speedup_vs_fp32"].to_dict() == {"a": 1.0, "b": 2.0, "c": 4.0}
    assert plain.set_index("cell_id")["speedup_vs_fp16"]["c"] == 2.0
    assert plain.set_index("cell_id")["top1_delta_pp"]["c"] == -0.5
    assert set(figures(plain)) == {"accuracy-0", "speedup"}  # no SQNR given: no fidelity plot
    pareto = next(s for s in build_sections(plain)[1] if s.title == "Pareto front").table.text
    assert list(pareto["precision"]) == ["int8", "fp16"]  # fp32 is slower than fp16 at the same top-1

    layers = tmp_path / "layers.csv"
    pd.DataFrame({"name": ["conv1", "conv2", "fc"], "input_precision": ["INT8", "INT8", "FP16/FP32"]}).to_csv(layers)
    inspected = results_frame(_rows(str(layers)).to_dict("records"))
    bars = figures(inspected)["layer_precision"]["data"]
    assert {t["name"]: t["x"] for t in bars} == {"INT8": [2.0], "FP16": [1.0]}


def test_report_errors_are_one_line(run_cli, tmp_path):
    result = run_cli("report", tmp_path / "nothing", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "no such file or folder" in result.output
