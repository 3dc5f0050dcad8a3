"""Fault injection: every kind of stored file damaged three ways, kill -9 at every commit point, two processes.

A damaged cache entry must be noticed and rebuilt (never used, never a traceback); a damaged result must be
regenerated or set aside with a warning naming the file; a kill at any moment must leave a state the next run
finishes from.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from onnx import numpy_helper
from test_cli_errors import assert_one_line_error

from harness import cache_integrity
from harness.backends.base import BuildOptions
from harness.build import build_artifact, load_engine, onnx_for, prepare_seconds
from harness.errors import HarnessError
from harness.fileio import KILL_AT
from harness.models.registry import resolve_model
from harness.quantize.checkpoint import calibrate, quantized
from harness.quantize.config import QuantConfig

QUANT = QuantConfig(calib="max", calib_batches=1, calib_batch_size=16).to_dict()
OPTIONS = BuildOptions(precision="int8")


# --- the three damages, for any file --------------------------------------------------------------------------


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def bit_flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def _scaled(obj):
    if isinstance(obj, torch.Tensor):
        return obj * 1000 if obj.is_floating_point() else obj
    if isinstance(obj, dict):
        return {k: _scaled(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_scaled(v) for v in obj]
    if isinstance(obj, float):
        return obj * 1000
    return obj


def valid_but_wrong(path: Path) -> None:
    """A file that still parses as its kind, every number x1000 (the amax x1000 of the audit)."""
    if path.suffix == ".onnx":
        model = onnx.load(str(path))
        for init in model.graph.initializer:
            arr = numpy_helper.to_array(init)
            if arr.dtype.kind == "f":
                init.CopyFrom(numpy_helper.from_array(arr * 1000, init.name))
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    elif path.suffix == ".pt":
        torch.save(_scaled(torch.load(path, weights_only=True)), path)
    else:
        data = json.loads(path.read_text())
        path.write_text(json.dumps(_scaled(data) if not isinstance(data, dict) or "files" not in data
                                   else {**data, "info": {"prepare_s": 1e9}}))


DAMAGES = {"truncated": truncate, "bit-flipped": bit_flip, "valid-but-wrong": valid_but_wrong}


# --- caches ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """An engines folder holding each kind of cache entry of one int8 request, made once."""
    root = tmp_path_factory.mktemp("pristine")
    build_artifact(resolve_model("digits-resnet"), "cpu", OPTIONS, root, QUANT, verify="off")
    return root


def _onnx(d):
    return onnx_for(resolve_model("digits-resnet"), "int8", d, QUANT, LOG.append, "off")


def _calibrated(d):
    return quantized(resolve_model("digits-resnet"), QUANT, d / "calib", LOG.append)


def _stats(d):
    return calibrate(resolve_model("digits-resnet"), QuantConfig.from_dict(QUANT), d / "calib", LOG.append)


def _engine(d):
    return build_artifact(resolve_model("digits-resnet"), "cpu", OPTIONS, d, QUANT, log=LOG.append, verify="off")


LOG = []
# kind -> (glob under the engines folder, what reads it); records are stored files too
KINDS = {
    "onnx": ("onnx/*.onnx", _onnx),
    "export check": ("onnx/*.verify.json", _onnx),
    "onnx record (cost)": ("onnx/*.onnx.sha256", _onnx),
    "calibrated model": ("calib/[0-9a-f]*.pt", _calibrated),
    "calibration statistics": ("calib/stats-*.pt", _stats),
    "statistics record": ("calib/stats-*.pt.sha256", _stats),
    "engine sidecar": ("*.json", _engine),
}


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_any_damaged_cache_file_is_detected_and_rebuilt(pristine, tmp_path, kind, damage):
    pattern, read = KINDS[kind]
    root = tmp_path / "engines"
    shutil.copytree(pristine, root)
    (target,) = root.glob(pattern)
    before = target.read_bytes()
    DAMAGES[damage](target)
    assert target.read_bytes() != before
    LOG.clear()
    read(root)
    entry = target.with_name(target.name.removesuffix(cache_integrity.SUFFIX))
    if entry.suffix == ".json" and entry.name.endswith(".verify.json"):
        entry = entry.with_name(entry.name.removesuffix(".verify.json") + ".onnx")
    assert cache_integrity.check(entry) is not None, "the rebuilt entry does not match its record"
    if kind != "engine sidecar":
        if not target.name.endswith(cache_integrity.SUFFIX):  # records and sidecars hold what the rebuild cost
            assert target.read_bytes() == before, "the rebuilt file differs from the original"
        assert any("does not match the hash recorded" in m and entry.name in m for m in LOG), LOG
    if kind == "onnx record (cost)":
        assert prepare_seconds(entry) != 1e9
    assert not list(root.rglob("*.tmp"))


def test_onnx_with_a_flipped_exponent_bit_passes_the_checker_and_is_still_rebuilt(pristine, tmp_path):
    root = tmp_path / "engines"
    shutil.copytree(pristine, root)
    (path,) = root.glob("onnx/*.onnx")
    model = onnx.load(str(path))
    init = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    raw = bytearray(init.raw_data)
    raw[3] ^= 0x40  # the top exponent bit of the first float32: 0.05 -> ~1.7e37
    init.raw_data = bytes(raw)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    LOG.clear()
    assert _onnx(root) == path
    assert any("does not match" in m for m in LOG)
    assert np.isfinite(numpy_helper.to_array(max(onnx.load(str(path)).graph.initializer,
                                                 key=lambda t: len(t.raw_data)))).all()


@pytest.mark.parametrize("damage", ["truncated", "random"])
def test_build_engine_rebuilds_a_truncated_or_random_cached_onnx(pristine, tmp_path, run_cli, damage):
    """The audit's case: every retry failed with `...onnx.24831.tmp: INVALID_PROTOBUF` and kept the bad file."""
    root = tmp_path / "engines"
    shutil.copytree(pristine, root)
    for engine in root.glob("*.onnx"):  # the cpu artifact: build-engine must rebuild from the ONNX
        engine.unlink()
    (path,) = root.glob("onnx/*.onnx")
    if damage == "truncated":
        truncate(path)
    else:
        path.write_bytes(os.urandom(path.stat().st_size))
    args = ("build-engine", "--model", "digits-resnet", "--precision", "int8", "--backend", "cpu", "--calib", "max",
            "--calib-batches", "1", "--calib-batch-size", "16", "--verify", "off", "--engines-dir", root)
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    assert "does not match the hash recorded" in result.output and ".tmp" not in result.output
    onnx.checker.check_model(onnx.load(str(path)))
    assert run_cli(*args).exit_code == 0


