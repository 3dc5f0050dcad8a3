"""Per-cell claims, so two `harness sweep` processes on one results folder split the cells instead of both
running all of them (and timing each other's load).

A claim is an exclusive flock on `<results>/.claims/<cell id>.lock`, held while the cell runs. The kernel drops it
when its holder exits, kill -9 included, so a claim never goes stale. A process skips a cell another holds and
takes the next; when it has nothing else to run, it waits for the others' cells, and runs any whose holder died
without storing it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
FOLDER = ".claims"


class CellClaims:
    def __init__(self, root: Path, log: Callable[[str], None]):
        self.folder = Path(root) / FOLDER
        self.cells = Path(root) / "cells"
        self.log = log

    def _stamp(self, cid: str) -> int | None:
        try:
            return (self.cells / f"{cid}.json").stat().st_mtime_ns
        except OSError:
            return None

    def _open(self, cid: str) -> int:
        from harness.fileio import WriteFailed, make_folder

        lock = make_folder(self.folder) / f"{cid}.lock"
        try:
            return os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise WriteFailed(lock, exc) from exc

    def _holder(self, fd: int) -> str:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return f"pid {text}" if text.isdigit() else "another process"

    def take(self, items: Iterable[T], cell_id: Callable[[T], str]) -> Iterator[T]:
        """Yield the items this process holds the claim of, holding it until the caller asks for the next.

        An item whose row file changed since the listing (another process stored it) is not yielded.
        """
        items = list(items)
        listed = {cell_id(item): self._stamp(cell_id(item)) for item in items}
        deferred = []
        for item in items:
            fd = self._open(cell_id(item))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.log(f"{cell_id(item)}: being run by another harness sweep ({self._holder(fd)}); taking the next")
                os.close(fd)
                deferred.append(item)
                continue
            yield from self._held(fd, item, cell_id, listed)
        if deferred:
            self.log(f"waiting for {len(deferred)} cell(s) another harness sweep is running")
        for item in deferred:
            fd = self._open(cell_id(item))
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield from self._held(fd, item, cell_id, listed)

    def _held(self, fd: int, item: T, cell_id: Callable[[T], str], listed: dict) -> Iterator[T]:
        try:
            if self._stamp(cell_id(item)) == listed[cell_id(item)]:
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(os.getpid()).encode(), 0)
                yield item
        finally:
            os.close(fd)  # releases the flock
