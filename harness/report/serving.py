"""The report's deployment part: what each variant serves under the latency bound, and where adding requests in
flight stops paying. Rows of scenario cells only (harness.sweep.scenario_cell); closed-loop rows are the rest of
the report's.

- Sentences: per model, dataset, backend and batch, the variant with the highest server max-QPS and how many
  times the FP16 and FP32 variants' QPS it serves under the bound ("int8 selective/entropy serves 2.10x the QPS of
  FP16 under p99 <= 10 ms"); fixed-rate server verdicts; each concurrency cell's knee; energy per inference where
  it was measured.
- Figures: max-QPS per variant (bars), and per model, dataset and backend the latency-throughput curves of the
  concurrency cells (p99 against samples per second, a point per level, the knee ringed).
"""

from __future__ import annotations

import pandas as pd

from harness.report.charts import PRECISION_COLORS
from harness.report.charts import _layout as layout
from harness.report.headline import label
from harness.report.merge import SETTINGS, closed_loop, truth

SCENARIO_TABLE = [*SETTINGS, "valid", "max_qps", "qps", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms",
                  "latency_bound_ms", "target_qps", "early_stopping_p90_ms", "early_stopping_p99_ms",
                  "knee_concurrency", "peak_throughput_ips", "energy_j_per_inference", "avg_power_w", "top1_pct"]
SCENARIO_MORE = ["throughput_ips", "max_qps_invalid_at", "max_qps_runs", "offline_qps", "loadgen_result",
                 "samples_per_query", "concurrency_levels", "energy_note", "timing_includes", "loadgen_logs",
                 "curve_file", "cell_id"]
GROUP = ["model", "dataset", "backend", "batch"]


def served(df: pd.DataFrame) -> pd.DataFrame:
    """The finished scenario cells."""
    return df[(df["status"] == "ok") & ~closed_loop(df)]


def _where(r) -> str:
    return f"{r['model']} on {r['dataset']}, {r['backend']}, batches up to {r['batch']}"


def _energy(r) -> str:
    value = r.get("energy_j_per_inference")
    if value is None or pd.isna(value):
        return ""
    return f", {1e3 * value:.3g} mJ per inference at {r['avg_power_w']:.3g} W"


def _max_qps(group: pd.DataFrame) -> list[str]:
    searched = group[(group["scenario"] == "server") & group["max_qps_runs"].notna()]
    if searched.empty:
        return []
    out = []
    bound = searched["latency_bound_ms"].iloc[0]
    found = searched[searched["max_qps"].notna()]
    for _, r in searched[searched["max_qps"].isna()].iterrows():
        out.append(f"{_where(r)}: {label(r)} met p99 <= {bound:g} ms at no rate tried.")
    if found.empty:
        return out
    best = found.sort_values("max_qps", kind="stable").iloc[-1]
    text = f"{_where(best)}: {label(best)} serves the most, {best['max_qps']:.4g} QPS under p99 <= {bound:g} ms"
    for precision in ("fp16", "fp32"):
        peer = found[(found["precision"] == precision) & (found["tool"].isna())]
        if best["precision"] != precision and not peer.empty:
            ratio = best["max_qps"] / peer["max_qps"].iloc[0]
            text += f"; it serves {ratio:.2f}x the QPS of {precision.upper()} ({peer['max_qps'].iloc[0]:.4g})"
    out.append(text + _energy(best) + ".")
    return out


def _fixed_rate(group: pd.DataFrame) -> list[str]:
    fixed = group[(group["scenario"] == "server") & group["max_qps_runs"].isna() & group["target_qps"].notna()]
    return [f"{_where(r)}: {label(r)} at {r['target_qps']:.4g} QPS is {'VALID' if truth(r['valid']) else 'INVALID'} "
            f"(p99 {r['latency_p99_ms']:.3g} ms, bound {r['latency_bound_ms']:g} ms){_energy(r)}."
            for _, r in fixed.iterrows() if pd.notna(r["latency_p99_ms"])]


