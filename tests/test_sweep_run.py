"""harness sweep: rows written as cells finish, failures kept as rows, resumable after kill -9, dry run."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from harness.report.merge import COLUMNS

ENV_COLUMNS = ["env_host", "env_cpu", "env_cpu_isa", "env_gpu", "env_driver", "env_cuda", "env_tensorrt", "env_torch",
               "env_onnxruntime", "env_harness", "env_git_commit"]


def row_files(root: Path) -> dict[str, tuple[float, str]]:
    return {p.stem: (p.stat().st_mtime_ns, p.read_text()) for p in (root / "cells").glob("*.json")}


def test_sweep_writes_rows_tables_and_report_and_records_failures(run_cli, tiny_experiment, engines_dir):
    result = run_cli("sweep", tiny_experiment(), "--engines-dir", engines_dir)
    assert result.exit_code == 1, result.output  # two cells failed: a CI step must see it
    assert "2 of 4 cell(s) failed" in result.output
    root = Path("reports/tiny")
    table = pd.read_parquet(root / "results.parquet")
    assert pd.read_csv(root / "results.csv")["cell_id"].tolist() == table["cell_id"].tolist()
    assert list(table.columns[: len(COLUMNS)]) == COLUMNS and set(ENV_COLUMNS) <= set(table.columns)
    ok, failed = table[table["status"] == "ok"], table[table["status"] == "failed"]
    assert sorted(ok["batch"]) == [1, 2] and set(ok["model"]) == {"digits-resnet"}
    for col in ("latency_min_ms", "latency_p50_ms", "latency_p99_ms", "throughput_ips", "engine_size_mb"):
        assert (ok[col] > 0).all(), col
    assert (ok["latency_min_ms"] <= ok["latency_p50_ms"]).all() and (ok["latency_p50_ms"] <= ok["latency_p99_ms"]).all()
    assert (ok["top1_pct"] > 90).all() and (ok["top1_agreement_pct"] == 100).all()
    assert (ok["top1_delta_pp"] == 0).all() and (ok["speedup_vs_baseline"] == 1).all()  # fp32 is its own baseline
    assert (ok["repeats"] >= 3).all() and ok["stable"].isin([True, False]).all()
    assert (ok["latency_p50_ci_lo_ms"] <= ok["latency_p50_ms"]).all()
    assert (ok["latency_p50_ms"] <= ok["latency_p50_ci_hi_ms"]).all()
    for _, r in ok.iterrows():  # every query's latency is kept for `report compare`
        samples = pd.read_parquet(root / r["samples_file"])
        assert len(samples) == r["latency_samples"] and samples["repeat"].nunique() == r["repeats"]
    assert len(failed) == 2 and set(failed["model"]) == {"brokenmodel:build"}
    assert failed["error"].str.contains("boom: this model cannot be built").all()
    assert (failed["failed_stage"] == "calibrate+export").all()
    html = (root / "report.html").read_text()
    assert 'id="plot-sqnr-0"' in html and "Plotly.newPlot" in html and "Failed cells" in html
    assert "<script src" not in html and "<link" not in html  # one file that works offline: nothing fetched
    assert "boom" in (root / "report.md").read_text()

    before = row_files(root)
    again = run_cli("sweep", tiny_experiment(), "--engines-dir", engines_dir)
    assert "all 4 cells finished; reports/tiny/report.html is up to date" in again.output
    assert again.exit_code == 1  # the stored failures still stand
    lenient = run_cli("sweep", tiny_experiment(), "--engines-dir", engines_dir, "--no-fail-on-error")
    assert lenient.exit_code == 0 and "2 of 4 cell(s) failed" in lenient.output
    assert row_files(root) == before
    retry = run_cli("sweep", tiny_experiment(), "--engines-dir", engines_dir, "--retry-failed")
    assert "ran 2 cells (2 failed), skipped 2 finished" in retry.output
    ok_ids = set(ok["cell_id"])
    assert {k: v for k, v in row_files(root).items() if k in ok_ids} == {k: before[k] for k in ok_ids}


def test_kill_9_mid_sweep_then_rerun_finishes_the_rest_without_redoing_cells(tiny_experiment, engines_dir):
    """A real interruption: SIGKILL as soon as the first cell's row lands, then the same command again."""
    path = tiny_experiment(duration=0.2)
    cmd = [sys.executable, "-c", "from harness.cli import main; main()", "sweep", str(path),
           "--engines-dir", str(engines_dir)]
    cells = Path("reports/tiny/cells")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(cells.glob("*.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = row_files(Path("reports/tiny"))
    assert 1 <= len(first) < 4, "the sweep was not interrupted half-way"
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 1, rerun.stderr  # the tiny experiment's broken model fails two cells
    assert f"skipped {len(first)} finished cell(s)" in rerun.stderr
    after = row_files(Path("reports/tiny"))
    assert len(after) == 4 and all(after[k] == v for k, v in first.items())
    table = pd.read_csv("reports/tiny/results.csv")
    assert sorted(table["cell_id"]) == sorted(after) and not any(Path("reports/tiny/cells").glob("*.tmp"))


def plan_lines(run_cli, path, engines) -> dict[str, list[str]]:
    out = run_cli("sweep", path, "--engines-dir", engines, "--dry-run").output
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
            if " b1 " in line or " b2 " in line]
    return {row[1]: row[2:] for row in rows}


def test_dry_run_lists_cells_and_the_caches_they_would_hit(run_cli, tiny_experiment, tmp_path):
    path, engines = tiny_experiment(), tmp_path / "fresh-engines"
    good_b1, good_b2 = "digits-resnet digits cpu fp32 b1", "digits-resnet digits cpu fp32 b2"
    cold = plan_lines(run_cli, path, engines)
    assert len(cold) == 4 and not Path("reports/tiny/cells").exists()  # nothing ran
    assert cold[good_b1] == ["to run", "miss", "miss"] and cold[good_b2] == ["to run", "shared", "miss"]
    run_cli("sweep", path, "--engines-dir", engines)
    b2_row = next(p for p in Path("reports/tiny/cells").glob("*.json") if json.loads(p.read_text())["batch"] == 2
                  and json.loads(p.read_text())["status"] == "ok")
    b2_row.unlink()
    warm = plan_lines(run_cli, path, engines)
    assert warm[good_b1] == ["done", "hit", "hit"] and warm[good_b2] == ["to run", "hit", "hit"]
    assert warm["brokenmodel:build digits cpu fp32 b1"][0] == "failed"
    assert "1 of 4 cells to run: 0 calibrate+export(s), 0 engine build(s)" in run_cli(
        "sweep", path, "--engines-dir", engines, "--dry-run").output


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_tensorrt_cells_fail_with_the_install_line_not_fake_results(run_cli, tmp_path, engines_dir):
    path = tmp_path / "trt.yaml"
    path.write_text("name: trt\nmodels: [digits-resnet]\nprecisions: [fp32]\nbackends: [tensorrt]\n")
    result = run_cli("sweep", path, "--engines-dir", engines_dir)
    assert result.exit_code == 0, result.output  # not installed here is not a failure of the cell
    assert "1 cell(s) need what this machine lacks (pip install -e '.[gpu]')" in result.output
    rows = [json.loads(p.read_text()) for p in Path("reports/trt/cells").glob("*.json")]
    assert len(rows) == 1 and rows[0]["status"] == "failed" and rows[0]["failed_stage"] == "backend"
    assert rows[0]["missing_extra"] == "gpu"
    assert "tensorrt is not installed" in rows[0]["error"] and "pip install -e '.[gpu]'" in rows[0]["error"]
    assert rows[0].get("latency_p50_ms") is None


def test_unknown_experiment_key_is_a_one_line_error(run_cli, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("models: [digits-resnet]\nprecisions: [fp32]\nbatch: 4\n")
    result = run_cli("sweep", path)
    assert result.exit_code == 2 and "bad.yaml: batch: unknown key" in result.output


def test_tensorrt_sweep_stores_the_engine_layer_table_and_reports_it(run_cli, fake_gpu, tmp_path):
    """With the test doubles of tensorrt/pycuda (tests/fakes), the generic backend path reaches the inspector."""
    fake_gpu("10.9.0")
    path = tmp_path / "trt.yaml"
    path.write_text("name: trt\nmodels: [digits-resnet]\nprecisions: [fp32]\nbackends: [tensorrt]\n"
                    "timing: {warmup_s: 0.01, iterations: 3, duration_s: 0.01, repeats: 2}\nevaluation: {limit: 32}\n")
    assert run_cli("sweep", path, "--engines-dir", tmp_path / "engines").exit_code == 0
    (row,) = [json.loads(p.read_text()) for p in Path("reports/trt/cells").glob("*.json")]
    assert row["status"] == "ok" and row["engine"].endswith(".engine")
    layers = pd.read_csv(Path("reports/trt") / row["layer_table"])
    assert len(layers) == row["layers_total"] > 0 and {"name", "input_precision"} <= set(layers.columns)
    assert 'id="plot-layer_precision"' in Path("reports/trt/report.html").read_text()


def test_interleaved_timing_alternates_the_cells_of_a_batch_and_still_fails_a_broken_one(run_cli, tiny_experiment,
                                                                                        engines_dir, monkeypatch):
    """timing.interleave: the fp32 and fp16 cells of batch 1 take turns, repeat by repeat; a cell whose artifact
    cannot be made is still a failed row with its stage."""
    from harness.backends import cpu

    order = []
    real = cpu.CpuRunner.time

    def logged(self, x, *args, **kwargs):
        order.append(id(self))
        return real(self, x, *args, **kwargs)

    monkeypatch.setattr(cpu.CpuRunner, "time", logged)
    sessions = []
    opened = cpu.CpuRunner.__init__
    monkeypatch.setattr(cpu.CpuRunner, "__init__",
                        lambda self, path, *a: sessions.append(path) or opened(self, path, *a))
    path = tiny_experiment(duration=0.02)
    text = path.read_text().replace("precisions: [fp32]", "precisions: [fp32, fp16]")
    text = text.replace("batch_sizes: [1, 2]", "batch_sizes: [1]")
    path.write_text(text.replace("max_s: 0.5", "max_s: 0.5, interleave: true"))
    result = run_cli("sweep", path, "--engines-dir", engines_dir)
    assert result.exit_code == 1 and "timing 2 cells of digits-resnet on cpu, batch 1, interleaved" in result.output
    first, second = order[:2]
    assert first != second and order[:6] == [first, second] * 3  # round-robin, one repeat of each in turn
    table = pd.read_csv("reports/tiny/results.csv")
    ok = table[table["status"] == "ok"]
    assert sorted(ok["precision"]) == ["fp16", "fp32"] and (ok["repeats"] >= 3).all()
    assert (table[table["status"] == "failed"]["failed_stage"] == "calibrate+export").all()
    # One ONNX Runtime session per artifact: the build check's serves the timing and the evaluation.
    assert len(sessions) == 2, sessions


def test_cpu_cells_record_their_threads_and_progress_starts_with_the_first_export(run_cli, tiny_experiment,
                                                                                  tmp_path):
    engines_dir = tmp_path / "cold-engines"  # cold, so the export runs and is reported
    result = run_cli("sweep", tiny_experiment(), "--engines-dir", engines_dir)
    table = pd.read_csv("reports/tiny/results.csv")
    ok = table[table["status"] == "ok"]
    assert (ok["cpu_threads"] == 1).all() and (~ok["cpu_spin_wait"].astype(bool)).all()  # batches 1, 2: one thread
    lines = result.output.splitlines()
    first_cell = next(i for i, line in enumerate(lines) if line.startswith("[1/4]"))
    steps = [line for line in lines[:first_cell] if line.startswith(("[export ", "[time "))]
    assert steps and steps[0].startswith("[export 1/") and all("elapsed" in s and "ETA" in s for s in steps)
    assert any(s.startswith("[time 1/4] digits-resnet digits cpu fp32 b1: p50 ") for s in steps)
    forced = run_cli("sweep", tiny_experiment(), "--engines-dir", engines_dir, "--threads", "2",
                     "--reports-dir", "threads")
    table = pd.read_csv("threads/tiny/results.csv")
    assert (table[table["status"] == "ok"]["cpu_threads"] == 2).all(), forced.output
    bad = run_cli("sweep", tiny_experiment(), "--threads", "many")
    assert bad.exit_code == 2 and "--threads 'many': give auto or a number of threads >= 1" in bad.output


def test_a_finished_sweep_answers_without_loading_torch(tiny_experiment, engines_dir):
    """The warm re-run the README promises in under a second: no torch, ONNX Runtime or backend import."""
    path = tiny_experiment()
    cmd = [sys.executable, "-c", "from harness.cli import main; main()", "sweep", str(path),
           "--engines-dir", str(engines_dir), "--no-fail-on-error"]
    subprocess.run(cmd, capture_output=True, timeout=600, check=True)
    probe = ("import sys; from harness.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in ('torch', 'onnxruntime', 'harness.sweep.runner') if m in sys.modules))")
    again = subprocess.run([sys.executable, "-c", probe, *cmd[3:]], capture_output=True, text=True, timeout=120)
    assert "is up to date" in again.stdout and again.stdout.strip().endswith("[]"), again.stdout + again.stderr
