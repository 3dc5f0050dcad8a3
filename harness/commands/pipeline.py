"""train, export, build-engine, bench, eval: the single-model pipeline from PyTorch to measured artifact."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click
import numpy as np

from harness.backends.base import PRECISIONS
from harness.build import build_artifact, check_input_shape, load_engine
from harness.commands.common import (
    FILE_OUT,
    NON_NEGATIVE,
    SECONDS,
    Number,
    build_options,
    check_cuda_binding,
    cuda_binding_option,
    make_build_options,
    model_options,
    print_table,
    quant_options,
    quant_request,
    verify_option,
    write_json,
)
from harness.data.datasets import SyntheticDataset, dataset_names, resolve_dataset
from harness.errors import HarnessError
from harness.measure.energy import EnergyMeter
from harness.measure.evaluate import check_deployed, evaluate_outputs, reference_outputs
from harness.measure.gpu_state import GpuMonitor
from harness.measure.latency import CV_WARN, latency_stats
from harness.measure.loadgen import CLOSED_LOOP, DEFAULT_BOUND_MS, DEFAULT_SAMPLES_PER_QUERY, SCENARIOS
from harness.models.registry import BUNDLED_WEIGHTS, parse_shape, resolve_model
from harness.sweep.environment import cpu_isa


@click.command()
@click.option("--epochs", type=click.IntRange(1), default=30, show_default=True)
@click.option("--out", type=FILE_OUT, default=Path("digits-resnet.pt"),
              show_default=True, help="Where to write the weights; use them with --weights FILE.")
@click.option("--replace-bundled", is_flag=True,
              help=f"Write over the bundled weights instead ({BUNDLED_WEIGHTS.name} in the installed package).")
def train(epochs, out, replace_bundled):
    """Retrain digits-resnet from scratch (seeded, CPU; 30 epochs take 1-9 minutes on 2 cores, by load).

    Progress and an ETA every epoch. The bundled weights stay as they are unless --replace-bundled.
    """
    from harness.models.train_digits import train_digits

    out = BUNDLED_WEIGHTS if replace_bundled else out
    train_digits(out, epochs=epochs, log=click.echo)
    if not replace_bundled:
        click.echo(f"use them with: harness eval/export/build-engine --model digits-resnet --weights {out}")


def _spec_for(model_name, weights, input_shape, quant: dict | None):
    """The model to build: the one a --quant checkpoint was made for, unless --model names another."""
    source = click.get_current_context().get_parameter_source("model_name")
    if quant and "checkpoint" in quant and source in (None, click.core.ParameterSource.DEFAULT):
        from harness.models.registry import ModelSpec
        from harness.quantize.checkpoint import load

        return ModelSpec.from_dict(load(Path(quant["checkpoint"]))["model"])
    return resolve_model(model_name, weights, input_shape)


@click.command()
@model_options
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True)
@click.option("--quant", "quant_file", type=click.Path(path_type=Path), default=None,
              help="Quantization checkpoint from harness quantize (int8, int8-fp16; fp8, fp8-fp16).")
@quant_options
@verify_option
@click.option("-o", "--output", type=FILE_OUT, required=True, help="Where to write the ONNX.")
def export(model_name, weights, input_shape, precision, quant_file, verify_level, output, **given):
    """Export a model to ONNX (pinned opset, dynamic batch), checked against PyTorch before it is kept.

    fp16 / bf16 cast the graph at the ONNX level (NVIDIA Model Optimizer's AutoCast; FP32 inputs/outputs, nodes
    that would overflow FP16 kept in FP32); int8 / fp8 add calibrated QuantizeLinear/DequantizeLinear (INT8, or
    FP8 E4M3 zero points; opset 19); int8-fp16 / fp8-fp16 are both. The check's figures (and the nodes kept in
    FP32) go to FILE.verify.json.
    """
    from harness.export.variants import export_variant, verify_sidecar

    quant = quant_request(precision, quant_file, **given)
    spec = _spec_for(model_name, weights, input_shape, quant)
    path = export_variant(spec, precision, output, quant, log=lambda m: click.echo(m, err=True), verify=verify_level)
    checked = "not checked" if verify_level == "off" else f"passed the {verify_level} export check"
    click.echo(f"wrote {path} ({checked}; figures in {verify_sidecar(path)})")


@click.command("build-engine")
@model_options
@build_options
@click.option("--quant", "quant_file", type=click.Path(path_type=Path), default=None,
              help="Quantization checkpoint from harness quantize (int8, int8-fp16; fp8, fp8-fp16).")
@quant_options
@verify_option
@cuda_binding_option
def build_engine_cmd(model_name, weights, input_shape, precision, backend, min_batch, opt_batch, max_batch,
                     workspace_mb, opt_level, engines_dir, quant_file, verify_level, cuda_binding, **given):
    """Build (or reuse from the cache) a backend artifact with a JSON sidecar under engines/.

    Prints the artifact's path on stdout (progress goes to stderr), so ENGINE=$(harness build-engine ...) works.
    """
    check_cuda_binding(backend, cuda_binding)
    quant = quant_request(precision, quant_file, **given)
    spec = _spec_for(model_name, weights, input_shape, quant)
    options = make_build_options(precision, min_batch, opt_batch, max_batch, workspace_mb, opt_level)
    meta, hit = build_artifact(spec, backend, options, engines_dir, quant=quant,
                               log=lambda m: click.echo(m, err=True), verify=verify_level,
                               cuda_binding=cuda_binding)
    click.echo(f"{'cache hit' if hit else f'built in {meta.build_s:.2f} s'}: {meta.artifact}", err=True)
    click.echo(meta.artifact)  # stdout holds the path alone: harness eval "$(harness build-engine ...)"


def _load(engine: Path, cuda_binding: str):
    """load_engine, refusing a --cuda-binding for an engine that runs without the CUDA layer."""
    meta, runner = load_engine(engine, cuda_binding)
    check_cuda_binding(meta.backend, cuda_binding)
    return meta, runner


def _ran_on(meta, runner) -> str:
    """backend, precision and, for TensorRT, the CUDA binding that ran: the title line of bench and eval."""
    binding = getattr(runner, "cuda_binding", None)
    return ", ".join([meta.backend, meta.precision] + ([f"cuda-binding {binding}"] if binding else []))


def _runner_opts(meta, runner, opt_in: dict[str, bool], opt_out: dict[str, bool], streams: int) -> dict:
    """TensorRT: the installed version's trtexec defaults changed by the flags given (notes printed)."""
    from harness.backends.tensorrt.timing import SETTINGS, resolve

    given = [flag for name, on, off in SETTINGS for flag, used in ((on, opt_in[name]), (off, opt_out[name])) if used]
    if meta.backend != "tensorrt":
        if given or streams > 1:
            raise HarnessError(f"{', '.join(given + (['--streams'] if streams > 1 else []))} apply to tensorrt "
                               "engines only")
        return {}
    settings, notes = resolve(runner.convention, opt_in, opt_out)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    return {**settings, "streams": streams}


