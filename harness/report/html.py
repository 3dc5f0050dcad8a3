"""The report as one self-contained HTML page: figures embedded as base64 PNG, no external files."""

from __future__ import annotations

import base64
import html

from harness.report.sections import FIGURES, Section

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 12px; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; }
th { background: #f3f3f3; position: sticky; top: 0; }
td:nth-child(-n+8) { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; }
"""


def render(title: str, sections: list[Section], figures: dict[str, bytes]) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            body.append(f"<p>{html.escape(s.text)}</p>")
        if s.figure:
            data = base64.b64encode(figures[s.figure]).decode()
            body.append(f'<img alt="{html.escape(FIGURES[s.figure])}" src="data:image/png;base64,{data}">')
        if s.table is not None:
            body.append(s.table.to_html(index=False, escape=True, border=0) if len(s.table) else "<p>(none)</p>")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