def test_an_engine_whose_sidecar_was_rewritten_is_refused(pristine, tmp_path):
    root = tmp_path / "engines"
    shutil.copytree(pristine, root)
    (sidecar,) = root.glob("*.json")
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "batch": [1, 1, 4096]}))
    with pytest.raises(HarnessError, match="modified since it was built"):
        load_engine(sidecar)


def test_stale_temp_files_of_dead_writers_are_removed_live_ones_kept(pristine, tmp_path):
    root = tmp_path / "engines"
    shutil.copytree(pristine, root)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (onnx_path,) = root.glob("onnx/*.onnx")
    host = socket.gethostname()
    stale = [onnx_path.with_name(f"{onnx_path.name}.{host}.{dead.pid}.1.tmp"), root / f"x.onnx.{host}.{dead.pid}.1.tmp",
             root / "calib" / f"stats-x.pt.{host}.{dead.pid}.1.tmp"]
    live = [root / f"y.onnx.{host}.{os.getpid()}.1.tmp",
            root / f"z.onnx.other-node.{dead.pid}.1.tmp"]  # another host's writer: its pid means nothing here
    for p in [*stale, *live]:
        p.write_bytes(b"half a file")
    _engine(root)
    _stats(root)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in live)


# --- bad inputs: non-finite numbers, a split layout without val/, files that are not regular files --------------


@pytest.mark.parametrize("text", ["timing: {duration_s: .nan}", "timing: {warmup_s: .inf}",
                                  "quantization: {percentile: -.inf}", "batch_sizes: [1, .nan]"])
def test_non_finite_numbers_in_an_experiment_file_are_refused(tmp_path, text):
    from harness.sweep.experiment import load_experiment

    path = tmp_path / "e.yaml"
    path.write_text(f"models: [digits-resnet]\nprecisions: [fp32]\n{text}\n")
    with pytest.raises(HarnessError, match="is not a finite number") as err:
        load_experiment(path)
    assert "\n" not in err.value.message