@click.command()
@click.argument("engine", type=click.Path(path_type=Path))
@click.option("--batch", type=click.IntRange(1), default=None,
              help="Batch size (default: the engine's opt); with --scenario or --concurrency, the largest batch "
                   "the server forms from queued requests (default: the engine's max).")
@click.option("--shape", default=None, metavar="NxCxHxW", help="Full input shape instead of --batch.")
@click.option("--warmup", type=SECONDS, default=0.2, show_default=True, help="Warm-up seconds.")
@click.option("--iterations", type=click.IntRange(1), default=100, show_default=True,
              help="Minimum timed iterations.")
@click.option("--duration", type=SECONDS, default=3.0, show_default=True,
              help="Minimum timed seconds.")
@click.option("--cv-warn", type=NON_NEGATIVE, default=None,
              help=f"Warn when the latency coefficient of variation exceeds this (default {CV_WARN:g}; "
                   "tensorrt engines 0.025, as trtexec).")
@click.option("--cuda-graph", is_flag=True, help="TensorRT 10: capture the enqueue in a CUDA graph (11: default).")
@click.option("--no-data-transfers", is_flag=True,
              help="TensorRT 10: time without H2D/D2H copies (11: default).")
@click.option("--spin-wait", is_flag=True, help="TensorRT 10: spin on events instead of blocking (11: default).")
@click.option("--no-cuda-graph", is_flag=True, help="TensorRT 11: plain enqueues instead of a CUDA graph.")
@click.option("--include-data-transfers", is_flag=True, help="TensorRT 11: time the H2D/D2H copies too.")
@click.option("--no-spin-wait", is_flag=True, help="TensorRT 11: blocking-sync events instead of spinning.")
@click.option("--streams", type=click.IntRange(1), default=1, show_default=True,
              help="TensorRT: N execution contexts on N streams, for throughput (latencies then unreliable).")
@click.option("--scenario", type=click.Choice([CLOSED_LOOP, *SCENARIOS]), default=CLOSED_LOOP, show_default=True,
              help="closed-loop: harness's timed loop (below). The others are MLPerf LoadGen scenarios of --duration "
                   "seconds: one-sample requests batched up to --batch (default: the engine's max batch).")
@click.option("--target-qps", type=Number(0, lo_open=True, unit="queries/s"), default=None,
              help="server: Poisson arrivals at this many queries per second.")
