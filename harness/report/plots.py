"""The report's figures as PNG bytes (matplotlib's Agg backend: no display needed on a runner)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from harness.report.pareto import GROUP, accuracy_column, pareto_mask

PRECISION_COLORS = {"fp32": "tab:blue", "fp16": "tab:green", "int8": "tab:red", "int8-fp16": "tab:orange"}
BACKEND_MARKERS = {"cpu": "o", "tensorrt": "s", "torch": "^"}
LAYER_COLORS = {"INT8": "tab:red", "FP16": "tab:green", "FP32": "tab:blue"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def short_label(row) -> str:
    """'cpu int8 selective/max'; ModelOpt cells, which have no mode, read 'cpu int8 modelopt/max'."""
    label = f"{row['backend']} {row['precision']}"
    if not isinstance(row.get("tool"), str):
        return label
    return f"{label} {row['mode'] if isinstance(row['mode'], str) else row['tool']}/{row['calibrator']}"


def latency_accuracy(df: pd.DataFrame) -> bytes | None:
    """One row per model, dataset and batch: p50 latency against accuracy (Pareto front joined up), and
    against SQNR, which separates calibrators when top-1 cannot (an easy data set, few samples)."""
    ok = df[df["status"] == "ok"]
    groups = list(ok.groupby(GROUP, dropna=False))
    if not groups:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(groups), 2, figsize=(13, 4.5 * len(groups)), squeeze=False)
    front = pareto_mask(df)
    for (ax, ax_sqnr), ((model, dataset, batch), g) in zip(axes, groups, strict=False):
        acc = accuracy_column(g)
        sqnr = pd.to_numeric(g["sqnr_db"], errors="coerce").replace([np.inf, -np.inf], np.nan)
        for (precision, backend), part in g.groupby(["precision", "backend"]):
            style = {"label": f"{backend} {precision}", "s": 40, "color": PRECISION_COLORS.get(precision, "gray"),
                     "marker": BACKEND_MARKERS.get(backend, "D")}
            ax.scatter(part["latency_p50_ms"], part[acc], **style)
            ax_sqnr.scatter(part["latency_p50_ms"], sqnr[part.index], **style)
        best = g[front[g.index]].sort_values("latency_p50_ms")
        ax.plot(best["latency_p50_ms"], best[acc], "k--", lw=1, label="Pareto front")
        for _, r in best.iterrows():
            ax.annotate(short_label(r), (r["latency_p50_ms"], r[acc]), fontsize=7, xytext=(4, 4),
                        textcoords="offset points")
        for _, r in g[sqnr.notna()].iterrows():
            ax_sqnr.annotate(short_label(r), (r["latency_p50_ms"], sqnr[r.name]), fontsize=6, xytext=(3, 3),
                             textcoords="offset points")
        ax.set_ylim(top=min(100.5, ax.get_ylim()[1]))
        ax.set_ylabel("top-1 (%)" if acc == "top1_pct" else "top-1 agreement with FP32 (%)")
        ax_sqnr.set_ylabel("SQNR against FP32 PyTorch (dB)")
        ax.set_title(f"{model} on {dataset}, batch {batch}", fontsize=10)
        ax_sqnr.set_title(f"{model} on {dataset}, batch {batch}: output fidelity", fontsize=10)
        for a in (ax, ax_sqnr):
            a.set_xlabel("p50 latency (ms)")
            a.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _png(fig)


def speedups(df: pd.DataFrame) -> bytes | None:
    """p50 speedup of every cell against the FP32 and the FP16 cell of its model, dataset, backend, batch."""
    ok = df[(df["status"] == "ok") & (df["speedup_vs_fp32"].notna() | df["speedup_vs_fp16"].notna())]
    if ok.empty:
        return None
    plt = _pyplot()
    labels = [f"{short_label(r)} b{r['batch']} ({r['model']})" for _, r in ok.iterrows()]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(ok) + 1.2))
    y = range(len(ok))
    ax.barh([i - 0.2 for i in y], ok["speedup_vs_fp32"].fillna(0), height=0.4, label="vs FP32", color="tab:blue")
    ax.barh([i + 0.2 for i in y], ok["speedup_vs_fp16"].fillna(0), height=0.4, label="vs FP16",
            color="tab:green")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_yticks(list(y), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speedup (baseline p50 / cell p50)")
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def layer_precisions(df: pd.DataFrame) -> bytes | None:
    """Engine layers by input precision, for cells whose backend could inspect its engine."""
    if "layer_table" not in df.columns:
        return None
    cells = df[df["layer_table"].notna() & (df["layer_table"] != "")]
    counts = {}
    for _, r in cells.iterrows():
        try:
            table = pd.read_csv(r["layer_table"])
        except OSError:
            continue
        first = table["input_precision"].fillna("?").astype(str).str.split("/").str[0]
        counts[f"{short_label(r)} b{r['batch']} ({r['model']})"] = first.value_counts()
    if not counts:
        return None
    data = pd.DataFrame(counts).T.fillna(0)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(data) + 1.2))
    left = pd.Series(0.0, index=data.index)
    for precision in data.columns:
        ax.barh(data.index, data[precision], left=left, label=precision,
                color=LAYER_COLORS.get(precision, None))
        left += data[precision]
    ax.invert_yaxis()
    ax.set_xlabel("engine layers (by input precision)")
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=8)
    return _png(fig)


def figures(df: pd.DataFrame) -> dict[str, bytes]:
    made = {"latency_vs_accuracy": latency_accuracy(df), "speedup": speedups(df),
            "layer_precision": layer_precisions(df)}
    return {name: png for name, png in made.items() if png is not None}
