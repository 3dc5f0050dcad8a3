"""inspect-engine: per-layer precision and tactic of a TensorRT engine, and why INT8 or FP8 is not faster."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from harness.backends.base import quantized_type
from harness.build import load_engine
from harness.commands.common import DIR_OUT, SECONDS, cuda_binding_option, print_table, write_json
from harness.errors import HarnessError
from harness.fileio import atomic_write, expect_file


def _from_engine(engine: Path) -> tuple[dict, Path | None, str]:
    from harness.backends.tensorrt import inspector

    meta, runner = load_engine(engine)
    if meta.backend != "tensorrt":
        raise HarnessError(f"{engine} is a {meta.backend} artifact; inspect-engine reads TensorRT engines "
                           "(build one with --backend tensorrt)")
    try:
        info = inspector.parse_engine_information(runner.engine_information(), str(engine))
    finally:
        runner.close()
    onnx = Path(meta.onnx_path) if quantized_type(meta.precision) else None
    return info, onnx, Path(meta.artifact).stem


@click.command("inspect-engine")
@click.argument("engine", type=click.Path(path_type=Path), required=False)
@click.option("--layer-info", type=click.Path(path_type=Path), default=None,
              help="Inspector JSON saved earlier (trtexec --exportLayerInfo, or this command's output) instead "
                   "of an engine; needs no GPU.")
@click.option("--onnx", "onnx_path", type=click.Path(path_type=Path), default=None,
              help="The Q/DQ ONNX the engine was built from, to list planned INT8/FP8 layers that do not run in "
                   "it (default: the ONNX named in an int8/fp8 engine's sidecar).")
@click.option("--out", type=DIR_OUT, default=Path("reports") / "inspect", show_default=True,
              help="Folder for <engine>.layers.csv, <engine>.inspector.json and <engine>.summary.json.")
@click.option("--all-layers", is_flag=True, help="Print every layer, not only the summary.")
def inspect_engine(engine, layer_info, onnx_path, out, all_layers):
    """Per-layer table (type, intended and actual input/output precision, tactic), reformat layers, and the
    planned INT8/FP8 layers that do not run in it."""
    import pandas as pd

    from harness.backends.tensorrt import inspector  # pandas: imported when the command runs, not at CLI start

    if (engine is None) == (layer_info is None):
        raise HarnessError("give an ENGINE or --layer-info FILE (one of them)")
    if engine is not None:
        info, sidecar_onnx, name = _from_engine(engine)
    else:
        info, sidecar_onnx, name = inspector.load_engine_information(layer_info), None, Path(layer_info).stem
    if onnx_path is not None:
        expect_file(Path(onnx_path), "--onnx", "give the Q/DQ ONNX the engine was built from")
    if onnx_path is None and sidecar_onnx is not None:
        if sidecar_onnx.is_file():
            onnx_path = sidecar_onnx
        else:
            click.echo(f"note: {sidecar_onnx} (named in the sidecar) is gone; pass --onnx to check the Q/DQ plan")
    planned = inspector.planned(onnx_path) if onnx_path else None

    table = inspector.layer_table(info, planned)
    facts = inspector.summary(table, planned)
    if all_layers:
        with pd.option_context("display.max_rows", None, "display.max_colwidth", 60, "display.width", 200):
            click.echo(table.drop(columns=["onnx_nodes", "origin"]).to_string(index=False))
    rows = [("inspector layout", f"TensorRT {inspector.layout(info)}"), ("layers", facts["layers"]),
            *((f"layers with {p} input", n) for p, n in facts["layers_by_input_precision"].items()),
            ("reformat layers", facts["reformat_layers"])]
    kinds = [t for t in ("int8", "fp8") if f"{t}_planned" in facts]
    for t in kinds:
        rows += [(f"planned {t.upper()} (Q/DQ before a weighted node)", facts[f"{t}_planned"]),
                 (f"planned {t.upper()} but not running {t.upper()}", facts[f"{t}_not_running_{t}"])]
    print_table(rows, f"{name}: engine layers")
    for t in kinds:
        for finding in facts[f"{t}_shortfall"]:
            click.echo(f"  not {t.upper()}: {finding['onnx_node']} -> {finding['layer'] or '(no layer)'}: "
                       f"{finding['finding']}")
        if facts[f"{t}_shortfall"]:
            click.echo(f"  {inspector.INT8_CAUSES if t == 'int8' else inspector.FP8_CAUSES}")

    out = Path(out)
    atomic_write(out / f"{name}.layers.csv", lambda tmp: table.to_csv(tmp, index=False))
    atomic_write(out / f"{name}.inspector.json", json.dumps(info, indent=2))
    write_json(out / f"{name}.summary.json", facts)
    click.echo(f"wrote {out / name}.{{layers.csv,summary.json,inspector.json}}")


@click.command("profile")
@click.argument("engine", type=click.Path(path_type=Path))
@click.option("--batch", type=click.IntRange(1), default=None, help="Batch size (default: the engine's opt).")
@click.option("--iterations", type=click.IntRange(1), default=50, show_default=True,
              help="Profiled executions (each reports every layer).")
@click.option("--duration", type=SECONDS, default=1.0, show_default=True,
              help="Seconds of the timed run before it, which gives the whole-engine GPU compute.")
@click.option("--out", type=DIR_OUT, default=Path("reports") / "profile", show_default=True,
              help="Folder for <engine>.profile.csv, .by_type.csv, .by_precision.csv, .profile.png, .summary.json.")
@click.option("--all-layers", is_flag=True, help="Print every layer, not only the slowest 15.")
@cuda_binding_option
def profile_cmd(engine, batch, iterations, duration, out, all_layers, cuda_binding):
    """Per-layer profile of a TensorRT engine: a timed run, then a separate run with TensorRT's profiler.

    Per layer: mean ms and share of the sum, with the inspector's type, precisions and tactic; totals by layer
    type and by precision (% of latency in INT8 / FP16 / FP32, and reformat layers).
    """
    from harness.backends.tensorrt import inspector
    from harness.backends.tensorrt import profile as prof
    from harness.build import check_input_shape
    from harness.data.datasets import SyntheticDataset

    meta, runner = load_engine(engine, cuda_binding)
    if meta.backend != "tensorrt":
        raise HarnessError(f"{engine} is a {meta.backend} artifact; profile reads TensorRT engines "
                           "(build one with --backend tensorrt)")
    binding = runner.cuda_binding
    try:
        dims = (batch or meta.batch[1], *meta.input_shape)
        check_input_shape(meta, dims, "--batch")
        x = np.resize(SyntheticDataset(meta.spec).take("val", 1)[0], dims).astype(np.float32)
        timed = runner.time(x, 0.2, 10, duration)
        compute = float(np.median(timed.components["gpu_compute_ms"]))
        table = prof.profile_table(runner.layer_times(x, iterations),
                                   inspector.parse_engine_information(runner.engine_information(), str(engine)))
    finally:
        runner.close()
    facts = prof.summary(table, compute)
    shown = table if all_layers else table.nlargest(15, "mean_ms")
    print_table([(f"{r.name[:60]} [{r.type}, {r.precision}]", f"{r.mean_ms:.4g} ms  {r.share_pct:.1f} %")
                 for r in shown.itertuples()],
                f"{Path(meta.artifact).name}: {'all' if all_layers else 'slowest'} {len(shown)} of {len(table)} "
                f"layers, batch {dims[0]}, {iterations} profiled runs")
    by_precision = prof.totals(table, "precision")
    print_table([(r.precision, f"{r.share_pct:.1f} %  ({r.layers} layers, {r.mean_ms:.4g} ms)")
                 for r in by_precision.itertuples()], "% of latency by precision")
    by_type = prof.totals(table, "type")
    print_table([(r.type, f"{r.share_pct:.1f} %  ({r.layers} layers)") for r in by_type.itertuples()],
                "% of latency by layer type")
    click.echo(f"sum of layers {facts['profile_layers_sum_ms']:.4g} ms vs whole-engine GPU compute p50 "
               f"{compute:.4g} ms ({timed.convention} timed run): {prof.CAVEAT}")
    paths = prof.write(table, out, Path(meta.artifact).stem)
    paths["summary"] = write_json(Path(out) / f"{Path(meta.artifact).stem}.summary.json",
                                  {"engine": meta.artifact, "batch": dims[0], "iterations": iterations,
                                   "cuda_binding": binding, "caveat": prof.CAVEAT, **facts})
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))