def test_imagefolder_with_split_folders_but_no_val_is_refused(tmp_path):
    from PIL import Image

    from harness.data.datasets import resolve_dataset

    for split in ("train", "calib"):
        for label in ("a", "b"):
            (tmp_path / split / label).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / split / label / "0.png")
    with pytest.raises(HarnessError, match=r"has train/, calib/ but no val/"):
        resolve_dataset(f"imagefolder:{tmp_path}", resolve_model("digits-resnet"))


FIFO_COMMANDS = [("sweep", "{fifo}"), ("quantize", "--model", "digits-resnet", "--skip-from", "{fifo}"),
                 ("build-engine", "--model", "digits-resnet", "--precision", "int8", "--quant", "{fifo}"),
                 ("compare", "torch:digits-resnet", "{fifo}"), ("compare", "{fifo}", "torch:digits-resnet"),
                 ("compare", "torch:digits-resnet", "--load-inputs", "{fifo}", "--save-outputs", "o.npz"),
                 ("compare", "--load-outputs", "{fifo}", "torch:digits-resnet"),
                 ("debug", "layers", "{onnx}", "{fifo}"), ("debug", "layers", "{fifo}", "{onnx}"),
                 ("debug", "qdq", "{fifo}", "--min-sqnr", "20"), ("eval", "{fifo}"), ("bench", "{fifo}"),
                 ("inspect", "{fifo}"), ("export", "--weights", "{fifo}", "-o", "x.onnx"),
                 ("report", "compare", "{fifo}", "{fifo}"), ("inspect-engine", "--layer-info", "{fifo}")]


