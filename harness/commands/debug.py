"""compare, debug layers, debug qdq, debug demo: where accuracy goes between two artifacts, layer by layer."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from harness.commands.common import (
    DB,
    DIR_OUT,
    FILE_OUT,
    NON_NEGATIVE,
    PERCENT,
    Number,
    PerOutput,
    fmt,
    model_options,
    print_table,
    quant_options,
    write_json,
)
from harness.errors import HarnessError


def _log(message: str) -> None:
    click.echo(message, err=True)


def _inputs(sources, load_inputs, dataset, split, limit, seed) -> tuple[np.ndarray, dict]:
    """The one input set both sources run: a golden file's own, a saved set, a dataset split, or seeded noise."""
    from harness.debug.compare import load_inputs as read_inputs

    golden = next((s for s in sources if s.golden), None)
    if golden is not None:
        if load_inputs or dataset:
            raise HarnessError("--load-outputs brings its own inputs: drop --load-inputs and --dataset")
        return golden.golden["input"], golden.golden["meta"]["inputs"]
    if load_inputs and dataset:
        raise HarnessError("--load-inputs and --dataset both choose the inputs: give one")
    if load_inputs:
        x, meta = read_inputs(load_inputs)
        return x, {**meta["inputs"], "file": str(load_inputs)}
    if dataset:
        from harness.data.datasets import resolve_dataset

        spec = next((s.spec for s in sources if s.spec), None)
        if spec is None:
            raise HarnessError(f"--dataset {dataset} needs to know the model's input: compare an engine, a "
                               "checkpoint or torch:MODEL, or pass --load-inputs FILE.npz")
        x, _ = resolve_dataset(dataset, spec).take(split, limit)
        return x, {"kind": "dataset", "dataset": dataset, "split": split, "limit": limit}
    shape = next((s.input_shape for s in sources if s.input_shape), None)
    if shape is None:
        raise HarnessError("the ONNX input has dynamic dimensions besides the batch: pass --load-inputs FILE.npz")
    x = np.random.default_rng(seed).standard_normal((limit, *shape), dtype=np.float32)
    return x, {"kind": "synthetic", "seed": seed, "count": limit}


def _check_fits(source, x: np.ndarray) -> None:
    if source.input_shape and tuple(x.shape[1:]) != tuple(source.input_shape):
        raise HarnessError(f"the inputs are Nx{'x'.join(map(str, x.shape[1:]))} but {source.label} takes "
                           f"Nx{'x'.join(map(str, source.input_shape))}: compare artifacts of one model")


def _diff_rows(d) -> list[tuple[str, object]]:
    rows = [("max / mean / median / p99 abs error", " / ".join(fmt(v) for v in
                                                              (d.max_abs, d.mean_abs, d.median_abs, d.p99_abs))),
            ("max / mean / median / p99 rel error", " / ".join(fmt(v) for v in
                                                              (d.max_rel, d.mean_rel, d.median_rel, d.p99_rel))),
            ("cosine similarity", f"{d.cosine:.6f}"), ("SQNR dB", d.sqnr_db)]
    if d.top1_agreement is not None:
        rows += [("top-1 agreement %", d.top1_agreement), (f"top-{d.k} agreement %", d.topk_agreement)]
    rows += [("NaN / Inf (reference, test)", f"{d.nan_ref} / {d.inf_ref}, {d.nan_test} / {d.inf_test}")]
    return rows


CRITERIA = ("default", "fp32", "fp16", "int8", "int8-fp16")


@click.command()
@click.argument("sources", nargs=-1, metavar="A [B]")
@click.option("--weights", default=None, metavar="FILE", help="state_dict for a torch:MODEL source.")
@click.option("--input-shape", default=None, metavar="CxHxW",
              help="Input size of a torch:MODEL source: a user's model (package.module:factory), or a torchvision "
                   "model at another size than its native one.")
@click.option("--dataset", default=None, help="Inputs from a dataset split (digits, imagefolder:PATH, synthetic) "
                                              "instead of seeded noise.")
