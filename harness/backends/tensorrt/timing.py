"""A trtexec-style timed loop: warm-up by time, then at least N queries and D seconds, CUDA events per query.

Each query records four events on the runner's stream: before H2D, before the enqueue, after the enqueue,
after D2H. So GPU compute is the engine's work alone, apart from the copies, the host's enqueue time and the
host latency of the whole query; throughput is samples over the host wall time of the timed queries, as
trtexec defines it. Queries are issued one at a time, so no copy overlaps another query's compute.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.backends.base import Timing
from harness.cuda import Cuda


@dataclass
class Query:
    """What one query does on the stream; `h2d`/`d2h` are None when data transfers are left out."""

    stream: object
    enqueue: Callable[[], None]
    h2d: Callable[[], None] | None
    d2h: Callable[[], None] | None
    batch: int


def describe(transfers: bool, graph: str, spin_wait: bool) -> str:
    """Say what each reported figure includes (bench prints this above the table)."""
    latency = ("latency = H2D + GPU compute + D2H per query (trtexec's Latency)" if transfers else
               "latency = GPU compute only (--no-data-transfers: input and output stay on the GPU)")
    launch = "CUDA graph launch" if graph == "captured" else "execute_async_v3"
    parts = [latency,
             "gpu_compute = the engine's enqueued work (CUDA events, non-default stream)",
             f"enqueue = host time of {launch}",
             "host = host wall time per query including synchronization",
             "throughput = samples / host wall time"]
    if graph not in ("", "captured"):
        parts.append(f"CUDA graph capture failed ({graph}); timed plain enqueues")
    if spin_wait:
        parts.append("events polled (spin wait)")
    return "; ".join(parts)


def time_queries(cuda: Cuda, query: Query, warmup_s: float, iterations: int, duration_s: float,
                 spin_wait: bool = False) -> tuple[dict[str, np.ndarray], float]:
    """Per-query component times (ms) of the timed part and its host wall time (s)."""
    start, before, after, end = (cuda.event(blocking=not spin_wait) for _ in range(4))
    clock = time.perf_counter

    def wait():
        if spin_wait:
            while not end.query():
                pass
        else:
            end.synchronize()

    def run() -> tuple[float, float, float, float, float]:
        t0 = clock()
        start.record(query.stream)
        if query.h2d:
            query.h2d()
        before.record(query.stream)
        e0 = clock()
        query.enqueue()
        e1 = clock()
        after.record(query.stream)
        if query.d2h:
            query.d2h()
        end.record(query.stream)
        wait()
        t1 = clock()
        return (start.elapsed_ms(before), before.elapsed_ms(after), after.elapsed_ms(end),
                (e1 - e0) * 1e3, (t1 - t0) * 1e3)

    stop = clock() + warmup_s
    run()
    while clock() < stop:
        run()
    rows = []
    first = clock()
    deadline = first + duration_s
    while len(rows) < iterations or clock() < deadline:
        rows.append(run())
    wall = clock() - first
    h2d, compute, d2h, enqueue, host = np.asarray(rows, dtype=np.float64).T
    parts = {"gpu_compute_ms": compute, "enqueue_ms": enqueue, "host_ms": host}
    if query.h2d:
        parts["h2d_ms"] = h2d
    if query.d2h:
        parts["d2h_ms"] = d2h
    return parts, wall


def trtexec_timing(cuda: Cuda, query: Query, warmup_s: float, iterations: int, duration_s: float,
                   graph: str = "", spin_wait: bool = False) -> Timing:
    parts, wall = time_queries(cuda, query, warmup_s, iterations, duration_s, spin_wait)
    latency = parts["gpu_compute_ms"] + parts.get("h2d_ms", 0.0) + parts.get("d2h_ms", 0.0)
    return Timing(latency, wall, query.batch, describe(query.h2d is not None, graph, spin_wait), parts)
