"""Sweeps beyond one process: a Ray executor on a local cluster with logical GPUs, and a Slurm job array through
submitit's local executor."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from harness.errors import HarnessError
from harness.sweep.experiment import load_experiment
from harness.sweep.matrix import expand
from harness.sweep.runner import Workspace, run_sweep
from harness.sweep.store import ResultStore

ray = pytest.importorskip("ray")

from harness.sweep.executors.ray_executor import TIMING_SLOT, _options, ray_executor  # noqa: E402

# Model factories the cluster's workers import (they see the PYTHONPATH the cluster started with).
MODELS = {
    "brokenmodel.py": "def build():\n    raise RuntimeError('boom: this model cannot be built')\n",
    # Kills its worker process the first time it is built anywhere, then fails like brokenmodel.
    "dyingmodel.py": "import os\nfrom pathlib import Path\n\n\ndef build(marker=Path(__file__).with_suffix('.died')):\n"
                     "    if not marker.exists():\n        marker.touch()\n        os._exit(1)\n"
                     "    raise RuntimeError('boom: built again after the worker died')\n",
    # The worker's disk refuses a file too large: a fault of the machine, not a result of the cell.
    "fullmodel.py": "import errno\n\n\ndef build():\n"
                    "    raise OSError(errno.EFBIG, 'File too large', '/worker/disk/model.onnx')\n",
}

EXPERIMENT = """
name: {name}
models: {models}
backends: {backends}
precisions: [fp32]
batch_sizes: [1, 2]
timing: {{warmup_s: 0.01, iterations: 3, duration_s: 0.05, repeats: 2}}
evaluation: {{limit: 64}}
executor: {executor}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One local Ray cluster for the module (starting one takes seconds): 2 CPUs, 2 logical GPUs, a timing slot."""
    models = tmp_path_factory.mktemp("models")
    for name, text in MODELS.items():
        (models / name).write_text(text)
    old_path, old_sys = os.environ.get("PYTHONPATH"), list(sys.path)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(models), old_path) if p)
    sys.path.insert(0, str(models))
    ray.init(num_cpus=2, num_gpus=2, resources={TIMING_SLOT: 1}, include_dashboard=False, log_to_driver=False,
             logging_level="WARNING")
    yield models
    ray.shutdown()
    sys.path[:] = old_sys
    if old_path is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = old_path


def write(tmp_path, name="scale", models="[digits-resnet, brokenmodel:build]", backends="[cpu]",
          executor="{}") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(EXPERIMENT.format(name=name, models=models, backends=backends, executor=executor))
    return path


def sweep(path: Path, root: Path, engines: Path, executor) -> pd.DataFrame:
    exp = load_experiment(path)
    matrix = expand(exp)
    ws = Workspace(exp, engines, ResultStore(root), log=lambda _: None)
    run_sweep(ws, matrix, matrix, executor=executor)
    return pd.read_csv(root / "results.csv").set_index("cell_id").sort_index()


def test_ray_sweep_gives_the_cells_and_results_of_a_local_run(cluster, tmp_path, engines_dir):
    path = write(tmp_path)
    from harness.sweep.runner import run_local

    local = sweep(path, tmp_path / "local", engines_dir, run_local)
    remote = sweep(path, tmp_path / "ray", engines_dir, ray_executor(None))
    assert list(remote.index) == list(local.index) and len(remote) == 4
    same = ["status", "model", "batch", "top1_pct", "top1_agreement_pct", "sqnr_db", "error", "failed_stage"]
    pd.testing.assert_frame_equal(remote[same], local[same])
    assert remote["ran_on"].str.contains(ray.util.get_node_ip_address(), regex=False).all()
    assert (remote.loc[remote["status"] == "ok", "latency_p50_ms"] > 0).all()


def test_a_ray_sweep_keeps_its_samples_so_report_compare_gates_it(cluster, tmp_path, engines_dir, run_cli):
    """Ray cells recorded samples/<id>.parquet but the samples stayed on the worker: report compare exited 2."""
    from harness.sweep.runner import run_local

    path = write(tmp_path, name="gated")
    sweep(path, tmp_path / "local", engines_dir, run_local)
    remote = sweep(path, tmp_path / "ray", engines_dir, ray_executor(None))
    for rel in remote.loc[remote["status"] == "ok", "samples_file"]:
        assert len(pd.read_parquet(tmp_path / "ray" / rel)) > 0, rel
    for base, cur in (("ray", "ray"), ("local", "ray"), ("ray", "local")):
        result = run_cli("report", "compare", tmp_path / base, tmp_path / cur, "--output", tmp_path / "c.csv")
        assert result.exit_code in (0, 1), result.output  # a verdict, not "cannot read the latency samples"
        table = pd.read_csv(tmp_path / "c.csv")
        assert (table.loc[table["status_base"] == "ok", "test"] == "mann-whitney").all()
    assert "no regression in 4 baseline cells" in run_cli("report", "compare", tmp_path / "ray",
                                                          tmp_path / "ray").output


def test_a_machine_fault_on_a_ray_worker_stops_the_sweep_and_stores_nothing(cluster, tmp_path, engines_dir):
    from harness.errors import MachineFault

    path = write(tmp_path, name="full", models="[fullmodel:build]")
    with pytest.raises(MachineFault, match=r"sweep stopped at .* File too large: /worker/disk/model.onnx.* \(on "):
        sweep(path, tmp_path / "out", engines_dir, ray_executor(None))
    assert not list((tmp_path / "out" / "cells").glob("*.json"))


def test_gpu_cells_hold_one_whole_gpu_and_cpu_cells_the_node_timing_slot(cluster, tmp_path, engines_dir):
    path = write(tmp_path, models="[digits-resnet]", backends="[cpu, tensorrt]",
                 executor="{accelerator_type: H100}")
    exp = load_experiment(path)
    gpu, cpu = [c for c in expand(exp) if c.backend == "tensorrt"], [c for c in expand(exp) if c.backend == "cpu"]
    assert _options(exp, gpu) == {"max_retries": 2, "retry_exceptions": False, "num_cpus": 1, "num_gpus": 1,
                                  "accelerator_type": "H100"}
    assert _options(exp, cpu)["resources"] == {TIMING_SLOT: 1} and "num_gpus" not in _options(exp, cpu)
    with pytest.raises(HarnessError, match="no node of the Ray cluster has a H100 GPU"):
        sweep(path, tmp_path / "h100", engines_dir, ray_executor(None))
    table = sweep(write(tmp_path, name="mixed", models="[digits-resnet]", backends="[cpu, tensorrt]"),
                  tmp_path / "mixed", engines_dir, ray_executor(None))
    trt = table[table["backend"] == "tensorrt"]
    assert trt["ran_on"].str.contains(r", GPU \d\)$").all()  # each ran holding a (logical) GPU of its own
    assert not table.loc[table["backend"] == "cpu", "ran_on"].str.contains("GPU").any()
    assert (table.loc[table["backend"] == "cpu", "status"] == "ok").all()


@pytest.mark.parametrize("retries", [1, 0])
def test_a_killed_worker_is_retried_then_its_cells_become_failed_rows(cluster, tmp_path, engines_dir, retries):
    (cluster / "dyingmodel.died").unlink(missing_ok=True)
    path = write(tmp_path, name=f"dying{retries}", models="[dyingmodel:build]",
                 executor=f"{{max_retries: {retries}}}")
    table = sweep(path, tmp_path / "out", engines_dir, ray_executor(None))
    assert len(table) == 2 and (table["status"] == "failed").all()
    if retries:  # the retry ran the group again on a fresh worker
        assert table["error"].str.contains("built again after the worker died").all()
    else:
        assert (table["failed_stage"] == "worker").all()
        assert table["error"].str.contains(r"failed after 1 attempt\(s\) \(executor.max_retries 0\)").all()


def test_ctrl_c_keeps_finished_rows_and_the_rerun_does_the_rest(cluster, tmp_path, engines_dir):
    """The CLI driver joins the cluster, is interrupted once a row is stored, then run again to the end."""
    path = write(tmp_path, name="interrupted", models="[digits-resnet]", executor="{}")
    # Two work groups (fp32, fp16) that queue for the node's one timing slot: the interrupt, sent once the first
    # group's first row is stored, always finds the second group not yet run.
    path.write_text(path.read_text().replace("precisions: [fp32]", "precisions: [fp32, fp16]")
                    .replace("duration_s: 0.05", "duration_s: 0.5"))
    cmd = [sys.executable, "-c", "from harness.cli import main; main()", "sweep", str(path), "--executor", "ray",
           "--address", ray.get_runtime_context().gcs_address, "--engines-dir", str(engines_dir),
           "--reports-dir", str(tmp_path / "reports")]
    cells = tmp_path / "reports" / "interrupted" / "cells"
    # A runner that starts the suite in the background (a non-interactive shell's `&`) leaves SIGINT ignored, and
    # children inherit that: give the driver the default disposition a user's terminal gives it.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not list(cells.glob("*.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    first = {p.name: p.read_text() for p in cells.glob("*.json")}
    assert 1 <= len(first) < 4, "the sweep was not interrupted half-way"
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"skipped {len(first)} finished cell(s)" in rerun.stderr
    after = {p.name: p.read_text() for p in cells.glob("*.json")}
    assert len(after) == 4 and all(after[k] == v for k, v in first.items())


def test_slurm_job_array_through_submitit_stores_every_row(tmp_path, engines_dir):
    pytest.importorskip("submitit")
    from harness.sweep.executors.slurm import slurm_executor

    (tmp_path / "brokenmodel.py").write_text(MODELS["brokenmodel.py"])
    sys.path.insert(0, str(tmp_path))
    env = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path), env) if p)
    try:
        table = sweep(write(tmp_path, executor=f"{{logs: {tmp_path / 'logs'}}}"), tmp_path / "out", engines_dir,
                      slurm_executor("local", poll_s=0.2))
    finally:
        sys.path.remove(str(tmp_path))
        os.environ.pop("PYTHONPATH") if env is None else os.environ.__setitem__("PYTHONPATH", env)
    assert len(table) == 4 and sorted(table["status"]) == ["failed", "failed", "ok", "ok"]
    assert table["ran_on"].str.contains("slurm job").all()
    assert len(list((tmp_path / "logs").glob("*_log.out"))) == 2  # one array task per work group