@click.option("--split", type=click.Choice(["val", "calib", "train"]), default="val", show_default=True)
@click.option("--limit", type=click.IntRange(1), default=64, show_default=True, help="Number of inputs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic inputs.")
@click.option("--load-inputs", type=click.Path(path_type=Path), default=None, help="Inputs from FILE.npz.")
@click.option("--save-inputs", type=FILE_OUT, default=None, help="Write the inputs to FILE.npz.")
@click.option("--save-outputs", type=FILE_OUT, default=None,
              help="Write A's outputs with the inputs and settings to FILE.npz (a golden file).")
@click.option("--load-outputs", type=click.Path(path_type=Path), default=None,
              help="A golden file as the reference A (its inputs are used); then give B only.")
@click.option("--atol", multiple=True, type=PerOutput(NON_NEGATIVE), metavar="[OUTPUT=]X",
              help="Absolute tolerance (per output: NAME=X).")
@click.option("--rtol", multiple=True, type=PerOutput(NON_NEGATIVE), metavar="[OUTPUT=]X",
              help="Relative tolerance (per output: NAME=X).")
@click.option("--min-cosine", type=Number(-1, 1), default=None, help="Fail below this cosine similarity.")
@click.option("--min-sqnr", type=DB, default=None, help="Fail below this SQNR (dB).")
@click.option("--min-top1-agreement", type=PERCENT, default=None, help="Fail below this %.")
@click.option("--criteria", type=click.Choice(CRITERIA), default=None,
              help="Per-precision default criteria (SQNR and top-1 agreement, README 'Default criteria') for "
                   "those not given: default takes the less precise side's precision.")
