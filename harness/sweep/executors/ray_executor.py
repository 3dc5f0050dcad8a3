"""`harness sweep --executor ray`: work groups as Ray tasks, rows streamed back and stored as each cell finishes.

Isolation of timings: a task with GPU cells holds one whole GPU (`num_gpus=1`, never a fraction: two timings on
one GPU disturb each other), plus `accelerator_type` when the experiment names a GPU model; a task with CPU cells
holds the node's timing slot, a custom resource of 1 per node (`harness_timing_slot`), so no two CPU timings
share a node's cores. A cluster started by `ray start` must declare the slot:
`ray start ... --resources='{"harness_timing_slot": 1}'`; a local cluster started by the sweep declares it.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from harness.errors import HarnessError, MachineFault, require
from harness.fileio import atomic_write
from harness.sweep.executors.groups import is_gpu, split_by_device
from harness.sweep.experiment import Experiment
from harness.sweep.matrix import Cell, cell_id
from harness.sweep.runner import Workspace, lost_row, run_group
from harness.sweep.store import ResultStore

TIMING_SLOT = "harness_timing_slot"


FAULT = "_machine_fault"  # a worker's row that is no row: the machine failed, and the driver stops the run


def _new_files(root: Path, sent: set[str]) -> dict[str, bytes]:
    """Files a cell left under the worker's results folder (latency samples, per-layer and profile tables) that
    were not sent yet: relative path -> bytes."""
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".tmp")):
        rel = path.relative_to(root).as_posix()
        if rel not in sent:
            sent.add(rel)
            files[rel] = path.read_bytes()
    return files


def _run_unit(exp: Experiment, engines_dir: str, cells: list[Cell]) -> Iterator[dict]:
    """On a worker: the unit's rows, each yielded as it finishes, tagged with the node that ran it; the files a
    cell writes beside its row (latency samples for `report compare`, TensorRT's per-layer tables) travel with
    it, since the driver's disk may not be the worker's. A machine fault ends the unit with a FAULT row."""
    import ray

    gpus = ray.get_gpu_ids()
    node = f"{socket.gethostname()} ({ray.util.get_node_ip_address()}{', GPU ' if gpus else ''}" \
           f"{','.join(map(str, gpus))})"
    with tempfile.TemporaryDirectory(prefix="harness-ray-") as tmp:
        ws = Workspace(exp, Path(engines_dir), ResultStore(Path(tmp)), log=lambda _: None)
        sent: set[str] = set()
        try:
            for row in run_group(ws, cells):
                yield {**row, "ran_on": node, "_files": _new_files(Path(tmp), sent)}
        except MachineFault as exc:
            yield {FAULT: f"{exc.message} (on {node})"}


def _connect(ray, address: str | None) -> None:
    """Join the cluster at `address`, or start a local one on this machine that declares its timing slot."""
    if ray.is_initialized():
        return
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": "WARNING"}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(num_cpus=os.cpu_count(), resources={TIMING_SLOT: 1}, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise HarnessError(f"--executor ray: cannot reach the Ray cluster at {address or 'a new local cluster'} "
                           f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); start it with "
                           "ray start --head, or drop --address for a local one") from exc


def _check_cluster(ray, exp: Experiment, units: list[list[Cell]]) -> None:
    """Refuse at once what would otherwise wait forever for a resource no node has."""
    have = ray.cluster_resources()
    if any(is_gpu(u[0]) for u in units):
        if have.get("GPU", 0) < 1:
            raise HarnessError("--executor ray: the cluster has no GPU for the GPU-backend cells (tensorrt); start "
                               "nodes with GPUs, or drop those backends from the experiment")
        accel = exp.executor["accelerator_type"]
        if accel and f"accelerator_type:{accel}" not in have:
            kinds = sorted(k.split(":", 1)[1] for k in have if k.startswith("accelerator_type:")) or ["none"]
            raise HarnessError(f"{exp.path}: executor.accelerator_type: no node of the Ray cluster has a {accel} "
                               f"GPU (it has: {', '.join(kinds)})")
    if any(not is_gpu(u[0]) for u in units) and have.get(TIMING_SLOT, 0) < 1:
        raise HarnessError(f"--executor ray: no node declares the timing slot the CPU cells wait for; start each "
                           f"node with ray start ... --resources='{{\"{TIMING_SLOT}\": 1}}'")


def _options(exp: Experiment, unit: list[Cell]) -> dict:
    options = {"max_retries": exp.executor["max_retries"], "retry_exceptions": False, "num_cpus": 1}
    if is_gpu(unit[0]):
        options["num_gpus"] = 1
        if exp.executor["accelerator_type"]:
            options["accelerator_type"] = exp.executor["accelerator_type"]
    else:
        options["resources"] = {TIMING_SLOT: 1}
    return options


def _reason(exc: BaseException, retries: int) -> str:
    text = str(exc).strip().splitlines()
    first = next((line for line in text if line.strip()), type(exc).__name__)
    return f"the Ray task failed after {retries + 1} attempt(s) (executor.max_retries {retries}): {first[:300]}"


def ray_executor(address: str | None):
    """An executor (Workspace, work groups) -> rows in finishing order. Ctrl-C cancels the outstanding tasks;
    every row that arrived before is already stored."""

    def run(ws: Workspace, groups: list[list[Cell]]) -> Iterator[dict]:
        ray = require("ray", "ray")
        units = [unit for group in groups for unit in split_by_device(group)]
        if not units:
            return
        _connect(ray, address)
        _check_cluster(ray, ws.exp, units)
        task = ray.remote(_run_unit)
        exp, engines_dir = ray.put(ws.exp), str(Path(ws.engines_dir).resolve())
        pending = {}
        for unit in units:
            gen = task.options(**_options(ws.exp, unit)).remote(exp, engines_dir, unit)
            pending[gen] = {cell_id(ws.exp, c): c for c in unit}
        try:
            while pending:
                (gen,), _ = ray.wait(list(pending), num_returns=1)
                try:
                    row = ray.get(next(gen))
                except StopIteration:
                    left = pending.pop(gen)  # a finished task owes no rows; any left are lost
                    yield from (lost_row(ws.exp, c, "worker", "the Ray task ended without its row")
                                for c in left.values())
                    continue
                except ray.exceptions.RayError as exc:
                    error = _reason(exc, ws.exp.executor["max_retries"])
                    yield from (lost_row(ws.exp, c, "worker", error) for c in pending.pop(gen).values())
                    continue
                if FAULT in row:
                    raise MachineFault(row[FAULT])
                if pending[gen].pop(row["cell_id"], None) is None:
                    continue  # a retried task re-sends rows that are stored already
                for rel, data in row.pop("_files").items():
                    atomic_write(ws.store.root / rel, data)
                yield row
        finally:
            for gen in pending:
                ray.cancel(gen, force=True)

    return run
