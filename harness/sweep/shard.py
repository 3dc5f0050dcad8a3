"""`--shard K/N` or `--shard auto`: which slice of the matrix this process runs, and the folder it writes.

`auto` reads the scheduler that started the process, so one command line serves every task of a Slurm job
array or a Kubernetes Indexed Job.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from harness.errors import HarnessError
from harness.sweep.matrix import parse_shard

COUNT_ENV = "HARNESS_SHARD_COUNT"  # Kubernetes gives the index only: the Job spec passes its completions here


def _int(environ: Mapping[str, str], name: str) -> int:
    try:
        return int(environ[name])
    except ValueError:
        raise HarnessError(f"--shard auto: {name}={environ[name]!r} is not an integer") from None


def from_scheduler(environ: Mapping[str, str]) -> tuple[int, int]:
    """(K, N), 1-based, from a Slurm job array or a Kubernetes Indexed Job."""
    if "SLURM_ARRAY_TASK_ID" in environ and "SLURM_ARRAY_TASK_COUNT" in environ:
        # --array=1-8 or --array=0-14:2 number their tasks from MIN in steps of STEP.
        first = _int(environ, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in environ else 0
        step = _int(environ, "SLURM_ARRAY_TASK_STEP") if "SLURM_ARRAY_TASK_STEP" in environ else 1
        k, n = (_int(environ, "SLURM_ARRAY_TASK_ID") - first) // step + 1, _int(environ, "SLURM_ARRAY_TASK_COUNT")
        where = "SLURM_ARRAY_TASK_ID/MIN/STEP/COUNT"
    elif "JOB_COMPLETION_INDEX" in environ:
        if COUNT_ENV not in environ:
            raise HarnessError(f"--shard auto: JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but {COUNT_ENV} "
                               "is not; set it in the Job's env to its spec.completions")
        k, n = _int(environ, "JOB_COMPLETION_INDEX") + 1, _int(environ, COUNT_ENV)
        where = f"JOB_COMPLETION_INDEX/{COUNT_ENV}"
    else:
        raise HarnessError("--shard auto: found neither SLURM_ARRAY_TASK_ID + SLURM_ARRAY_TASK_COUNT (a Slurm job "
                           f"array) nor JOB_COMPLETION_INDEX + {COUNT_ENV} (a Kubernetes Indexed Job); "
                           "give --shard K/N")
    if not 1 <= k <= n:
        raise HarnessError(f"--shard auto: {where} give shard {k} of {n}, outside 1..{n}")
    return k, n


def resolve(text: str, environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    return from_scheduler(os.environ if environ is None else environ) if text == "auto" else parse_shard(text)


def folder(k: int, n: int) -> str:
    """Each shard's own results folder under reports/<name>/, so shards on one shared disk never collide and
    `harness report reports/<name>` merges them."""
    return f"shard-{k}-of-{n}"
