"""Write a merged results table as a short report.md, a self-contained interactive report.html and, optionally,
the full table as CSV and Parquet."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.fileio import atomic_write
from harness.report import html, markdown, serving
from harness.report.charts import figures
from harness.report.sections import build_sections


def write_report(df: pd.DataFrame, out_dir: Path, title: str, tables: bool = True) -> dict[str, Path]:
    """`tables` also writes results.csv and results.parquet (a sweep's own folder already has them)."""
    out_dir = Path(out_dir)
    headline, sections = build_sections(df)
    written = {"markdown": out_dir / "report.md", "html": out_dir / "report.html"}
    atomic_write(written["markdown"], markdown.render(title, headline, sections, "results.csv"))
    atomic_write(written["html"], html.render(title, headline, sections, {**figures(df), **serving.figures(df)}))
    if tables:
        written["csv"] = out_dir / "results.csv"
        atomic_write(written["csv"], df.to_csv(index=False))
        atomic_write(out_dir / "results.parquet", lambda tmp: df.to_parquet(tmp, index=False))
    return written
