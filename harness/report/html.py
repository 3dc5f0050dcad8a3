"""The report as one self-contained, offline HTML page: the headline, interactive Plotly figures (plotly.js
inlined, no CDN) and sortable, filterable tables with a column toggle."""

from __future__ import annotations

import html
import json
import math
from importlib.resources import files

from harness.errors import HarnessError
from harness.report.sections import Section, Table

WIDE = ("speedup", "layer_precision", "max-qps")


def _plotly_js() -> str:
    try:
        from plotly.offline import get_plotlyjs
    except ModuleNotFoundError as exc:
        raise HarnessError("the HTML report needs plotly: pip install -e .") from exc
    return get_plotlyjs()


def _clean(value):
    """JSON without NaN or Infinity (plotly draws null as a gap)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return _clean(value.item())
    return value


def _script_json(value) -> str:
    return json.dumps(_clean(value)).replace("</", "<\\/")


def render_table(t: Table, name: str) -> str:
    esc = html.escape
    toggles = "".join(f'<label><input type="checkbox" class="col"{" checked" if c in t.shown else ""}> {esc(c)}'
                      f"</label>" for c in t.text.columns)
    head = "".join(f"<th>{esc(c)}</th>" for c in t.text.columns)
    numeric = {c: t.keys[c].map(lambda v: isinstance(v, int | float)).all() for c in t.text.columns}
    rows = []
    for i in range(len(t.text)):
        cells = []
        for c in t.text.columns:
            key, css = t.keys[c].iloc[i], [] if numeric[c] else ["text"]
            if c == "stable":
                css.append("stable-col")
            key = "" if isinstance(key, float) and not math.isfinite(key) else key
            cls = f' class="{" ".join(css)}"' if css else ""
            cells.append(f'<td{cls} data-key="{esc(str(key))}">{esc(str(t.text[c].iloc[i]))}</td>')
        cls = f' class="{t.classes[i]}"' if i < len(t.classes) and t.classes[i] else ""
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (f'<div class="table-box" id="table-{name}"><div class="controls"><input type="search" '
            f'placeholder="filter rows: words that must all appear"> <span class="count">{len(t.text)}</span> rows'
            f"<details><summary>columns</summary>{toggles}</details></div>"
            f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            "</div></div>")


def render(title: str, headline: list[str], sections: list[Section], figures: dict[str, dict]) -> str:
    esc = html.escape
    static = files("harness.report") / "static"
    items = "".join(f"<li>{esc(s)}</li>" for s in headline)
    body = [f"<h1>{esc(title)}</h1>", f'<section id="headline"><ul>{items}</ul></section>']
    if figures:
        plots = "".join(f'<div class="plot{" wide" if name in WIDE else ""}" id="plot-{esc(name)}"></div>'
                        for name in figures)
        body.append(f'<h2>Plots</h2><p>Hover a point for its settings; hollow markers are unstable cells; '
                    f'bars are 95 % intervals.</p><div class="plots">{plots}</div>')
    for s in sections:
        body.append(f"<h2>{esc(s.title)}</h2>")
        if s.text:
            body.append(f"<p>{esc(s.text)}</p>")
        if s.table is not None:
            slug = s.title.lower().replace(" ", "-")
            body.append(render_table(s.table, slug) if len(s.table.text) else "<p>(none)</p>")
    figs = _script_json({f"plot-{name}": fig for name, fig in figures.items()})
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{static.joinpath('report.css').read_text()}</style></head><body>\n" + "\n".join(body)
            + f"\n<script>{_plotly_js()}</script>\n<script>const FIGURES = {figs};\n"
            + static.joinpath("report.js").read_text() + "</script>\n</body></html>\n")
