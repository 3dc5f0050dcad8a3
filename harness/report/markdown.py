"""The report as short Markdown: the headline, the Pareto front and the failures; the CSV holds the rest."""

from __future__ import annotations

import pandas as pd

from harness.report.sections import Section

SHORT = ("Pareto front", "Serving: LoadGen scenarios and concurrency", "Failed cells")


def md_table(df: pd.DataFrame) -> str:
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def render(title: str, headline: list[str], sections: list[Section], csv: str) -> str:
    out = [f"# {title}", "", *(f"- {s}" for s in headline), ""]
    for s in sections:
        if s.title not in SHORT:
            continue
        out += [f"## {s.title}", "", s.text, ""]
        shown = s.table.text[s.table.shown]
        text = shown.loc[:, [c for c in shown.columns if shown[c].ne("n/a").any()]]
        out += [md_table(text) if len(text) else "(none)", ""]
    out += [f"Every cell and column: [{csv}]({csv}); plots and sortable tables: [report.html](report.html).", ""]
    return "\n".join(out)
