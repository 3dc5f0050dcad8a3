"""One line per finished cell with the count, the cell's time and an ETA from the cells timed so far."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Hashable


def cell_kinds(cells: list) -> list[tuple]:
    """What a cell's time resembles: backend, precision, mode, whether it is the first of its work group (the one
    that pays for calibration and export), and how it is measured (a max-QPS search takes many runs)."""
    from harness.sweep.matrix import work_key

    seen: set[tuple] = set()
    kinds = []
    for cell in cells:
        key = work_key(cell)
        kinds.append((cell.backend, cell.precision, cell.mode, key not in seen, getattr(cell, "scenario", None)))
        seen.add(key)
    return kinds


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """The ETA sums, over the cells left, the mean time of the finished cells of the same kind (a cell that
    calibrates and exports costs far more than its neighbours that reuse the ONNX); a kind not seen yet is
    estimated from all finished cells. Cells may finish in any order (executors run groups in parallel)."""

    def __init__(self, kinds: list[Hashable], echo: Callable[[str], None]):
        self.left = Counter(kinds)
        self.echo, self.total, self.done = echo, len(kinds), 0
        self.times: dict[Hashable, list[float]] = {}
        self.started = time.perf_counter()

    def eta(self) -> float:
        every = [t for ts in self.times.values() for t in ts]
        mean = {k: sum(ts) / len(ts) for k, ts in self.times.items()}
        overall = sum(every) / len(every)
        return sum(n * mean.get(kind, overall) for kind, n in self.left.items())

    def finished(self, label: str, status: str, seconds: float, kind: Hashable) -> None:
        self.times.setdefault(kind, []).append(seconds)
        self.left[kind] -= 1
        self.done += 1
        elapsed = time.perf_counter() - self.started
        self.echo(f"[{self.done}/{self.total}] {status:<6} {label}  {seconds:.1f} s  "
                  f"elapsed {_clock(elapsed)}  ETA {_clock(self.eta())}")