@click.option("--top-k", type=click.IntRange(1), default=5, show_default=True, help="k of the top-k agreement.")
@click.option("--plot", type=FILE_OUT, default=None, help="PNG of |error| against |reference|.")
@click.option("--json", "json_out", type=FILE_OUT, default=None, help="Figures as JSON.")
def compare(sources, weights, input_shape, dataset, split, limit, seed, load_inputs, save_inputs, save_outputs,
            load_outputs, atol, rtol, min_cosine, min_sqnr, min_top1_agreement, criteria, top_k, plot, json_out):
    """Run two artifacts on the same inputs and compare every output of B with A's (exit 1 on a failed criterion).

    A and B: an engine of any backend, an ONNX file (CPU reference), a quantization checkpoint (PyTorch
    fake-quant), torch:MODEL (FP32 PyTorch) or a golden .npz. Not to be confused with `harness report compare`,
    which compares two sweep results. Without a criterion the figures are printed and nothing is judged but
    NaN/Inf that A lacks.
    """
    from harness.debug.compare import (
        Tolerances,
        check_pair,
        compare_outputs,
        error_plot,
        golden_source,
        looser_precision,
        open_source,
        write_golden,
    )

    wanted = 1 if load_outputs else 2
    only_saving = not load_outputs and len(sources) == 1 and (save_outputs or save_inputs)
    if len(sources) != wanted and not only_saving:
        raise HarnessError("give two sources A B (or B alone with --load-outputs, or A alone with --save-outputs "
                           f"/ --save-inputs); got {len(sources)}")
    if save_outputs and load_outputs:
        raise HarnessError("--save-outputs with --load-outputs would copy the golden file: drop one")
    if input_shape and not any(s.startswith("torch:") for s in sources):
        raise HarnessError("--input-shape sizes a torch:MODEL source; the other sources carry their own input shape")
    tolerances = Tolerances(dict(atol), dict(rtol), min_cosine, min_sqnr, min_top1_agreement)
    if only_saving and (tolerances.given or criteria):
        raise HarnessError("criteria judge B against A: give B too, or drop the criteria")
    opened = ([golden_source(load_outputs)] if load_outputs else []) + [open_source(s, weights, input_shape)
                                                                       for s in sources]
    if len(opened) == 2:
        check_pair(*opened)
        if criteria:
            precision = criteria if criteria != "default" else looser_precision(*(s.precision for s in opened))
            if precision is None:
                raise HarnessError("--criteria default: neither source says what precision it computes in (a golden "
                                   "file from an older harness); name the criteria: --criteria fp32|fp16|int8")
            tolerances = tolerances.with_defaults(precision)
        names = next((s.outputs for s in opened if s.named and s.outputs), None)
        if names:
            tolerances.check_outputs(names)
    x, settings = _inputs(opened, load_inputs, dataset, split, limit, seed)
    for source in opened:
        _check_fits(source, x)
    if save_inputs:
        click.echo(f"wrote {write_golden(save_inputs, x, settings)} ({len(x)} inputs)")
    ref = opened[0].run(x)
    if save_outputs:
        click.echo(f"wrote {write_golden(save_outputs, x, settings, opened[0], ref)} ({', '.join(ref)} of "
                   f"{opened[0].label})")
    if len(opened) == 1:
        return
    a, b = opened
    if tolerances.defaults and settings.get("kind") == "synthetic" and tolerances.defaults.startswith("int8"):
        _log(f"warning: the {tolerances.defaults} defaults assume inputs like the data the model was calibrated on; "
             "seeded noise is not (INT8 scales clip it): pass --dataset or --load-inputs")
    rows = compare_outputs(a, ref, b, b.run(x), tolerances, top_k)
    where = settings.get("kind", "inputs")
    detail = (f"{settings['dataset']}/{settings['split']}" if where == "dataset"
              else f"seed {settings['seed']}" if where == "synthetic" else where)
    passed = all(d.passed for d, _, _ in rows) if rows else not tolerances.given
    if json_out:  # the results first, then what is printed
        write_json(json_out, {"a": a.label, "b": b.label, "inputs": settings, "samples": len(x),
                              "criteria": tolerances.describe() if tolerances.given else None,
                              "outputs": [d.to_dict() for d, _, _ in rows], "passed": passed})
    click.echo(f"A (reference) {a.label}\nB (test)      {b.label}\n{len(x)} inputs ({where}, {detail})")
    click.echo(f"criteria: {tolerances.describe()}" if tolerances.given else
               "criteria: none given (figures only; NaN/Inf that A lacks still fails)")
    for d, _, _ in rows:
        print_table(_diff_rows(d), f"output {d.name} ({'x'.join(map(str, d.shape))})")
        verdict = "PASS" if tolerances.given else "figures only, no criterion given"
        click.echo(f"  {verdict if d.passed else 'FAIL: ' + '; '.join(d.failures)}")
    if not rows:
        click.echo(f"no outputs to compare ({len(x)} inputs)")
    if json_out:
        click.echo(f"wrote {json_out}")
    if plot and rows:
        click.echo(f"wrote {error_plot(rows, plot, (a.label, b.label))}")
    if not passed:
        raise click.exceptions.Exit(1)


@click.group()
def debug():
    """Find where accuracy goes: per-layer divergence (layers) and the smallest float fallback (qdq)."""


@debug.command()
@click.option("-o", "--output", type=FILE_OUT, default=Path("digits-outlier.pt"),
              show_default=True, help="Where to write the state_dict.")
def demo(output):
    """Write digits-resnet weights with one outlier channel (same function in float) on which naive INT8 breaks.

    Use them with --model digits-resnet --weights FILE, e.g. --precision int8 --mode naive --calib max.
    """
    from harness.debug.demo import OUTLIER_CHANNEL, OUTLIER_LAYER, OUTLIER_SCALE, write_outlier_weights

    path = write_outlier_weights(output)
    click.echo(f"wrote {path}: digits-resnet with channel {OUTLIER_CHANNEL} of {OUTLIER_LAYER}'s input scaled by "
               f"{OUTLIER_SCALE:g} (and its weights by 1/{OUTLIER_SCALE:g})")