@pytest.mark.parametrize("args", FIFO_COMMANDS, ids=lambda a: " ".join(a[:3]))
def test_a_fifo_where_a_file_is_expected_is_refused_not_hung(tmp_path, args, digits_engine):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    cmd = [sys.executable, "-c", "from harness.cli import main; main()",
           *(a.format(fifo=fifo, onnx=digits_engine.artifact) for a in args)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    assert f"{fifo}: is a FIFO; give a regular file" in result.stderr, result.stderr
    assert "rerun with --debug" not in result.stderr


# --- writes that fail: one line naming the file and the cause ---------------------------------------------------


def _refuse_replace(monkeypatch, pattern: str, code: int):
    """os.replace (atomic_write's commit) fails with `code` for files whose name matches `pattern`."""
    import errno
    from fnmatch import fnmatch

    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if fnmatch(Path(dst).name, pattern):
            raise OSError(code, os.strerror(code), str(src))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    return errno


WRITE_FAULTS = {  # what the command writes -> the command line ({engine}: an fp32 cpu engine)
    "eval --json": ("eval", "{engine}", "--limit", "8", "--json", "out/x.json"),
    "bench --json": ("bench", "{engine}", "--duration", "0.01", "--iterations", "3", "--json", "out/x.json"),
    "compare --save-outputs": ("compare", "{engine}", "--limit", "4", "--save-outputs", "out/x.npz"),
    "compare --json": ("compare", "{engine}", "{engine}", "--limit", "4", "--json", "out/x.json"),
    "export -o": ("export", "--verify", "off", "-o", "out/x.onnx"),
    "debug demo -o": ("debug", "demo", "-o", "out/x.pt"),
    "build-engine --engines-dir": ("build-engine", "--engines-dir", "out"),
}


# every command through one errno, every errno through one command
@pytest.mark.parametrize("what, code", [(what, "ENOSPC") for what in WRITE_FAULTS]
                         + [("eval --json", code) for code in ("EFBIG", "EDQUOT", "EROFS", "EIO")])
def test_every_failed_write_names_its_file_and_the_cause(run_cli, monkeypatch, digits_engine, what, code):
    import errno

    _refuse_replace(monkeypatch, "*", getattr(errno, code))
    args = [a.format(engine=digits_engine.artifact) for a in WRITE_FAULTS[what]]
    result = run_cli(*args)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    assert errors[0].startswith("Error: cannot write out") and os.strerror(getattr(errno, code)) in errors[0]
    assert "rerun with --debug" not in errors[0] and ".tmp" not in errors[0]


@pytest.mark.parametrize("args", [
    ("eval", "{engine}", "--json", "blocker/x.json"), ("compare", "{engine}", "--save-outputs", "blocker/x.npz"),
    ("compare", "{engine}", "{engine}", "--plot", "blocker/x.png"), ("debug", "qdq", "q.onnx", "-o", "blocker/s.txt"),
    ("report", "r", "-o", "blocker/report"), ("report", "compare", "a", "b", "--output", "blocker/c.csv"),
    ("sweep", "x.yaml", "--reports-dir", "blocker/r"), ("build-engine", "--engines-dir", "blocker/e"),
    ("export", "-o", "blocker/x.onnx"), ("quantize", "-o", "blocker/q.pt"),
], ids=lambda a: " ".join(a[:2]) + " " + a[-2])
def test_an_output_path_under_a_file_is_refused_before_any_work(run_cli, tmp_path, digits_engine, args):
    (tmp_path / "blocker").write_text("a file, not a folder")
    result = run_cli(*[a.format(engine=digits_engine.artifact) for a in args])
    assert result.exit_code == 2 and "cannot write blocker/" in result.output, result.output
    assert "blocker is a file, not a folder" in result.output


def test_report_and_its_gate_name_the_file_they_cannot_write(run_cli, tmp_path, monkeypatch):
    from test_report_compare import latencies, write_run

    run = write_run(tmp_path / "run", {1: latencies(np.random.default_rng(0))})
    _refuse_replace(monkeypatch, "report.md", __import__("errno").ENOSPC)
    merged = run_cli("report", run, "-o", "merged")
    assert merged.exit_code == 2 and "Error: cannot write merged/report.md: No space left on device" in merged.output
    _refuse_replace(monkeypatch, "c.csv", __import__("errno").EFBIG)
    gate = run_cli("report", "compare", run, run, "--output", "c.csv")
    assert gate.exit_code == 2 and "Error: cannot write c.csv: File too large" in gate.output, gate.output


# --- a closed pipe: the command finishes, writes its files, and exits as it would have -------------------------


@pytest.mark.parametrize("command, status", [("eval {engine} --limit 8 --json out.json", 0),
                                             ("compare {engine} {engine} --limit 4 --atol 0 --json out.json", 0),
                                             ("compare torch:digits-resnet {int8} --limit 4 --min-sqnr 200 "
                                              "--json out.json", 1)])
def test_a_closed_pipe_keeps_the_results_and_the_exit_status(tmp_path, digits_engine, pristine, command, status):
    int8 = next(p for p in pristine.glob("digits-resnet-int8-cpu-*.onnx"))
    line = command.format(engine=digits_engine.artifact, int8=int8)
    script = (f"{sys.executable} -c 'from harness.cli import main; main()' {line} 2>&1 | true; "
              "echo status=${PIPESTATUS[0]}")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                            env=env)
    assert f"status={status}" in result.stdout, result.stdout + result.stderr
    assert json.loads((tmp_path / "out.json").read_text()), "the results file was not written"


# --- sweeps: stored results damaged, the machine failing, kill -9 at every commit point, two processes ----------

SWEEP = """
name: faults
models: [digits-resnet]
precisions: [fp32, int8]
quantization: {calibrators: [max], calib_batches: 1, calib_batch_size: 16}
timing: {warmup_s: 0.01, iterations: 3, duration_s: 0.05, repeats: 1}
evaluation: {limit: 32}
build: {verify: "off"}
"""


@pytest.fixture
def sweep_file(tmp_path, monkeypatch, engines_dir):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    path = tmp_path / "faults.yaml"
    path.write_text(SWEEP)
    return path


def _sweep(path: Path, engines: Path, kill_at: str | None = None, wait: bool = True):
    env = {k: v for k, v in os.environ.items() if k != KILL_AT}
    if kill_at:
        env[KILL_AT] = kill_at
    cmd = [sys.executable, "-c", "from harness.cli import main; main()", "sweep", str(path), "--engines-dir",
           str(engines)]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


