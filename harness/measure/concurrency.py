"""A fixed number of requests in flight (perf_analyzer's concurrency mode), level by level, and the knee.

At level N, N one-sample requests are kept outstanding against a BatchServer: each answer submits the next
request at once, so the server always holds N and batches whatever has queued (up to the engine's batch). After
a warm-up, throughput is the answers inside the measured window over its length, and latency is each of those
answers' time from submit to answer (harness's request queue included, a few tens of microseconds).

The knee is the last level that still raised throughput by at least KNEE_GAIN over the level before it; beyond it,
more requests in flight add latency, not throughput. None when throughput still rises at the highest level.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from harness.backends.base import Runner
from harness.errors import HarnessError, first_line
from harness.measure.serving import WORKERS, BatchServer, Request

KNEE_GAIN = 0.10
WARMUP_S = 0.2


@dataclass
class Level:
    concurrency: int
    requests: int  # answered inside the window
    window_s: float
    throughput_ips: float
    latency_p50_ms: float | None
    latency_p90_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None
    mean_batch: float
    knee: bool = False
    energy: dict = field(default_factory=dict)
    latencies_ms: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("latencies_ms")
        return {**{k: v for k, v in out.items() if k != "energy"}, **self.energy}


def run_level(runner: Runner, library: np.ndarray, concurrency: int, duration_s: float, max_batch: int,
              warmup_s: float = WARMUP_S, workers: int = WORKERS, streams: int = 1, meter=None) -> Level:
    """One level; `meter` (an EnergyMeter) is entered for the measured window only."""
    window = {"start": math.inf, "end": math.inf}
    latencies: list[float] = []
    outstanding = [concurrency]
    drained = threading.Event()
    next_index = iter(range(1 << 62))
    holder: list[BatchServer] = []

    def answer(requests: list[Request], out) -> None:
        now = time.perf_counter()
        again = 0
        for r in requests:
            if window["start"] <= now <= window["end"]:
                latencies.append((now - r.issued) * 1e3)
            if now < window["end"]:
                again += 1
            else:
                outstanding[0] -= 1
        if again:
            holder[0].submit((next(next_index) % len(library), None) for _ in range(again))
        if outstanding[0] == 0:
            drained.set()

    with BatchServer(runner, library, max_batch, answer, workers, streams) as server:
        holder.append(server)
        server.submit((next(next_index) % len(library), None) for _ in range(concurrency))
        time.sleep(warmup_s)
        batches_before = len(server.batch_sizes)
        window["start"] = time.perf_counter()
        if meter is not None:
            meter.__enter__()
        time.sleep(duration_s)
        window["end"] = time.perf_counter()
        if meter is not None:
            meter.__exit__(None, None, None)
        batches = server.batch_sizes[batches_before:]
        while not drained.wait(0.1) and server.error is None:
            pass
    if server.error is not None:
        raise HarnessError(f"the runner failed at concurrency {concurrency}: {first_line(server.error)}") \
            from server.error
    span = window["end"] - window["start"]
    lat = np.asarray(latencies, dtype=np.float64)
    p50, p90, p99 = np.percentile(lat, [50, 90, 99]) if len(lat) else (None, None, None)
    return Level(concurrency, len(lat), span, len(lat) / span, _f(p50), _f(p90), _f(p99),
                 float(lat.max()) if len(lat) else None, float(np.mean(batches)) if batches else 0.0,
                 energy=meter.columns(len(lat)) if meter is not None else {}, latencies_ms=lat)


def _f(value) -> float | None:
    return None if value is None else float(value)


def mark_knee(levels: list[Level]) -> Level | None:
    """Set `knee` on the last level that raised throughput by KNEE_GAIN or more over the one before; return it."""
    ordered = sorted(levels, key=lambda lv: lv.concurrency)
    for before, after in zip(ordered, ordered[1:], strict=False):
        if after.throughput_ips < (1 + KNEE_GAIN) * before.throughput_ips:
            before.knee = True
            return before
    return None


def run_levels(runner: Runner, library: np.ndarray, levels: list[int], duration_s: float, max_batch: int,
               workers: int = WORKERS, streams: int = 1, meter: Callable[[], object] | None = None,
               log: Callable[[str], None] = lambda message: None) -> list[Level]:
    """Every level in order (each with a fresh EnergyMeter from `meter()` when given), the knee marked."""
    out = []
    for n in levels:
        out.append(run_level(runner, library, n, duration_s, max_batch, workers=workers, streams=streams,
                             meter=meter() if meter else None))
        p99 = out[-1].latency_p99_ms
        log(f"concurrency {n}: {out[-1].throughput_ips:.4g} samples/s"
            + (f", p99 {p99:.4g} ms" if p99 is not None else ", nothing answered in the window"))
    mark_knee(out)
    return out


def parse_levels(text: str, option: str = "--concurrency") -> list[int]:
    """'1,2,4,8' -> [1, 2, 4, 8] (sorted, distinct positive integers), or a one-line error."""
    try:
        levels = sorted({int(v) for v in str(text).split(",") if v.strip()})
    except ValueError:
        levels = []
    if not levels or levels[0] < 1:
        raise HarnessError(f"{option} {text!r} must be positive integers separated by commas, like 1,2,4,8")
    return levels
