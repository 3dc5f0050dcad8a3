"""Where a sweep's work groups run: here (local, the default), on a Ray cluster, or as a Slurm job array.

An executor is a function (Workspace, work groups) -> rows, yielded as cells finish in any order; run_sweep
stores each row the moment it arrives, so resume, merge, --dry-run and the report do not depend on it.
"""

from __future__ import annotations

from harness.errors import HarnessError

EXECUTORS = ("local", "ray", "slurm")


def make_executor(name: str, address: str | None = None):
    if address and name != "ray":
        raise HarnessError("--address is the Ray cluster's address: use it with --executor ray")
    if name == "ray":
        from harness.sweep.executors.ray_executor import ray_executor

        return ray_executor(address)
    if name == "slurm":
        from harness.sweep.executors.slurm import slurm_executor

        return slurm_executor()
    from harness.sweep.runner import run_local  # torch and ONNX Runtime: only once there is work to run

    return run_local
