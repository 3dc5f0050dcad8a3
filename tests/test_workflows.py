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
    assert [p.name for p in WORKFLOWS] == ["ci.yml", "drift.yml", "gpu-sweep.yml"]
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


def _install_line(text: str) -> str:
    return next(line.strip() for line in text.splitlines() if "pip install" in line and ".[dev]" in line)


def test_ci_and_the_readme_install_the_versions_ci_tested():
    """One install line in README and .ci/run, constrained by constraints.txt, which pins every dependency."""
    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")

    ci = _install_line((ROOT / ".ci/run").read_text())
    assert "-c constraints.txt" in ci and ci.replace("-q ", "") == _install_line((ROOT / "README.md").read_text())
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *(r for extra in ("dev", "modelopt", "ray", "slurm")
                                          for r in project["optional-dependencies"][extra])]
    for text in wanted:
        req = Requirement(text)
        if req.name == "harness":
            continue
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not pinned in constraints.txt: run nox -s lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {req}"


def test_the_drift_workflow_runs_the_suite_on_the_newest_allowed_versions():
    drift = yaml.safe_load((ROOT / ".github/workflows/drift.yml").read_text())
    runs = " ".join(s.get("run", "") for s in drift["jobs"]["newest"]["steps"])
    assert "nox -s drift" in runs and drift[True]["schedule"]  # yaml reads the key `on` as True
    noxfile = (ROOT / "noxfile.py").read_text()
    assert "def drift(" in noxfile and "def lock(" in noxfile