@click.option("--latency-bound-ms", type=Number(0, lo_open=True, unit="ms"), default=None,
              help=f"server: VALID when p99 is within this (default {DEFAULT_BOUND_MS:g}).")
@click.option("--find-max-qps", is_flag=True,
              help="server: the highest VALID rate, by bisection from the offline throughput down.")
@click.option("--samples-per-query", type=click.IntRange(1), default=None,
              help=f"multi-stream: samples per query (default {DEFAULT_SAMPLES_PER_QUERY}, as MLPerf).")
@click.option("--official", is_flag=True,
              help="LoadGen scenarios: MLPerf's minimum durations and query counts (600 s) instead of --duration; "
                   "VALID only as LoadGen says.")
@click.option("--concurrency", default=None, metavar="N,N,...",
              help="Keep N one-sample requests in flight, for each N: throughput and p50/p99 per level, and the "
                   "knee of the latency-throughput curve.")
@click.option("--json", "json_out", type=FILE_OUT, default=None,
              help="Where to write the results (default: reports/bench/<engine>-<NxCxHxW or scenario>.json).")
@cuda_binding_option
@click.pass_context
def bench(ctx, engine, batch, shape, warmup, iterations, duration, cv_warn, cuda_graph, no_data_transfers,
          spin_wait, no_cuda_graph, include_data_transfers, no_spin_wait, streams, scenario, target_qps,
          latency_bound_ms, find_max_qps, samples_per_query, official, concurrency, json_out, cuda_binding):
    """Time an engine: warm-up, then at least --iterations and --duration; percentiles, throughput, CV.

    TensorRT engines follow the installed TensorRT's trtexec: 11.x times with CUDA graphs, spin wait and no
    data transfers by default (opt out with --no-cuda-graph, --no-spin-wait, --include-data-transfers); 10.x
    with none of them (opt in with --cuda-graph, --spin-wait, --no-data-transfers).

    --scenario runs an MLPerf LoadGen scenario instead, --concurrency a fixed number of requests in flight; both
    report energy per inference where the machine has an energy counter (NVML on NVIDIA GPUs).
    """
    from harness.commands.deploy_bench import deploy_request, run_deploy

    request = deploy_request(ctx, scenario, concurrency, batch or 1, duration, streams, target_qps,
                             latency_bound_ms, find_max_qps, samples_per_query, official)
    meta, runner = _load(engine, cuda_binding)
    if request is not None:
        if streams > 1 and meta.backend != "tensorrt":
            raise HarnessError("--streams applies to tensorrt engines only")
        size = batch or meta.batch[2]
        check_input_shape(meta, (size, *meta.input_shape), "--batch")
        run_deploy(meta, runner, replace(request, max_batch=size), json_out,
                   f"{Path(meta.artifact).name} ({_ran_on(meta, runner)}): {request.scenario}, batches up to {size}")
        return
    opts = _runner_opts(meta, runner,
                        {"cuda_graph": cuda_graph, "no_data_transfers": no_data_transfers, "spin_wait": spin_wait},
                        {"cuda_graph": no_cuda_graph, "no_data_transfers": include_data_transfers,
                         "spin_wait": no_spin_wait}, streams)
    dims = parse_shape(shape, "--shape") if shape else (batch or meta.batch[1], *meta.input_shape)
    check_input_shape(meta, dims, "--shape" if shape else "--batch")
    x = np.resize(SyntheticDataset(meta.spec).take("val", 1)[0], dims).astype(np.float32)
    on_gpu = getattr(runner, "on_gpu", False)
    with GpuMonitor(enabled=on_gpu) as gpu, EnergyMeter(on_gpu) as meter:
        stats = latency_stats(runner.time(x, warmup, iterations, duration, **opts))
    state = gpu.columns()
    # The window holds the warm-up too, at the same load: its average power over the timed throughput.
    energy = meter.columns(stats.throughput_ips * meter.seconds)
    out = json_out or Path("reports") / "bench" / f"{Path(meta.artifact).stem}-{'x'.join(map(str, dims))}.json"
    write_json(out, {"engine": meta.artifact, "backend": meta.backend, "precision": meta.precision,
                     "cuda_binding": getattr(runner, "cuda_binding", None), "cpu_isa": cpu_isa(),
                     "shape": list(dims), **stats.to_dict(),
                     **state, "scenario": CLOSED_LOOP, "valid": None, "qps": stats.throughput_ips / stats.batch,
                     "concurrency": None, **energy})  # the results first: a reader that goes away must not lose them
    rows = [(k, v) for k, v in stats.to_dict().items() if k not in ("components", "includes")]
    for part, s in stats.components.items():
        rows += [(f"{part} p50_ms", s["p50_ms"]), (f"{part} p99_ms", s["p99_ms"])]
    print_table(rows, f"{Path(meta.artifact).name} ({_ran_on(meta, runner)}): {stats.includes}")
    warnings = stats.warnings(cv_warn if cv_warn is not None else getattr(runner, "cv_warn", CV_WARN))
    for warning in warnings + ([state["gpu_state_note"]] if state["gpu_state_note"] else []):
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"energy: {energy['energy_note']}", err=True)
    click.echo(f"wrote {out}")


