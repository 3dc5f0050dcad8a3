"""The CI workflows and the scheduler examples: valid for GitHub / Kubernetes / bash, and wired to what exists."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def test_workflows_pass_the_github_workflow_schema():
    pytest.importorskip("check_jsonschema", reason="check-jsonschema not installed: pip install -e '.[dev]'")
    assert [p.name for p in WORKFLOWS] == ["ci.yml", "gpu-sweep.yml"]
    out = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                          *map(str, WORKFLOWS)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_cpu_workflow_runs_ci_run_and_gpu_workflow_shards_merges_and_gates():
    ci = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    assert [s.get("run") for s in ci["jobs"]["tests"]["steps"]][-1] == ".ci/run"
    gpu = yaml.safe_load((ROOT / ".github/workflows/gpu-sweep.yml").read_text())
    sweep, merge = gpu["jobs"]["sweep"], gpu["jobs"]["merge"]
    assert "self-hosted" in sweep["runs-on"] and "gpu" in sweep["runs-on"]
    shards = sweep["strategy"]["matrix"]["shard"]
    assert shards == list(range(1, int(gpu["env"]["SHARDS"]) + 1))
    assert (ROOT / gpu["env"]["EXPERIMENT"]).is_file()
    assert yaml.safe_load((ROOT / gpu["env"]["EXPERIMENT"]).read_text())["name"] == gpu["env"]["NAME"]
    merge_runs = " ".join(s.get("run", "") for s in merge["steps"])
    assert merge["needs"] == "sweep" and 'harness report "reports/$NAME"' in merge_runs
    assert "harness report compare baseline/results.parquet" in merge_runs


def test_kubernetes_indexed_job_passes_the_shard_count_it_runs():
    job = yaml.safe_load((ROOT / "examples/kubernetes/sweep-indexed-job.yaml").read_text())
    assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed"
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["HARNESS_SHARD_COUNT"] == str(job["spec"]["completions"])
    assert container["command"][:5] == ["harness", "sweep", "experiments/resnet50_gpu.yaml", "--shard", "auto"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_slurm_script_is_valid_bash_running_an_auto_shard_per_array_task():
    script = ROOT / "examples/slurm/sweep-array.sbatch"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert re.search(r"^#SBATCH --array=0-\d+$", text, re.M) and "--shard auto" in text
