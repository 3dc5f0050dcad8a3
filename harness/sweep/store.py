"""Finished cells on disk: one JSON file per cell, written atomically, and the tables rebuilt from them.

A row file either exists whole or not at all (tmp + os.replace), so `kill -9` at any moment loses at most the
cell in flight; results.parquet and results.csv are regenerated from the row files and never trusted as state.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.errors import HarnessError
from harness.fileio import atomic_write

CELLS, TABLE = "cells", "results"


class ResultStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.cells = self.root / CELLS

    def rows(self) -> dict[str, dict]:
        """cell id -> row of every finished cell; a row file that does not parse is skipped and redone."""
        rows = {}
        for path in sorted(self.cells.glob("*.json")):
            try:
                row = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(row, dict) and row.get("cell_id") == path.stem:
                rows[path.stem] = row
        return rows

    def report_is_current(self, report: Path) -> bool:
        """True when `report` is newer than every row file, so re-rendering it would change nothing."""
        rows = [p.stat().st_mtime_ns for p in self.cells.glob("*.json")]
        return report.is_file() and bool(rows) and report.stat().st_mtime_ns >= max(rows)

    def write(self, row: dict) -> Path:
        self.cells.mkdir(parents=True, exist_ok=True)
        path = self.cells / f"{row['cell_id']}.json"
        data = json.dumps(row, indent=1, sort_keys=True, default=str)
        atomic_write(path, data)
        return path

    def write_tables(self, order: list[str]) -> Path | None:
        """results.parquet and results.csv of the finished cells among `order` (matrix order), derived columns
        included; returns the CSV path, or None when no cell has finished yet."""
        from harness.report.merge import results_frame

        rows = self.rows()
        finished = [rows[i] for i in order if i in rows]
        if not finished:
            return None
        frame = results_frame(finished)
        csv = self.root / f"{TABLE}.csv"
        try:
            atomic_write(self.root / f"{TABLE}.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
            atomic_write(csv, lambda tmp: frame.to_csv(tmp, index=False))
        except OSError as exc:
            raise HarnessError(f"cannot write the results table under {self.root}: {exc.strerror}") from exc
        return csv