def _cpu_engine_of_checkpoint(path: Path) -> Path:
    from harness.backends.base import BuildOptions
    from harness.build import ENGINES_DIR
    from harness.quantize.checkpoint import load

    precision = load(path)["config"].get("dtype", "int8")  # an INT8 or an FP8 checkpoint
    quant = quant_request(precision, path)
    spec = _spec_for(None, None, None, quant)
    # build-engine's defaults, so that `harness build-engine --quant CKPT` made the artifact this reuses
    meta, _ = build_artifact(spec, "cpu", BuildOptions(precision=precision), ENGINES_DIR, quant=quant,
                             log=lambda m: click.echo(m, err=True))
    return Path(meta.artifact)


@click.command("eval")
@click.argument("engine", type=click.Path(path_type=Path))
@click.option("--dataset", default="digits", show_default=True, help=", ".join(dataset_names()))
@click.option("--split", type=click.Choice(["val", "calib", "train"]), default="val", show_default=True)
@click.option("--batch", type=click.IntRange(1), default=None, help="Batch size (default: the engine's max).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Evaluate at most this many samples.")
@click.option("--json", "json_out", type=FILE_OUT, default=None,
              help="Where to write the results (default: reports/eval/<engine>.json).")
@cuda_binding_option
def eval_cmd(engine, dataset, split, batch, limit, json_out, cuda_binding):
    """Top-1/top-5 on a dataset, and agreement with the FP32 PyTorch reference (top-1, max error, SQNR).

    ENGINE may also be a checkpoint from harness quantize: its int8 (or fp8) ONNX is built (cached) for the cpu
    backend.
    """
    if Path(engine).suffix == ".pt":
        engine = _cpu_engine_of_checkpoint(Path(engine))
    meta, runner = _load(engine, cuda_binding)
    data = resolve_dataset(dataset, meta.spec)
    size = batch or meta.batch[2]
    check_input_shape(meta, (size, *meta.input_shape), "--batch")
    reference = reference_outputs(data, split, size, limit)
    result, logits, reference = evaluate_outputs(runner, data, split, (meta.batch[0], size), limit, reference)
    deployed = check_deployed(runner, data, split, (meta.batch[0], size), logits, reference)
    out = json_out or Path("reports") / "eval" / f"{Path(meta.artifact).stem}.json"
    write_json(out, {"engine": meta.artifact, "precision": meta.precision, "quant": meta.quant, "dataset": dataset,
                     "cuda_binding": getattr(runner, "cuda_binding", None), "cpu_isa": cpu_isa(),
                     "split": split, **result.to_dict(), **(deployed.columns() if deployed else {})})
    rows = [("samples", result.samples), ("top1 %", result.top1), ("top5 %", result.top5),
            ("fp32 torch top1 %", result.reference_top1), ("top1 change vs fp32 (points)", result.top1_delta),
            ("top1 agreement with fp32 torch %", result.top1_agreement),
            ("max abs error vs fp32 torch", result.max_abs_error), ("SQNR vs fp32 torch dB", result.sqnr_db)]
    if deployed:  # the file as written above; ONNX Runtime's fused integer kernels (what bench times) here
        rows += [("deployed run: SQNR vs fp32 torch dB", deployed.deployed_sqnr_db),
                 ("deployed run: top1 agreement %", deployed.deployed_top1_agreement_pct)]
    print_table(rows, f"{Path(meta.artifact).name} ({_ran_on(meta, runner)}) on {dataset}/{split}"
                + ("" if data.has_labels else " (no labels: accuracy not applicable)"))
    if result.labels_unusable:
        click.echo(f"warning: top-1/top-5 not scored: {result.labels_unusable}; evaluate on a dataset of the model's "
                   "classes (--dataset imagefolder:PATH); agreement with FP32 still holds", err=True)
    if result.reference_degenerate:
        click.echo(f"warning: the FP32 reference's outputs are degenerate ({result.reference_degenerate}): agreement, "
                   "max abs error and SQNR are not scored; load trained weights with --weights", err=True)
    if deployed and deployed.warning():
        click.echo(f"warning: {deployed.warning()}", err=True)
    click.echo(f"wrote {out}")