def _read_onnx(path: Path, spec, role: str = "ONNX file"):
    """A user's ONNX file, checked to be a model that takes the model's input."""
    from harness.fileio import read_user_onnx

    model = read_user_onnx(path, role, "give an ONNX file (harness export writes one)")
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]
    if all(dims) and tuple(dims) != tuple(spec.input_shape):
        raise HarnessError(f"{path} takes Nx{'x'.join(map(str, dims))}, not the Nx"
                           f"{'x'.join(map(str, spec.input_shape))} of {spec.name}: pass its --model "
                           "(and --input-shape)")
    return model


def _require_qdq(path: Path, model) -> list[str]:
    """The layers of a quantized ONNX that read a Q/DQ pair; a file with none (a float file) is refused."""
    from harness.debug.qdq_bisect import onnx_layers

    layers = list(onnx_layers(model))
    if not layers:
        raise HarnessError(f"{path}: no weighted layer reads a Q/DQ pair; give a quantized ONNX")
    return layers


def _files_or_options(files, wanted: str, quant_file, given) -> None:
    options = [k for k, v in given.items() if v not in (None, ()) and k != "dataset"]
    if files and (quant_file or options):
        raise HarnessError(f"give {wanted}, or the model and quantization options (--mode, --calib, --quant ...), "
                           "not both")


def _quant_files(files, model_name, weights, input_shape, precision, quant_file, engines_dir, given):
    """(spec, float ONNX, quantized ONNX): the two files given, or both exported (cached) for the model + request."""
    import onnx

    from harness.build import onnx_for
    from harness.commands.common import quant_request
    from harness.models.registry import resolve_model

    _files_or_options(files, "FLOAT.onnx QUANT.onnx", quant_file, given)
    if files:
        if len(files) != 2:
            raise HarnessError(f"give FLOAT.onnx QUANT.onnx, or the model and quantization options; got {len(files)} "
                               "file(s)")
        spec = resolve_model(model_name, weights, input_shape)
        float_model, quant_model = _read_onnx(files[0], spec, "FLOAT"), _read_onnx(files[1], spec, "QUANT")
        _require_qdq(files[1], quant_model)
        return spec, float_model, quant_model
    quant = quant_request(precision, quant_file, **given)
    if quant is None:
        raise HarnessError(f"--precision {precision} has no quantized file to debug: use int8, int8-fp16, fp8 or "
                           "fp8-fp16")
    from harness.commands.pipeline import _spec_for

    spec = _spec_for(model_name, weights, input_shape, quant)
    float_path = onnx_for(spec, "fp32", engines_dir, None, _log)
    quant_path = onnx_for(spec, precision, engines_dir, quant, _log)
    return spec, onnx.load(float_path), onnx.load(quant_path)


def _dataset_inputs(spec, dataset, split, limit):
    from harness.data.datasets import resolve_dataset

    return resolve_dataset(dataset or "digits", spec).take(split, limit)


_FILES = click.argument("files", nargs=-1, metavar="[FLOAT.onnx QUANT.onnx]", type=click.Path(path_type=Path))
_PRECISION = click.option("--precision", type=click.Choice(["int8", "int8-fp16", "fp8", "fp8-fp16"]), default="int8",
                          show_default=True)
_QUANT = click.option("--quant", "quant_file", type=click.Path(path_type=Path), default=None,
                      help="Quantization checkpoint from harness quantize.")
_SPLIT = click.option("--split", type=click.Choice(["val", "calib", "train"]), default="val", show_default=True,
                      help="Split of --dataset (the calibration dataset, digits by default) to measure on.")


def _engines_option(f):
    from harness.build import ENGINES_DIR

    return click.option("--engines-dir", type=DIR_OUT, default=ENGINES_DIR, show_default=True,
                        help="Cache of exports, calibration and debug steps.")(f)


def _quantized_model_options(f):
    """What the quantized model is and the data it is measured on, as debug layers and debug qdq take them."""
    for option in (_SPLIT, _engines_option, quant_options, _QUANT, _PRECISION, model_options):
        f = option(f)
    return f