ROOT = Path("reports/faults")
# In pipeline order: each run is killed at its point, the next resumes from what that kill left behind.
COMMIT_POINTS = ["after:stats-*.pt", "after:*-int8-????????????????.onnx", "after:*-cpu-*.json",
                 "before:????????????????.json", "after:results.csv", "before:report.html"]


def test_kill_9_at_every_commit_point_then_a_rerun_finishes_with_nothing_lost(sweep_file, tmp_path):
    engines = tmp_path / "engines"
    for point in COMMIT_POINTS:
        killed = _sweep(sweep_file, engines, point)
        assert killed.returncode == -signal.SIGKILL, f"{point} was not reached: {killed.stderr[-2000:]}"
        assert "Traceback" not in killed.stderr
    final = _sweep(sweep_file, engines)
    assert final.returncode == 0, final.stderr[-3000:]
    table = pd.read_parquet(ROOT / "results.parquet")
    assert sorted(table["precision"]) == ["fp32", "int8"] and (table["status"] == "ok").all()
    assert table["export_s"].notna().all() and table.loc[table["precision"] == "int8", "calib_s"].notna().all()
    assert not [p for p in [*engines.rglob("*"), *tmp_path.joinpath("reports").rglob("*")] if p.suffix == ".tmp"]
    for kind in ("onnx/*.onnx", "calib/*.pt", "*.json"):
        for path in engines.glob(kind):
            assert cache_integrity.check(path) is not None, path
    again = _sweep(sweep_file, engines)
    assert "all 2 cells finished" in again.stdout, again.stderr


@pytest.mark.parametrize(("name", "damage"), [("results.parquet", "truncated"), ("results.csv", "bit-flipped"),
                                              ("results.csv", "valid-but-wrong")])
def test_a_damaged_results_table_is_regenerated_from_the_cells(run_cli, tiny_experiment, engines_dir, name, damage):
    path = tiny_experiment()
    assert run_cli("sweep", path, "--engines-dir", engines_dir).exit_code in (0, 1)
    root = Path("reports/tiny")
    before = pd.read_csv(root / "results.csv")
    target = root / name
    if damage == "valid-but-wrong":
        frame = before.assign(latency_p50_ms=before["latency_p50_ms"] * 1000)
        frame.to_csv(target, index=False) if name.endswith(".csv") else frame.to_parquet(target, index=False)
    else:
        DAMAGES[damage](target)
    run_cli("sweep", path, "--engines-dir", engines_dir)
    pd.testing.assert_frame_equal(pd.read_csv(root / "results.csv"), before)
    parquet = pd.read_parquet(root / "results.parquet")
    assert parquet["cell_id"].tolist() == before["cell_id"].tolist()
    assert parquet["latency_p50_ms"].tolist() == pytest.approx(before["latency_p50_ms"].tolist(), nan_ok=True)


@pytest.mark.parametrize("stray", ["unreadable", "wrong-typed latency"])
def test_a_bad_file_in_cells_is_skipped_with_a_warning_never_blocking(run_cli, tiny_experiment, engines_dir, stray):
    path = tiny_experiment()
    run_cli("sweep", path, "--engines-dir", engines_dir)
    cells = Path("reports/tiny/cells")
    ok = next(p for p in sorted(cells.glob("*.json")) if json.loads(p.read_text())["status"] == "ok")
    row = json.loads(ok.read_text())
    bad = {"unreadable": (cells / "notes.json", b"\xff\xfe{garbage"),
           "wrong-typed latency": (ok, json.dumps({**row, "latency_p50_ms": "fast"}).encode())}[stray]
    bad[0].write_bytes(bad[1])
    rerun = run_cli("sweep", path, "--engines-dir", engines_dir)
    assert rerun.exit_code in (0, 1) and f"{bad[0]}:" in rerun.output and "skipped" in rerun.output, rerun.output
    report = run_cli("report", "merge", "reports/tiny", "-o", "merged")
    assert report.exit_code == 0, report.output
    assert len(pd.read_csv("reports/tiny/results.csv")) == 4
    if bad[0] == ok:  # the damaged cell ran again and its file is a row once more
        assert isinstance(json.loads(ok.read_text())["latency_p50_ms"], float)


