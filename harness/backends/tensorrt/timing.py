"""A trtexec-style timed loop: warm-up by time, then at least N queries and D seconds, CUDA events per query.

Each query records four events on its stream: before H2D, before the enqueue, after the enqueue, after D2H.
So GPU compute is the engine's work alone, apart from the copies, the host's enqueue time and the host latency
of the whole query. As trtexec does, one query is kept in flight ahead of the one being waited on (with N
streams, N + 1 queries), so the GPU never idles while the host collects a result: throughput is samples over the
host wall time of the timed queries, and may exceed 1 / latency.

Which defaults apply follows the installed TensorRT, as trtexec's do: 11.x turned on CUDA graphs, spin-wait and
no data transfers (opt-outs --no-cuda-graph, --no-spin-wait, --include-data-transfers); 10.x has them off
(opt-ins --cuda-graph, --spin-wait, --no-data-transfers).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.backends.base import Timing
from harness.cuda import Cuda
from harness.errors import HarnessError

# (setting, TensorRT 10.x opt-in flag, TensorRT 11.x opt-out flag); 11.x's default is the opt-in's effect.
SETTINGS = (("cuda_graph", "--cuda-graph", "--no-cuda-graph"), ("spin_wait", "--spin-wait", "--no-spin-wait"),
            ("no_data_transfers", "--no-data-transfers", "--include-data-transfers"))


def convention(tensorrt_version: str) -> str:
    """'trtexec 11' for TensorRT 11 and later, else 'trtexec 10'."""
    return "trtexec 11" if int(str(tensorrt_version).split(".")[0]) >= 11 else "trtexec 10"


def defaults(conv: str) -> dict[str, bool]:
    return {name: conv == "trtexec 11" for name, _, _ in SETTINGS}


def resolve(conv: str, opt_in: dict[str, bool], opt_out: dict[str, bool]) -> tuple[dict[str, bool], list[str]]:
    """The settings for one run: the convention's defaults, changed by the flags given; and the notes to print.

    An opt-in that is already the default (11.x's `--cuda-graph`) is a no-op, as trtexec 11's `--useCudaGraph`.
    """
    settings, notes = defaults(conv), []
    for name, on, off in SETTINGS:
        if opt_in.get(name) and opt_out.get(name):
            raise HarnessError(f"{on} and {off} contradict each other: give one")
        if opt_in.get(name):
            if settings[name]:
                notes.append(f"{on} is the default with TensorRT 11 (trtexec 11 convention); it changes nothing")
            settings[name] = True
        if opt_out.get(name):
            settings[name] = False
    return settings, notes


@dataclass
class Query:
    """What one query does on its stream; `h2d`/`d2h` are None when data transfers are left out."""

    stream: object
    enqueue: Callable[[], None]
    h2d: Callable[[], None] | None
    d2h: Callable[[], None] | None
    batch: int


def describe(transfers: bool, graph: str, spin_wait: bool, conv: str, streams: int) -> str:
    """Say what each reported figure includes (bench prints this above the table)."""
    latency = ("latency = H2D + GPU compute + D2H per query (trtexec's Latency)" if transfers else
               "latency = GPU compute only (no data transfers: input and output stay on the GPU)")
    launch = "CUDA graph launch" if graph == "captured" else "execute_async_v3"
    parts = [f"{conv} convention", latency,
             "gpu_compute = the engine's enqueued work (CUDA events, non-default stream)",
             f"enqueue = host time of {launch}",
             "host = host wall time per query including synchronization",
             "throughput = samples / host wall time, one query in flight ahead"]
    if streams > 1:
        parts.append(f"{streams} streams, one execution context each")
    if graph not in ("", "captured"):
        parts.append(f"CUDA graph capture failed ({graph}); timed plain enqueues")
    parts.append("events polled (spin wait)" if spin_wait else "blocking-sync events")
    return "; ".join(parts)


class _Issued:
    """One query's events and host clock readings while it is in flight."""

    def __init__(self, cuda: Cuda, spin_wait: bool):
        self.spin_wait = spin_wait
        self.start, self.before, self.after, self.end = (cuda.event(blocking=not spin_wait) for _ in range(4))
        self.t0 = self.enqueue_ms = 0.0

    def issue(self, query: Query, clock) -> None:
        self.t0 = clock()
        self.start.record(query.stream)
        if query.h2d:
            query.h2d()
        self.before.record(query.stream)
        e0 = clock()
        query.enqueue()
        self.enqueue_ms = (clock() - e0) * 1e3
        self.after.record(query.stream)
        if query.d2h:
            query.d2h()
        self.end.record(query.stream)

    def wait(self, clock) -> tuple[float, float, float, float, float]:
        if self.spin_wait:
            while not self.end.query():
                pass
        else:
            self.end.synchronize()
        host_ms = (clock() - self.t0) * 1e3
        return (self.start.elapsed_ms(self.before), self.before.elapsed_ms(self.after),
                self.after.elapsed_ms(self.end), self.enqueue_ms, host_ms)


def time_queries(cuda: Cuda, queries: list[Query], warmup_s: float, iterations: int, duration_s: float,
                 spin_wait: bool = False) -> tuple[dict[str, np.ndarray], float]:
    """Per-query component times (ms) of the timed part and its host wall time (s).

    Query i goes to stream i mod N; after issuing one, the oldest is waited on once N + 1 are in flight. The
    wall time runs from the first timed issue to the last timed completion.
    """
    clock = time.perf_counter
    ring = [_Issued(cuda, spin_wait) for _ in range(len(queries) + 1)]
    inflight: deque[_Issued] = deque()
    rows: list[tuple] = []
    count = 0

    def step(record: bool) -> None:
        nonlocal count
        slot = ring[count % len(ring)]
        slot.issue(queries[count % len(queries)], clock)
        inflight.append(slot)
        count += 1
        if len(inflight) > len(queries):
            done = inflight.popleft().wait(clock)
            if record:
                rows.append(done)

    def drain(record: bool) -> None:
        while inflight:
            done = inflight.popleft().wait(clock)
            if record:
                rows.append(done)

    stop = clock() + warmup_s
    step(False)
    while clock() < stop:
        step(False)
    drain(False)
    first = clock()
    deadline = first + duration_s
    issued = 0
    while issued < iterations or clock() < deadline:
        step(True)
        issued += 1
    drain(True)
    wall = clock() - first
    h2d, compute, d2h, enqueue, host = np.asarray(rows, dtype=np.float64).T
    parts = {"gpu_compute_ms": compute, "enqueue_ms": enqueue, "host_ms": host}
    if queries[0].h2d:
        parts["h2d_ms"] = h2d
    if queries[0].d2h:
        parts["d2h_ms"] = d2h
    return parts, wall


def trtexec_timing(cuda: Cuda, queries: list[Query], warmup_s: float, iterations: int, duration_s: float,
                   graph: str = "", spin_wait: bool = False, conv: str = "trtexec 10") -> Timing:
    parts, wall = time_queries(cuda, queries, warmup_s, iterations, duration_s, spin_wait)
    latency = parts["gpu_compute_ms"] + parts.get("h2d_ms", 0.0) + parts.get("d2h_ms", 0.0)
    includes = describe(queries[0].h2d is not None, graph, spin_wait, conv, len(queries))
    return Timing(latency, wall, queries[0].batch, includes, parts, convention=conv, streams=len(queries))
