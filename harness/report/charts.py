"""The report's figures as Plotly figure specs (plain dicts, drawn in the page by the inlined plotly.js).

Colour says the precision, the marker the INT8 recipe (mode or tool, and calibrator); hovering a point shows
every setting, so no label is printed on the plot. Unstable cells are drawn hollow and never on the front.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.report.headline import label, speedup_interval
from harness.report.merge import closed_loop
from harness.report.pareto import GROUP, accuracy_column, pareto_mask, unstable

PRECISION_COLORS = {"fp32": "#1f77b4", "fp16": "#2ca02c", "bf16": "#17becf", "int8": "#d62728", "int8-fp16": "#ff7f0e",
                    "fp8": "#9467bd", "fp8-fp16": "#e377c2"}
LAYER_COLORS = {"INT8": "#d62728", "FP8": "#9467bd", "FP16": "#2ca02c", "BF16": "#17becf", "FP32": "#1f77b4"}
SYMBOLS = ["circle", "square", "diamond", "triangle-up", "triangle-down", "cross", "x", "star", "hexagon",
           "pentagon", "triangle-left", "triangle-right", "hourglass", "bowtie"]
HOVER = ["model", "dataset", "backend", "precision", "tool", "mode", "calibrator", "batch"]


def recipe(r) -> str:
    """The marker key: 'selective/entropy', 'modelopt/max', or '' for float cells."""
    return label(r).partition(" ")[2]


def _hover(r) -> str:
    lines = [f"<b>{label(r)}</b>"] + [f"{k}: {r[k]}" for k in HOVER if pd.notna(r[k])]
    lines.append(f"p50: {r['latency_p50_ms']:.4g} ms [95 % {r['latency_p50_ci_lo_ms']:.4g}, "
                 f"{r['latency_p50_ci_hi_ms']:.4g}]" + (" UNSTABLE" if unstable(pd.DataFrame([r])).iloc[0] else ""))
    for col, unit in (("top1_pct", " %"), ("top1_delta_pp", " pp"), ("top1_agreement_pct", " %"),
                      ("sqnr_db", " dB"), ("speedup_vs_fp32", "x")):
        if pd.notna(r[col]):
            lines.append(f"{col}: {r[col]:.4g}{unit}")
    return "<br>".join(lines)


def _points(cells: pd.DataFrame, y: pd.Series, symbols: dict[str, str]) -> list[dict]:
    """One trace per precision and recipe (its legend entry), error bars from the interval of the median."""
    traces = []
    for (precision, rec), part in cells.groupby([cells["precision"], cells.apply(recipe, axis=1)], sort=True):
        shaky = unstable(part).to_numpy()
        symbol = symbols.get(rec, "circle")
        traces.append({
            "type": "scatter", "mode": "markers", "name": label(part.iloc[0]), "legendgroup": precision,
            "x": part["latency_p50_ms"].tolist(), "y": y[part.index].tolist(),
            "error_x": {"type": "data", "symmetric": False, "thickness": 1, "width": 3,
                        "array": (part["latency_p50_ci_hi_ms"] - part["latency_p50_ms"]).fillna(0).tolist(),
                        "arrayminus": (part["latency_p50_ms"] - part["latency_p50_ci_lo_ms"]).fillna(0).tolist()},
            "marker": {"size": 10, "color": PRECISION_COLORS.get(precision, "gray"),
                       "symbol": [f"{symbol}-open" if s else symbol for s in shaky],
                       "line": {"width": 1, "color": "#333"}},
            "text": [_hover(r) for _, r in part.iterrows()], "hovertemplate": "%{text}<extra></extra>",
        })
    return traces


def _front(cells: pd.DataFrame, y: pd.Series, on_front: pd.Series) -> dict:
    """The Pareto front as a step line through its points, each ringed, even when it is a single point."""
    best = cells[on_front[cells.index]].sort_values("latency_p50_ms")
    return {"type": "scatter", "mode": "lines+markers", "name": "Pareto front", "hoverinfo": "skip",
            "x": best["latency_p50_ms"].tolist(), "y": y[best.index].tolist(),
            "line": {"shape": "hv", "color": "black", "dash": "dash", "width": 1},
            "marker": {"size": 18, "symbol": "circle-open", "color": "black"}}


def _accuracy_axis(g: pd.DataFrame) -> tuple[pd.Series, str] | None:
    """Top-1 delta vs FP32 where labels exist, else agreement; None when every cell ties (a flat line)."""
    acc = accuracy_column(g)
    values = pd.to_numeric(g[acc], errors="coerce")
    if values.nunique() <= 1:
        return None
    if acc == "top1_pct" and g["top1_delta_pp"].notna().any():
        return pd.to_numeric(g["top1_delta_pp"], errors="coerce"), "top-1 minus the baseline's (points)"
    return values, "top-1 (%)" if acc == "top1_pct" else "top-1 agreement with FP32 (%)"


def _layout(title: str, x: str, y: str, note: str = "") -> dict:
    """Title left, clear of the toolbar on the right; a note goes on a second, smaller line."""
    text = f"{title}<br><sub>{note}</sub>" if note else title
    return {"title": {"text": text, "font": {"size": 14}, "x": 0.01, "xanchor": "left"},
            "xaxis": {"title": {"text": x}, "zeroline": False}, "yaxis": {"title": {"text": y}},
            "hovermode": "closest", "margin": {"t": 70, "l": 70, "r": 20, "b": 50}, "legend": {"font": {"size": 11}},
            "height": 440}


def latency_accuracy(df: pd.DataFrame) -> dict[str, dict]:
    """Per model, dataset and batch: p50 latency against the accuracy difference (when cells differ in it) and
    against SQNR, which separates recipes when top-1 ties."""
    ok = df[(df["status"] == "ok") & df["latency_p50_ms"].notna() & closed_loop(df)]
    on_front = pareto_mask(df)
    recipes = sorted({recipe(r) for _, r in ok.iterrows()} - {""})
    symbols = {"": "circle", **{r: SYMBOLS[(i + 1) % len(SYMBOLS)] for i, r in enumerate(recipes)}}
    figs = {}
    for n, ((model, dataset, batch), g) in enumerate(ok.groupby(GROUP, sort=True, dropna=False)):
        where = f"{model} on {dataset}, batch {batch}"
        axis = _accuracy_axis(g)
        if axis is not None:
            y, name = axis
            figs[f"accuracy-{n}"] = {"data": [*_points(g, y, symbols), _front(g, y, on_front)],
                                     "layout": _layout(f"{where}: latency and accuracy", "p50 latency (ms)", name)}
        sqnr = pd.to_numeric(g["sqnr_db"], errors="coerce").replace([np.inf, -np.inf], np.nan)
        if sqnr.notna().any():
            top1 = g[accuracy_column(g)].iloc[0]
            tie = "" if axis else f"top-1 ties at {top1:.4g} % in every cell: SQNR tells them apart"
            figs[f"sqnr-{n}"] = {"data": _points(g[sqnr.notna()], sqnr, symbols),
                                 "layout": _layout(f"{where}: latency and output fidelity", "p50 latency (ms)",
                                                   "SQNR against FP32 PyTorch (dB)", tie)}
    return figs


def speedups(df: pd.DataFrame) -> dict | None:
    """Speedup against FP32 (and FP16) of every cell, sorted by it, with the interval the medians allow."""
    ok = df[(df["status"] == "ok") & df["speedup_vs_fp32"].notna()].sort_values("speedup_vs_fp32")
    if ok.empty:
        return None
    names = [f"{label(r)} · b{r['batch']} · {r['model']}" + (" (unstable)" if s else "")
             for (_, r), s in zip(ok.iterrows(), unstable(ok), strict=True)]
    data = []
    for precision, color in (("fp32", "#1f77b4"), ("fp16", "#2ca02c")):
        lo, hi = (s[ok.index] for s in speedup_interval(df, precision))
        value = ok[f"speedup_vs_{precision}"]
        data.append({"type": "bar", "orientation": "h", "name": f"vs {precision.upper()}", "y": names,
                     "x": value.tolist(), "marker": {"color": color},
                     "error_x": {"type": "data", "symmetric": False, "array": (hi - value).fillna(0).tolist(),
                                 "arrayminus": (value - lo).fillna(0).tolist()},
                     "hovertemplate": "%{y}: %{x:.3f}x<extra>" + f"vs {precision.upper()}</extra>"})
    layout = _layout("Speedup (baseline p50 / cell p50), 95 % intervals", "speedup (x)", "")
    layout.update(barmode="group", height=max(300, 22 * len(ok) + 120), margin={"l": 330, "t": 70, "r": 20, "b": 50})
    layout["shapes"] = [{"type": "line", "x0": 1, "x1": 1, "yref": "paper", "y0": 0, "y1": 1,
                         "line": {"color": "black", "width": 1}}]
    return {"data": data, "layout": layout}


def layer_precisions(df: pd.DataFrame) -> dict | None:
    """Engine layers by input precision, for cells whose backend could inspect its engine."""
    cells = df[df["layer_table"].notna() & (df["layer_table"] != "")].drop_duplicates("engine")  # one per engine
    counts = {}
    for _, r in cells.iterrows():
        try:
            table = pd.read_csv(r["layer_table"])
        except OSError:
            continue
        first = table["input_precision"].fillna("?").astype(str).str.split("/").str[0]
        counts[f"{label(r)} · b{r['batch']} · {r['model']}"] = first.value_counts()
    if not counts:
        return None
    data = pd.DataFrame(counts).T.fillna(0)
    traces = [{"type": "bar", "orientation": "h", "name": p, "y": list(data.index), "x": data[p].tolist(),
               "marker": {"color": LAYER_COLORS.get(p, "gray")}} for p in data.columns]
    layout = _layout("Engine layers by input precision", "layers", "")
    layout.update(barmode="stack", height=max(300, 22 * len(data) + 120), margin={"l": 330, "t": 70, "r": 20})
    return {"data": traces, "layout": layout}


def figures(df: pd.DataFrame) -> dict[str, dict]:
    """name -> Plotly figure, in page order."""
    made = {**latency_accuracy(df), "speedup": speedups(df), "layer_precision": layer_precisions(df)}
    return {name: fig for name, fig in made.items() if fig is not None}
