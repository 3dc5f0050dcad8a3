"""Shards: --shard auto from the scheduler's environment, a folder per shard, `harness report` merging them; the
executors' missing extras as one line."""

import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.errors import HarnessError
from harness.sweep import shard as sharding


def test_shard_auto_reads_slurm_arrays_and_kubernetes_indexed_jobs():
    assert sharding.resolve("auto", {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4",
                                     "SLURM_ARRAY_TASK_MIN": "0"}) == (4, 4)
    assert sharding.resolve("auto", {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "3",
                                     "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_STEP": "2"}) == (3, 3)
    assert sharding.resolve("auto", {"JOB_COMPLETION_INDEX": "0", "HARNESS_SHARD_COUNT": "2"}) == (1, 2)
    with pytest.raises(HarnessError, match="HARNESS_SHARD_COUNT"):
        sharding.resolve("auto", {"JOB_COMPLETION_INDEX": "0"})
    with pytest.raises(HarnessError, match="found neither SLURM_ARRAY_TASK_ID .* nor JOB_COMPLETION_INDEX"):
        sharding.resolve("auto", {})
    with pytest.raises(HarnessError, match="outside 1..2"):
        sharding.resolve("auto", {"JOB_COMPLETION_INDEX": "2", "HARNESS_SHARD_COUNT": "2"})


def test_shards_write_their_own_folders_and_report_merges_them(run_cli, tiny_experiment, engines_dir, monkeypatch):
    """The README's example as written: two shards on one disk, then one report over the sweep folder."""
    path = tiny_experiment()
    first = run_cli("sweep", path, "--shard", "1/2", "--engines-dir", engines_dir)
    assert "shard 1/2: 2 of 4" in first.output and Path("reports/tiny/shard-1-of-2/cells").is_dir()
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    monkeypatch.setenv("HARNESS_SHARD_COUNT", "2")
    second = run_cli("sweep", path, "--shard", "auto", "--engines-dir", engines_dir)
    assert "shard 2/2: 2 of 4" in second.output
    shards = [set(pd.read_csv(f"reports/tiny/shard-{k}-of-2/results.csv")["cell_id"]) for k in (1, 2)]
    assert len(shards[0]) == len(shards[1]) == 2 and not shards[0] & shards[1]
    merged = run_cli("report", "reports/tiny", "-o", "reports/merged")
    assert "merged 4 cells (2 ok, 2 failed)" in merged.output, merged.output
    assert set(pd.read_csv("reports/merged/results.csv")["cell_id"]) == shards[0] | shards[1]


def test_shard_auto_outside_a_scheduler_and_missing_executor_extras_are_one_line(run_cli, tiny_experiment,
                                                                                monkeypatch):
    for name in ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"):
        monkeypatch.delenv(name, raising=False)
    result = run_cli("sweep", tiny_experiment(), "--shard", "auto")
    assert result.exit_code == 2 and "--shard auto: found neither" in result.output
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "submitit", None)
    for executor, module in (("ray", "ray"), ("slurm", "submitit")):
        result = run_cli("sweep", tiny_experiment(), "--executor", executor)
        assert result.exit_code == 2, result.output
        assert f"{module} is not installed: install it with pip install -e '.[{executor}]'" in result.output
    result = run_cli("sweep", tiny_experiment(), "--address", "auto")
    assert result.exit_code == 2 and "--address is the Ray cluster's address" in result.output
