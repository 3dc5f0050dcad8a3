"""Per-layer profile: TensorRT's IProfiler on a separate run, joined to the engine inspector's layer table.

What users read in TREx's report card: mean ms per layer and its share, totals by layer type and by precision
("% of latency in INT8 / FP8 / FP16 / BF16 / FP32"), and how much goes to reformat layers. Caveat, as TensorRT
documents: per-layer timing puts events between layers, so the sum of the layers exceeds the whole engine's
latency (more so on small networks) and the timed run is kept apart from this one; read the shares, not the
absolute ms.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from harness.backends.tensorrt.inspector import layer_table, reformat_layers

CAVEAT = ("per-layer timing adds events between layers, so the sum of the layers exceeds the whole engine's "
          "GPU compute (more so on small networks); compare shares, not absolute ms")
COLUMNS = ["name", "type", "precision", "input_precision", "output_precision", "tactic", "mean_ms", "median_ms",
           "share_pct", "runs"]


def make_profiler(trt):
    """An IProfiler that keeps every report per layer (TensorRT calls it once per layer per execution)."""

    class LayerTimes(trt.IProfiler):
        def __init__(self):
            trt.IProfiler.__init__(self)
            self.reports: dict[str, list[float]] = defaultdict(list)

        def report_layer_time(self, layer_name, ms):
            self.reports[layer_name].append(float(ms))

    return LayerTimes()


def profile_table(reports: dict[str, list[float]], info: dict) -> pd.DataFrame:
    """One row per profiled layer, in engine order, with the inspector's type, precisions and tactic."""
    layers = layer_table(info).drop_duplicates("name").set_index("name")
    reformats = set(reformat_layers(layer_table(info))["name"])
    total = sum(float(np.mean(v)) for v in reports.values())
    rows = []
    for name, times in reports.items():
        known = name in layers.index
        layer = layers.loc[name] if known else None
        first = str(layer["input_precision"]).split("/")[0] if known else "?"
        rows.append({
            "name": name, "type": layer["type"] if known else "?",
            "precision": "Reformat" if name in reformats or name.startswith("Reformatting CopyNode") else first,
            "input_precision": layer["input_precision"] if known else "",
            "output_precision": layer["output_precision"] if known else "",
            "tactic": layer["tactic"] if known else "", "mean_ms": float(np.mean(times)),
            "median_ms": float(np.median(times)), "runs": len(times),
        })
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "share_pct"])
    table["share_pct"] = 100.0 * table["mean_ms"] / total if total > 0 else np.nan
    return table[COLUMNS]


def totals(table: pd.DataFrame, by: str) -> pd.DataFrame:
    """Mean ms and share per `by` (type or precision), largest first."""
    out = table.groupby(by, sort=False).agg(layers=("name", "size"), mean_ms=("mean_ms", "sum"),
                                             share_pct=("share_pct", "sum"))
    return out.sort_values("mean_ms", ascending=False).reset_index()


def summary(table: pd.DataFrame, engine_compute_ms: float | None) -> dict:
    """The figures a row and the report carry: shares by precision and reformat, and the sum-of-layers caveat."""
    shares = totals(table, "precision").set_index("precision")["share_pct"]
    out = {f"profile_{p.lower()}_pct": float(shares.get(p, 0.0))
           for p in ("INT8", "FP8", "FP16", "BF16", "FP32", "Reformat")}
    out.update(profile_layers=len(table), profile_layers_sum_ms=float(table["mean_ms"].sum()),
               profile_engine_compute_ms=engine_compute_ms)
    return out


def plot(table: pd.DataFrame, top: int = 20) -> bytes:
    """The slowest layers (coloured by precision) beside the share of latency per precision."""
    from harness.report.charts import LAYER_COLORS
    from harness.report.png import png, pyplot

    plt = pyplot()
    colors = {**LAYER_COLORS, "Reformat": "tab:gray"}
    slow = table.nlargest(top, "mean_ms").iloc[::-1]
    by_precision = totals(table, "precision")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, max(3.0, 0.28 * len(slow) + 1)),
                                      gridspec_kw={"width_ratios": [3, 1]})
    left.barh([n[:48] for n in slow["name"]], slow["mean_ms"],
              color=[colors.get(p, "tab:purple") for p in slow["precision"]])
    left.set_xlabel("mean ms per layer (profiled run)")
    left.set_title(f"slowest {len(slow)} layers")
    right.bar(by_precision["precision"], by_precision["share_pct"],
              color=[colors.get(p, "tab:purple") for p in by_precision["precision"]])
    right.set_ylabel("% of the sum of layer times")
    right.set_title("by precision")
    fig.suptitle(CAVEAT, fontsize=7)
    return png(fig)


def write(table: pd.DataFrame, folder: Path, stem: str) -> dict[str, Path]:
    """<stem>.profile.csv, .by_type.csv, .by_precision.csv and .profile.png under `folder`."""
    from harness.fileio import atomic_write

    folder = Path(folder)
    paths = {"layers": folder / f"{stem}.profile.csv", "by_type": folder / f"{stem}.by_type.csv",
             "by_precision": folder / f"{stem}.by_precision.csv", "plot": folder / f"{stem}.profile.png"}
    for key, frame in (("layers", table), ("by_type", totals(table, "type")),
                       ("by_precision", totals(table, "precision"))):
        atomic_write(paths[key], lambda tmp, frame=frame: frame.to_csv(tmp, index=False))
    atomic_write(paths["plot"], plot(table))
    return paths
