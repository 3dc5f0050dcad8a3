"""How many intra-op threads ONNX Runtime's CPU provider gets for a timed cell, and whether they spin-wait.

At a small batch a second thread buys nothing (each operator is too small to split; measured on digits-resnet at
batch 1: p50 0.606 ms on one thread, 0.617-0.636 ms on two) but exposes every query to other runnable threads: a
thread preempted mid-operator stalls the others, and a spinning thread burns the core another process needed, so
the tail and the repeat-to-repeat drift grow. So batches below SMALL_BATCH run on one thread; larger ones on every
physical core but one (one at least): the spare core takes the harness's own work and the machine's other
processes, which on a 2-core runner beside anything else made two threads no faster than one at batch 32 and far
less steady. Idle threads never spin (a spinning pool holds its cores between operators). Both are ordinary ONNX
Runtime session options (`intra_op_num_threads`, `session.intra_op.allow_spinning`): a deployment that sets them
gets what the sweep measured, and every row records them (`cpu_threads`, `cpu_spin_wait`). `timing.threads` /
`timing.spin_wait` in the experiment file, or `harness sweep --threads`, choose otherwise (all cores on a
dedicated machine, for throughput).
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

SMALL_BATCH = 8
AUTO = "auto"


@cache
def physical_cores() -> int:
    """Distinct (socket, core) pairs in /proc/cpuinfo: what ONNX Runtime's default thread count is; else the
    logical CPU count."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    cores, socket = set(), "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "physical id":
            socket = value.strip()
        elif key.strip() == "core id":
            cores.add((socket, value.strip()))
    return len(cores) or os.cpu_count() or 1


def session_settings(batch: int, threads: int | str = AUTO, spin_wait: bool | str = AUTO) -> dict:
    """{'threads': intra-op threads, 'spin_wait': whether idle threads spin} for a cell of this batch size."""
    if threads == AUTO:
        threads = 1 if batch < SMALL_BATCH else max(1, physical_cores() - 1)
    return {"threads": int(threads), "spin_wait": False if spin_wait == AUTO else bool(spin_wait)}