def test_disk_full_during_a_cell_stops_the_sweep_and_stores_nothing_for_it(run_cli, tiny_experiment, engines_dir,
                                                                            monkeypatch, tmp_path):
    import errno

    path = tiny_experiment()
    engines = tmp_path / "engines"
    real = os.replace

    def full(src, dst, *args, **kwargs):
        if "-cpu-" in Path(dst).name and Path(dst).suffix == ".onnx":  # the engine artifact
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full)
    result = run_cli("sweep", path, "--engines-dir", engines)
    assert result.exit_code != 0 and "No space left on device" in result.output
    assert "nothing was stored for this cell" in result.output and "Traceback" not in result.output
    assert not list(Path("reports/tiny/cells").glob("*.json"))
    monkeypatch.setattr(os, "replace", real)
    result = run_cli("sweep", path, "--engines-dir", engines)
    assert "ran 4 cells (2 failed)" in result.output, result.output


@pytest.mark.parametrize("pattern, code", [("*.parquet", "EFBIG"), ("????????????????.json", "EDQUOT"),
                                           ("*.lock", "EROFS")])
def test_a_write_fault_during_a_cell_stops_the_sweep_naming_the_file_and_stores_nothing(
        run_cli, tiny_experiment, engines_dir, monkeypatch, pattern, code):
    """A file too large, a quota, a read-only folder: the machine's faults, never a failed row."""
    import errno

    path = tiny_experiment()
    real_open, real_replace = os.open, os.replace
    if pattern == "*.lock":  # the cell's claim: its lock file cannot even be opened

        def read_only(file, flags, *args, **kwargs):
            if str(file).endswith(".lock") and ".claims" in str(file):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(file))
            return real_open(file, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", read_only)
    else:
        _refuse_replace(monkeypatch, pattern, getattr(errno, code))
    result = run_cli("sweep", path, "--engines-dir", engines_dir)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    assert "cannot write reports/tiny/" in errors[0] and os.strerror(getattr(errno, code)) in errors[0]
    assert "rerun with --debug" not in errors[0]
    assert not list(Path("reports/tiny/cells").glob("*.json"))  # nothing stored: a re-run retries the cells
    monkeypatch.setattr(os, "open", real_open)
    monkeypatch.setattr(os, "replace", real_replace)
    again = run_cli("sweep", path, "--engines-dir", engines_dir)
    assert "ran 4 cells (2 failed)" in again.output, again.output


def test_too_many_shards_and_an_empty_matrix_are_refused_in_one_line(run_cli, tiny_experiment):
    path = tiny_experiment()
    assert_one_line_error(run_cli("sweep", path, "--shard", "1/99999999999999999999999", "--dry-run"),
                          "--shard 1/99999999999999999999999: the matrix has 4 cell(s), so at most 4 shard(s)")
    path.write_text(path.read_text() + "exclude: [{batch: 1}, {batch: 2}]\n")
    assert_one_line_error(run_cli("sweep", path, "--dry-run"),
                          "the matrix is empty: the exclude rules remove every cell")


def test_two_sweeps_on_one_folder_split_the_cells_instead_of_running_each_twice(sweep_file, engines_dir):
    sweep_file.write_text(SWEEP.replace("[fp32, int8]", "[fp32]").replace("duration_s: 0.05", "duration_s: 0.5")
                          + "batch_sizes: [1, 2, 4, 8]\n")
    first = _sweep(sweep_file, engines_dir, wait=False)
    second = _sweep(sweep_file, engines_dir, wait=False)
    outs = [p.communicate(timeout=600) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outs
    ran = [line for _, err in outs for line in err.splitlines() if line.startswith("[") and " ok " in line]
    assert len(ran) == 4, ran  # every cell once, across both
    assert any("being run by another harness sweep" in err for _, err in outs)
    assert len(pd.read_csv(ROOT / "results.csv")) == 4


@pytest.mark.parametrize("row", [[1, 2], {"cell_id": "x"}, "text"])
def test_cell_files_that_are_not_rows_are_skipped_with_their_name(tmp_path, row):
    from harness.sweep.store import ResultStore

    warnings = []
    (tmp_path / "cells").mkdir()
    (tmp_path / "cells" / "x.json").write_text(json.dumps(row))
    assert ResultStore(tmp_path, warnings.append).rows() == {}
    assert len(warnings) == 1 and "x.json" in warnings[0]
