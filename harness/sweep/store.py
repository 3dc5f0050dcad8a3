"""Finished cells on disk: one JSON file per cell, written atomically, and the tables rebuilt from them.

A row file either exists whole or not at all (tmp + os.replace), so `kill -9` at any moment loses at most the
cell in flight; results.parquet and results.csv are regenerated from the row files and never trusted as state
(a table that no longer matches the hash recorded when it was written is regenerated on the next run).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click

from harness import cache_integrity
from harness.fileio import atomic_write, clean_stale_temps

CELLS, TABLE = "cells", "results"


# What the tables and reports compute with: a row whose value here has another type is not one of ours.
TEXT = ("cell_id", "model", "dataset", "backend", "precision")
OPTIONAL_TEXT = ("tool", "mode", "calibrator", "baseline_id", "error", "failed_stage", "unstable_reason")
NUMBERS = ("batch", "latency_min_ms", "latency_mean_ms", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms",
           "latency_cv", "latency_p50_lo_ms", "latency_p50_hi_ms", "latency_spread_pct", "latency_drift_pct",
           "repeats_set_aside", "cpu_threads", "repeats", "throughput_ips",
           "top1_pct", "top5_pct", "top1_agreement_pct", "sqnr_db", "max_abs_error", "eval_samples", "qdq_hazards",
           "qdq_float_layers", "engine_size_mb", "build_s", "calib_s", "export_s", "cell_s")


def row_problem(row, stem: str) -> str | None:
    """Why a parsed cell file is not a row harness wrote for cell `stem` (None when it is)."""
    if not isinstance(row, dict):
        return f"holds a JSON {type(row).__name__}, not a row"
    if row.get("cell_id") != stem:
        return f"its cell_id {row.get('cell_id')!r} is not its file name"
    if row.get("status") not in ("ok", "failed"):
        return f"status {row.get('status')!r} is neither ok nor failed"
    for key in TEXT:
        if not isinstance(row.get(key), str):
            return f"{key} {row.get(key)!r} is not text"
    for key in OPTIONAL_TEXT:
        if row.get(key) is not None and not isinstance(row[key], str):
            return f"{key} {row[key]!r} is not text"
    for key in NUMBERS:
        value = row.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"{key} {value!r} is not a number"
    return None


class ResultStore:
    def __init__(self, root: Path, warn: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.cells = self.root / CELLS
        self.warn = warn or (lambda message: click.echo(f"warning: {message}", err=True))
        self._warned: set[tuple[Path, int]] = set()

    def rows(self) -> dict[str, dict]:
        """cell id -> row of every finished cell. A file that is not a row harness wrote (unreadable, or a value
        of the wrong type) is skipped with a warning naming it, and its cell runs again: it never blocks a sweep
        or a report."""
        clean_stale_temps(self.root)
        clean_stale_temps(self.cells)
        rows = {}
        for path in sorted(self.cells.glob("*.json")):
            try:
                row = json.loads(path.read_bytes())
                problem = row_problem(row, path.stem)
            except (OSError, ValueError) as exc:
                problem = f"cannot be read ({type(exc).__name__})"
            if problem is None:
                rows[path.stem] = row
            else:
                self._skip(path, problem)
        return rows

    def _skip(self, path: Path, problem: str) -> None:
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            stamp = 0
        if (path, stamp) not in self._warned:
            self._warned.add((path, stamp))
            self.warn(f"{path}: {problem}; skipped (its cell runs again; delete the file if it is not a cell)")

    def report_is_current(self, report: Path) -> bool:
        """True when `report` is newer than every row file and the tables still match what was written, so
        re-rendering would change nothing."""
        rows = [p.stat().st_mtime_ns for p in self.cells.glob("*.json")]
        return (report.is_file() and bool(rows) and report.stat().st_mtime_ns >= max(rows)
                and cache_integrity.check(self.root / f"{TABLE}.csv") is not None)

    def write(self, row: dict) -> Path:
        """Store a finished cell; a failure to write is `cannot write FILE: reason` (WriteFailed) and stores nothing."""
        return atomic_write(self.cells / f"{row['cell_id']}.json", json.dumps(row, indent=1, sort_keys=True,
                                                                               default=str))

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
        atomic_write(self.root / f"{TABLE}.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
        atomic_write(csv, lambda tmp: frame.to_csv(tmp, index=False))
        cache_integrity.commit(csv, [self.root / f"{TABLE}.parquet"])
        return csv
