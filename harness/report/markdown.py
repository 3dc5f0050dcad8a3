"""The report as Markdown: tables inline, figures as PNG files beside it (GitHub renders both)."""

from __future__ import annotations

import pandas as pd

from harness.report.sections import FIGURES, Section


def md_table(df: pd.DataFrame) -> str:
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def render(title: str, sections: list[Section], figure_files: dict[str, str]) -> str:
    out = [f"# {title}", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        if s.text:
            out += [s.text, ""]
        if s.figure:
            out += [f"![{FIGURES[s.figure]}]({figure_files[s.figure]})", ""]
        if s.table is not None:
            out += [md_table(s.table) if len(s.table) else "(none)", ""]
    return "\n".join(out)