@debug.command("layers")
@_FILES
@_quantized_model_options
@click.option("--limit", type=click.IntRange(1), default=64, show_default=True, help="Inputs to measure on.")
@click.option("--backend", type=click.Choice(["cpu", "tensorrt"]), default="cpu", show_default=True,
              help="Runs the quantized file: cpu (ONNX Runtime, every tensor an output) or tensorrt (debug "
                   "tensors, fusions kept).")
@click.option("--min-sqnr", type=DB, default=20.0, show_default=True,
              help="Name the first layer whose SQNR against the float file falls below this (dB).")
@click.option("--plot", type=FILE_OUT, default=None, help="PNG of SQNR along the depth.")
@click.option("--json", "json_out", type=FILE_OUT, default=None, help="The table as JSON.")
def layers_cmd(files, model_name, weights, input_shape, precision, quant_file, engines_dir, split, limit, backend,
               min_sqnr, plot, json_out, **given):
    """Per-layer SQNR / cosine / max error of a quantized ONNX against its float ONNX, in graph order.

    Give the two files, or the model and quantization options (both are exported, cached). Tensors are matched
    by the layer producing them, across Q/DQ insertion and BatchNorm folding.
    """
    from harness.debug.layers import divergence, first_below, largest_drop, sqnr_plot

    _backend_available(backend)
    spec, float_model, quant_model = _quant_files(files, model_name, weights, input_shape, precision, quant_file,
                                                  engines_dir, given)
    x, _ = _dataset_inputs(spec, given.get("dataset"), split, limit)
    runner = None
    if backend == "tensorrt":
        from harness.debug.trt_debug import debug_tensors

        runner = debug_tensors(quant_model, engines_dir, len(x))
    rows = divergence(float_model, quant_model, x, runner)
    width = max(len(r.layer) for r in rows)
    click.echo(f"{spec.name}: quantized against float, {len(x)} inputs ({given.get('dataset') or 'digits'}/{split}), "
               f"{backend}")
    click.echo(f"  {'layer'.ljust(width)}  {'SQNR dB':>8s}  {'cosine':>8s}  {'max abs':>9s}  {'drop dB':>8s}")
    for r in rows:
        if r.note:
            click.echo(f"  {r.layer.ljust(width)}  {r.note}")
        else:
            click.echo(f"  {r.layer.ljust(width)}  {fmt(r.sqnr_db):>8s}  {r.cosine:8.5f}  {fmt(r.max_abs):>9s}  "
                       f"{fmt(r.drop_db):>8s}")
    first, worst = first_below(rows, min_sqnr), largest_drop(rows)
    if first is None:
        click.echo(f"every matched layer is at or above {min_sqnr:g} dB")
    else:
        click.echo(f"first layer below {min_sqnr:g} dB: {first.layer} at {first.sqnr_db:.2f} dB")
    if worst is not None:
        click.echo(f"largest drop in one layer: {worst.layer}, {worst.drop_db:.2f} dB")
    if plot:
        click.echo(f"wrote {sqnr_plot(rows, plot, min_sqnr, f'{spec.name}: per-layer SQNR, quantized vs float')}")
    if json_out:
        write_json(json_out, {"model": spec.name, "samples": len(x), "backend": backend, "min_sqnr": min_sqnr,
                              "first_below": first.layer if first else None,
                              "largest_drop": worst.layer if worst else None, "layers": [r.to_dict() for r in rows]})
        click.echo(f"wrote {json_out}")


def _backend_available(backend: str) -> None:
    """--backend tensorrt on a machine without TensorRT: refused before any export or calibration."""
    if backend != "cpu":
        from harness.build import backend_for

        backend_for(backend)


def _calibration_dataset(quant: dict) -> str:
    """The dataset a quantization request calibrates on (a checkpoint's own), known before calibrating."""
    if "checkpoint" in quant:
        from harness.quantize.checkpoint import load

        return load(Path(quant["checkpoint"]))["config"].get("dataset") or "digits"
    return quant.get("dataset") or "digits"


def _labels_for(target, data) -> None:
    if target.max_top1_drop is not None and not data.has_labels:
        raise HarnessError(f"--max-top1-drop needs labels and dataset {data.name} has none: use "
                           "--min-top1-agreement or --min-sqnr")


