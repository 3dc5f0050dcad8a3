"""One line per finished cell with the count, the cell's time and an ETA from the cells timed so far."""

from __future__ import annotations

import time
from collections.abc import Callable


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """The ETA is the mean time of the cells run in this process times the cells left: cached work makes
    later cells cheaper, so it errs long, never short, early on."""

    def __init__(self, total: int, echo: Callable[[str], None]):
        self.total, self.echo = total, echo
        self.done = 0
        self.started = time.perf_counter()

    def finished(self, label: str, status: str, seconds: float) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.started
        left = self.total - self.done
        eta = elapsed / self.done * left
        self.echo(f"[{self.done}/{self.total}] {status:<6} {label}  {seconds:.1f} s  "
                  f"elapsed {_clock(elapsed)}  ETA {_clock(eta)}")
