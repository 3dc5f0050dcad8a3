"""A sweep's progress from its first second: a line per calibration + export, per timed cell and per finished cell,
each with the count, elapsed time and an ETA over everything left."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Hashable

from harness.progress import clock


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


class Progress:
    """The ETA sums, over the cells left, the mean time of the finished cells of the same kind (a cell that
    calibrates and exports costs far more than its neighbours that reuse the ONNX); a kind not seen yet is
    estimated from all finished cells. Cells may finish in any order (executors run groups in parallel).

    Where the steps of the cells run in this process, `phases` (name -> (units, seconds a unit is expected to
    take before one is measured)) counts them too: calibration + export, build, timing, evaluation. Each step
    reported with `step` then feeds the ETA at once, so it covers the whole run from its first second; a cell's
    own time then counts only what its steps did not (no second is counted twice).
    """

    def __init__(self, kinds: list[Hashable], echo: Callable[[str], None],
                 phases: dict[str, tuple[int, float]] | None = None):
        self.left = Counter(kinds)
        self.echo, self.total, self.done = echo, len(kinds), 0
        self.times: dict[Hashable, list[float]] = {}
        self.phases = {name: [units, 0, prior, []] for name, (units, prior) in (phases or {}).items()}
        self.in_cell = 0.0  # seconds of steps reported since the last finished cell
        self.started = time.perf_counter()

    def _phases_eta(self) -> float:
        total = 0.0
        for units, done, prior, seconds in self.phases.values():
            total += max(units - done, 0) * (sum(seconds) / len(seconds) if seconds else prior)
        return total

    def eta(self) -> float:
        every = [t for ts in self.times.values() for t in ts]
        mean = {k: sum(ts) / len(ts) for k, ts in self.times.items()}
        overall = sum(every) / len(every) if every else 0.0
        return sum(n * mean.get(kind, overall) for kind, n in self.left.items()) + self._phases_eta()

    def _line(self, head: str, what: str, seconds: float) -> None:
        self.echo(f"{head} {what}  {seconds:.1f} s  elapsed {clock(time.perf_counter() - self.started)}  "
                  f"ETA {clock(self.eta())}")

    def step(self, phase: str, seconds: float | None, what: str | None = None) -> None:
        """A unit of `phase` is done: `seconds` it took (None: served from a cache, which says nothing about the
        cost of the next); with `what`, a line says so."""
        state = self.phases.get(phase)
        if state is None:
            return
        state[1] += 1
        if seconds is not None:
            state[3].append(seconds)
            self.in_cell += seconds
        if what:
            self._line(f"[{phase} {min(state[1], state[0])}/{state[0]}]", what, seconds or 0.0)

    def begin_cell(self) -> None:
        """A cell starts here: steps reported from now on are part of its time."""
        self.in_cell = 0.0

    def finished(self, label: str, status: str, seconds: float, kind: Hashable) -> None:
        self.times.setdefault(kind, []).append(max(seconds - self.in_cell, 0.0))
        self.in_cell = 0.0
        self.left[kind] -= 1
        self.done += 1
        self._line(f"[{self.done}/{self.total}] {status:<6}", label, seconds)
