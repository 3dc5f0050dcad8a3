"""`harness sweep --executor slurm`: one Slurm job array over the work groups, submitted through submitit.

Each array task runs one work group and writes each row into the sweep's results folder as it finishes, so the
folder must be on a disk the nodes share (as must `--engines-dir`, or each node keeps its own cache). The driver
waits for the array and reports each task's rows; a task that fails (node lost, time limit) is submitted again
with its unfinished cells up to `executor.max_retries` times, then its cells become failed rows with the reason.
Timing isolation is Slurm's: a GPU task holds `executor.gpus_per_task` whole GPUs, a task's CPU cells time on the
`cpus_per_task` cores Slurm binds to it.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

from harness.errors import HarnessError, MachineFault, require
from harness.sweep.executors.groups import is_gpu, split_by_device
from harness.sweep.experiment import Experiment
from harness.sweep.matrix import Cell, cell_id
from harness.sweep.runner import Workspace, lost_row, run_group
from harness.sweep.store import ResultStore


def _run_task(exp: Experiment, engines_dir: str, store_root: str, cells: list[Cell]) -> dict:
    """On a node: run the cells and store each row at once; returns the ids stored and the machine fault that
    stopped the task, if one did (the driver then stops the run instead of storing failed rows)."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID", "local"))
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    node = f"{socket.gethostname()} (slurm job {job}{'_' + task if task else ''})"
    store = ResultStore(Path(store_root))
    ws = Workspace(exp, Path(engines_dir), store, log=print)
    done = []
    try:
        for row in run_group(ws, cells):
            store.write({**row, "ran_on": node})
            done.append(row["cell_id"])
    except MachineFault as exc:
        return {"stored": done, "machine_fault": f"{exc.message} (on {node})"}
    return {"stored": done, "machine_fault": None}


def _submitter(submitit, exp: Experiment, folder: Path, gpu: bool, cluster: str | None):
    ex = exp.executor
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(
        name=f"harness-{exp.name}", timeout_min=ex["time_limit_min"], cpus_per_task=ex["cpus_per_task"],
        gpus_per_node=ex["gpus_per_task"] if gpu else 0, slurm_partition=ex["partition"],
        slurm_account=ex["account"], slurm_array_parallelism=ex["array_parallelism"])
    return executor


def slurm_executor(cluster: str | None = "slurm", poll_s: float = 5.0):
    """An executor (Workspace, work groups) -> rows. `cluster` is submitit's: "slurm" from the CLI; "local" runs
    the array as local processes (the tests)."""

    def run(ws: Workspace, groups: list[list[Cell]]) -> Iterator[dict]:
        submitit = require("submitit", "slurm")
        if cluster == "slurm" and not shutil.which("sbatch"):
            raise HarnessError("--executor slurm: sbatch is not on PATH; run the sweep where Slurm jobs are "
                               "submitted (a login node)")
        exp = ws.exp
        folder = Path(exp.executor["logs"] or ws.store.root / "slurm").resolve()
        engines_dir, store_root = str(Path(ws.engines_dir).resolve()), str(ws.store.root.resolve())
        todo = [unit for group in groups for unit in split_by_device(group)]
        attempts = 0
        while todo:
            jobs = {}
            for gpu in (True, False):
                units = [u for u in todo if is_gpu(u[0]) == gpu]
                if units:
                    submitter = _submitter(submitit, exp, folder, gpu, cluster)
                    n = len(units)
                    submitted = submitter.map_array(_run_task, [exp] * n, [engines_dir] * n, [store_root] * n, units)
                    jobs.update(zip(submitted, units, strict=True))
            ws.log(f"submitted {len(jobs)} Slurm array task(s); logs in {folder}")
            todo = []
            try:
                for job in submitit.helpers.as_completed(list(jobs), poll_frequency=poll_s):
                    unit = jobs.pop(job)
                    stored = ws.store.rows()
                    yield from (stored[i] for i in (cell_id(exp, c) for c in unit) if i in stored)
                    left = [c for c in unit if cell_id(exp, c) not in stored]
                    if not left:
                        continue
                    fault = _machine_fault(job)
                    if fault:
                        raise MachineFault(fault)
                    error = _job_error(job)
                    if attempts < exp.executor["max_retries"]:
                        ws.log(f"Slurm task {job.job_id} failed ({error}); submitting its {len(left)} cell(s) again")
                        todo.append(left)
                    else:
                        yield from (lost_row(exp, c, "worker", f"the Slurm task failed after {attempts + 1} "
                                             f"attempt(s) (executor.max_retries {exp.executor['max_retries']}): "
                                             f"{error}") for c in left)
            finally:
                for job in jobs:  # Ctrl-C (or any exit before the array ends): nothing keeps running unseen
                    job.cancel(check=False)
            attempts += 1

    return run


def _machine_fault(job) -> str | None:
    """The machine fault that stopped a finished task, if one did."""
    try:
        result = job.result()
    except Exception:  # the task failed another way: _job_error says how
        return None
    return result.get("machine_fault") if isinstance(result, dict) else None


def _job_error(job) -> str:
    try:
        job.result()
    except Exception as exc:  # submitit raises the job's exception, or why the job never finished
        lines = [line for line in str(exc).splitlines() if line.strip()]
        return (lines[-1] if lines else type(exc).__name__)[:300]
    return "the task ended without storing its rows"