def _step_row(i: int, s) -> str:
    layers = ", ".join(s.floated) if len(s.floated) <= 4 else f"{', '.join(s.floated[:4])} +{len(s.floated) - 4}"
    return (f"  {i:>4d}  {len(s.floated):>8d}  {fmt(s.top1):>6s}  {fmt(s.top1_drop):>6s}  {fmt(s.top1_agreement):>7s}"
            f"  {fmt(s.sqnr_db):>7s}  {fmt(s.latency_p50_ms):>7s}  {'pass' if s.passed else 'FAIL':4s}"
            f"{' (cached)' if s.cached else '':9s}  {layers or '-'}")


@debug.command("qdq")
@click.argument("quant_onnx", required=False, type=click.Path(path_type=Path), metavar="[QUANT.onnx]")
@_quantized_model_options
@click.option("--limit", type=click.IntRange(1), default=400, show_default=True, help="Inputs each step is measured "
                                                                                       "on.")
@click.option("--backend", type=click.Choice(["cpu", "tensorrt"]), default="cpu", show_default=True,
              help="Where each step's Q/DQ ONNX is built and measured.")
@click.option("--max-top1-drop", type=PERCENT, default=None,
              help="Target: top-1 at most this many points below the FP32 model's (labelled data).")
@click.option("--min-top1-agreement", type=PERCENT, default=None,
              help="Target: argmax agrees with the FP32 model's on at least this % of inputs.")
@click.option("--min-sqnr", type=DB, default=None, help="Target: output SQNR against FP32 of at least this (dB).")
@click.option("--check", "check_command", default=None, metavar="COMMAND",
              help="Target: a shell command that exits 0 when a step is good enough (any other status: it is not); "
                   "it sees $HARNESS_ONNX, $HARNESS_ENGINE and $HARNESS_SKIP (comma-separated layers in float). "
                   "Exit 126/127 (cannot run), a signal or --check-timeout end the search as an error.")
@click.option("--check-timeout", type=Number(0, lo_open=True, unit="s"), default=3600.0, show_default=True,
              help="Seconds one --check run may take before it is killed and the search stops.")
@click.option("--latency", is_flag=True, help="Also time each step (p50 at the artifact's opt batch).")
@click.option("-o", "--output", type=FILE_OUT, default=Path("qdq-skip.txt"), show_default=True,
              help="The final fallback set as a skip list for --skip-from.")
