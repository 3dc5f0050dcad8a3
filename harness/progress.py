"""Progress lines for loops that can run for minutes (calibration, sensitivity analysis, QAT, bisection): what is
being done, how far along, elapsed time and an ETA, from the first unit on, and never more than one line every
few seconds."""

from __future__ import annotations

import time
from collections.abc import Callable


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Ticker:
    """`what done/total  elapsed H:MM:SS  ETA H:MM:SS`: the ETA assumes the units left cost what the done ones did.
    The first unit and the last are always shown; in between, at most one line every `every_s` seconds."""

    def __init__(self, what: str, total: int, log: Callable[[str], None] | None, every_s: float = 2.0):
        self.what, self.total, self.log, self.every_s = what, total, log, every_s
        self.done = 0
        self.start = self.last = time.perf_counter()

    def tick(self, n: int = 1, note: str = "") -> None:
        self.done += n
        now = time.perf_counter()
        if self.log is None or (self.done not in (1, self.total) and now - self.last < self.every_s):
            return
        self.last = now
        elapsed = now - self.start
        eta = elapsed / self.done * max(self.total - self.done, 0) if self.done else 0.0
        self.log(f"{self.what} {self.done}/{self.total}{note}  elapsed {clock(elapsed)}  ETA {clock(eta)}")
