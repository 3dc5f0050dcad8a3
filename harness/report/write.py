"""Write a merged results table as report.md (+ PNGs), a self-contained report.html and, optionally, CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.fileio import atomic_write
from harness.report import html, markdown
from harness.report.plots import figures
from harness.report.sections import build_sections


def write_report(df: pd.DataFrame, out_dir: Path, title: str, tables: bool = True) -> dict[str, Path]:
    """`tables` also writes results.csv and results.parquet (a sweep's own folder already has them)."""
    out_dir = Path(out_dir)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    figs = figures(df)
    files = {name: f"plots/{name}.png" for name in figs}
    for name, png in figs.items():
        atomic_write(out_dir / files[name], png)
    sections = build_sections(df, figs)
    written = {"markdown": out_dir / "report.md", "html": out_dir / "report.html"}
    atomic_write(written["markdown"], markdown.render(title, sections, files))
    atomic_write(written["html"], html.render(title, sections, figs))
    if tables:
        written["csv"] = out_dir / "results.csv"
        atomic_write(written["csv"], df.to_csv(index=False))
        atomic_write(out_dir / "results.parquet", lambda tmp: df.to_parquet(tmp, index=False))
    return written