def _knees(group: pd.DataFrame) -> list[str]:
    out = []
    for _, r in group[group["scenario"] == "concurrency"].iterrows():
        if pd.isna(r["knee_concurrency"]):
            out.append(f"{_where(r)}: {label(r)} still gains throughput at concurrency "
                       f"{str(r['concurrency_levels']).split(',')[-1]} (peak {r['peak_throughput_ips']:.4g} "
                       "samples/s): no knee in the levels tried.")
            continue
        out.append(f"{_where(r)}: {label(r)} reaches its knee at concurrency {int(r['knee_concurrency'])}, "
                   f"{r['throughput_ips']:.4g} samples/s at p99 {r['latency_p99_ms']:.3g} ms; beyond it more "
                   f"requests in flight add latency, not throughput{_energy(r)}.")
    return out


def sentences(df: pd.DataFrame) -> list[str]:
    rows = served(df)
    out = []
    for _, group in rows.groupby(GROUP, sort=True, dropna=False):
        out += _max_qps(group) + _fixed_rate(group) + _knees(group)
    return out


def _curve(path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path)
    except (OSError, ValueError, TypeError):
        return None


def curves(df: pd.DataFrame) -> dict[str, dict]:
    """Per model, dataset and backend: each concurrency cell's p99 against throughput, the knee ringed."""
    rows = served(df)
    rows = rows[(rows["scenario"] == "concurrency") & rows["curve_file"].notna()]
    figs = {}
    for n, ((model, dataset, backend), group) in enumerate(rows.groupby(["model", "dataset", "backend"],
                                                                        sort=True)):
        traces, knees = [], {"x": [], "y": [], "text": []}
        for _, r in group.iterrows():
            curve = _curve(r["curve_file"])
            if curve is None or curve.empty:
                continue
            name = f"{label(r)} · b{r['batch']}"
            traces.append({"type": "scatter", "mode": "lines+markers+text", "name": name,
                           "x": curve["throughput_ips"].tolist(), "y": curve["latency_p99_ms"].tolist(),
                           "text": [str(c) for c in curve["concurrency"]], "textposition": "top left",
                           "marker": {"size": 8, "color": PRECISION_COLORS.get(r["precision"], "gray")},
                           "customdata": curve["latency_p50_ms"].tolist(),
                           "hovertemplate": f"{name}<br>concurrency %{{text}}<br>%{{x:.4g}} samples/s<br>"
                                            "p99 %{y:.4g} ms, p50 %{customdata:.4g} ms<extra></extra>"})
            knee = curve[curve["knee"].astype(str).str.lower() == "true"]
            for _, k in knee.iterrows():
                knees["x"].append(k["throughput_ips"])
                knees["y"].append(k["latency_p99_ms"])
                knees["text"].append(f"{name}: knee at concurrency {k['concurrency']}")
        if not traces:
            continue
        traces.append({"type": "scatter", "mode": "markers", "name": "knee", "x": knees["x"], "y": knees["y"],
                       "text": knees["text"], "hovertemplate": "%{text}<extra></extra>",
                       "marker": {"size": 20, "symbol": "circle-open", "color": "black", "line": {"width": 2}}})
        figs[f"curves-{n}"] = {"data": traces, "layout": layout(
            f"{model} on {dataset}, {backend}: latency against throughput", "throughput (samples/s)",
            "p99 latency (ms)", "a point per concurrency level (requests in flight); the knee ringed")}
    return figs


def max_qps_bars(df: pd.DataFrame) -> dict | None:
    rows = served(df)
    rows = rows[(rows["scenario"] == "server") & rows["max_qps"].notna()].sort_values("max_qps")
    if rows.empty:
        return None
    names = [f"{label(r)} · b{r['batch']} · {r['model']} · {r['backend']}" for _, r in rows.iterrows()]
    bars = {"type": "bar", "orientation": "h", "y": names, "x": rows["max_qps"].tolist(), "name": "max QPS",
            "marker": {"color": [PRECISION_COLORS.get(p, "gray") for p in rows["precision"]]},
            "hovertemplate": "%{y}: %{x:.4g} QPS<extra></extra>"}
    bounds = ", ".join(f"{b:g}" for b in sorted(rows["latency_bound_ms"].dropna().unique()))
    fig = {"data": [bars], "layout": layout(f"Server max QPS under p99 <= {bounds} ms (LoadGen)", "queries per second",
                                            "")}
    fig["layout"].update(height=max(300, 22 * len(rows) + 120), margin={"l": 330, "t": 70, "r": 20, "b": 50},
                         showlegend=False)
    return fig


def figures(df: pd.DataFrame) -> dict[str, dict]:
    made = {"max-qps": max_qps_bars(df), **curves(df)}
    return {name: fig for name, fig in made.items() if fig is not None}