@click.option("--json", "json_out", type=FILE_OUT, default=None, help="Every step as JSON.")
def qdq_cmd(quant_onnx, model_name, weights, input_shape, precision, quant_file, engines_dir, split, limit, backend,
            max_top1_drop, min_top1_agreement, min_sqnr, check_command, check_timeout, latency, output, json_out,
            **given):
    """Find a small set of layers to leave in float (their Q/DQ removed) that meets an accuracy target.

    Bisection over the quantized layers ordered by sensitivity, then a pass that puts back into INT8 every layer
    the target does not need; the fallback follows --skip's rules (quantizers left idle go too: a residual
    shortcut's once its Add no longer feeds an INT8 layer). Steps are cached under --engines-dir: rerun to
    resume. Exit 1 when even every quantized layer in float misses the target.
    """
    from harness.build import library_versions
    from harness.commands.common import quant_request, refuse_modelopt
    from harness.commands.pipeline import _spec_for
    from harness.data.datasets import resolve_dataset
    from harness.debug.qdq_bisect import Search, StepCache, Target, measurer, ranked_candidates, skip_file_text
    from harness.fileio import atomic_write
    from harness.quantize.checkpoint import quantized, weights_sha

    target = Target(max_top1_drop, min_top1_agreement, min_sqnr, check_command, check_timeout)
    _backend_available(backend)
    settings = {"backend": backend, "split": split, "limit": limit, "versions": library_versions()}
    if quant_onnx is not None:
        from harness.build import sha256_file
        from harness.debug.qdq_bisect import onnx_fallback, onnx_ranking
        from harness.models.registry import resolve_model

        _files_or_options([quant_onnx], "QUANT.onnx", quant_file, given)
        spec = resolve_model(model_name, weights, input_shape)
        model = _read_onnx(quant_onnx, spec, "QUANT.onnx")
        layer_names = _require_qdq(quant_onnx, model)
        data = resolve_dataset(given.get("dataset") or "digits", spec)
        settings |= {"onnx": sha256_file(quant_onnx), "model": spec.to_dict(), "weights": weights_sha(spec)}
        title = f"{spec.name} {quant_onnx}"

        def make_onnx(floated):
            return onnx_fallback(model, floated)

        def rank():
            return onnx_ranking(model, data.take("calib", min(limit, 256))[0])
    else:
        from harness.debug.qdq_bisect import model_fallback
        from harness.quantize.replace import quant_layers

        refuse_modelopt(given.get("tool"))
        quant = quant_request(precision, quant_file, **given)
        spec = _spec_for(model_name, weights, input_shape, quant)
        data = resolve_dataset(_calibration_dataset(quant), spec)
        _labels_for(target, data)  # before calibration, which may take minutes
        qm = quantized(spec, quant, Path(engines_dir) / "calib", _log)
        settings |= {"model": spec.to_dict(), "weights": weights_sha(spec), "quant": quant, "precision": precision}
        title = f"{spec.name} {precision} {qm.config.mode}/{qm.config.calib}"
        make_onnx = model_fallback(qm, precision)
        layer_names = list(quant_layers(qm.model))

        def rank():
            return ranked_candidates(qm, data.take("calib", min(limit, 256))[0], _log)
    _labels_for(target, data)
    cache = StepCache(Path(engines_dir) / "debug-qdq", settings, _log)
    order = cache.order(rank)
    click.echo(f"{title} on {backend}: {len(order)} quantized layers, target {target.describe()} on "
               f"{data.name}/{split}")
    search = Search(order, measurer(spec, make_onnx, precision, backend, engines_dir, data, split, limit, target,
                                    cache, latency, _log))
    chosen = search.run(_log)
    click.echo(f"  {'step':>4s}  {'in float':>8s}  {'top1 %':>6s}  {'drop':>6s}  {'agree %':>7s}  {'SQNR dB':>7s}  "
               f"{'p50 ms':>7s}  result           layers in float")
    for i, step in enumerate(search.steps, 1):
        click.echo(_step_row(i, step))
    fresh = sum(not s.cached for s in search.steps)
    click.echo(f"{len(search.steps)} evaluations ({fresh} measured, {len(search.steps) - fresh} from the cache "
               f"{cache.folder / cache.key})")
    if json_out:
        write_json(json_out, {"model": spec.name, "precision": precision, "backend": backend,
                              "source": str(quant_onnx) if quant_onnx else settings["quant"],
                              "target": target.describe(), "order": order, "fallback": chosen,
                              "evaluations": len(search.steps), "measured": fresh,
                              "steps": [s.to_dict() for s in search.steps]})
        click.echo(f"wrote {json_out}")
    if chosen is None:
        click.echo(f"even all {len(order)} quantized layers in float miss the target", err=True)
        raise click.exceptions.Exit(1)
    header = f"harness debug qdq: {title}, target {target.describe()} on {data.name}/{split} ({limit})"
    atomic_write(output, skip_file_text(header, chosen, layer_names))
    if quant_onnx is not None:
        final = Path(output).with_suffix(".onnx")
        atomic_write(final, make_onnx(chosen).SerializeToString())
        click.echo(f"fallback: {', '.join(chosen) or 'none needed'}; wrote {output} and {final} (the file with "
                   "their Q/DQ removed)")
        return
    made_with = (f"the options {quant_file} was made with (--mode {qm.config.mode} --calib {qm.config.calib} ...)"
                 if quant_file else "the same quantization options")
    click.echo(f"fallback: {', '.join(chosen) or 'none needed'}; wrote {output} (use it with --skip-from and "
               f"{made_with})")
