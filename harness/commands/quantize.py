"""quantize, sensitivity, qat, inspect: PTQ checkpoints, per-layer sensitivity, QAT, and Q/DQ ONNX readiness."""

from __future__ import annotations

from pathlib import Path

import click

from harness.build import ENGINES_DIR
from harness.commands.common import (
    DIR_OUT,
    FILE_OUT,
    Number,
    make_quant_config,
    model_options,
    print_table,
    quant_options,
    quantizer_option,
    refuse_modelopt,
    write_json,
)
from harness.fileio import atomic_write
from harness.models.registry import resolve_model

_ENGINES = click.option("--engines-dir", type=DIR_OUT, default=ENGINES_DIR, show_default=True,
                        help="Cache root; calibration lands in <engines-dir>/calib.")


def _log(message: str) -> None:
    click.echo(message, err=True)


_TYPE = click.option("--precision", "dtype", type=click.Choice(["int8", "fp8"]), default="int8", show_default=True,
                     help="What the checkpoint's scales quantize to: INT8, or FP8 E4M3 (calibrators max or "
                          "percentile; export it with --precision fp8 or fp8-fp16).")


def _calibrated(model_name, weights, input_shape, engines_dir, given):
    from harness.quantize.checkpoint import quantized

    refuse_modelopt(given.get("tool"))
    spec = resolve_model(model_name, weights, input_shape)
    cfg = make_quant_config(**given)
    return quantized(spec, cfg.to_dict(), Path(engines_dir) / "calib", _log)


def _summary(qm) -> list[tuple[str, object]]:
    from pytorch_quantization.nn.modules._utils import QuantMixin

    from harness.quantize.blocks import quantized_residuals
    from harness.quantize.replace import quant_layers

    weighted = [n for n, m in quant_layers(qm.model).items() if isinstance(m, QuantMixin)]
    residual = quantized_residuals(qm.model)
    calibrators = sorted(set(qm.calibrators.values()))
    return [("mode", qm.config.mode), ("activation calibrators", ", ".join(calibrators)),
            ("weighted layers", len(weighted)), ("residual Adds quantized on the shortcut", len(residual)),
            ("activation quantizers (shared counted once)", len(qm.calibrators)),
            ("layers left in float", len(qm.skipped) or "none"),
            *[(f"  {name}", qm.reasons.get(name, "")) for name in qm.skipped],
            ("activation quantizers with no range (float)", len(qm.off) or "none"),
            *[(f"  {name}", why) for name, why in qm.off.items()]]


@click.command()
@model_options
@_TYPE
@quant_options
@_ENGINES
@click.option("-o", "--output", type=FILE_OUT, default=None,
              help="Checkpoint to write (default <model>-<mode>-<calib>.quant.pt; FP8: <model>-fp8-<mode>-<calib>).")
def quantize(model_name, weights, input_shape, engines_dir, output, **given):
    """Calibrate a model and write its quantization checkpoint (config + every quantizer's amax).

    export / build-engine --precision int8 (fp8 for --precision fp8) --quant FILE use it; the same request again
    reuses the cache.
    """
    from harness.quantize.checkpoint import save

    qm = _calibrated(model_name, weights, input_shape, engines_dir, given)
    kind = "" if qm.config.dtype == "int8" else f"{qm.config.dtype}-"
    out = output or Path(f"{qm.spec.name.replace(':', '_')}-{kind}{qm.config.mode}-{qm.config.calib}.quant.pt")
    save(qm, out)
    print_table(_summary(qm), f"{qm.spec.name} quantized ({qm.config.dtype}, {qm.config.mode}, {qm.config.calib})")
    click.echo(f"wrote {out}")


@click.command()
@model_options
@_TYPE
@quant_options
@_ENGINES
@click.option("--metric", type=click.Choice(["sqnr", "top1"]), default="sqnr", show_default=True,
              help="SQNR of the logits against FP32 (no labels needed), or top-1 accuracy.")
@click.option("--split", type=click.Choice(["calib", "val", "train"]), default="calib", show_default=True,
              help="Data to rank on (calib keeps the validation split unseen).")
@click.option("--limit", type=click.IntRange(1), default=256, show_default=True, help="Samples to rank on.")
@click.option("--top", type=click.IntRange(0), default=2, show_default=True,
              help="Layers written to the skip list.")
@click.option("-o", "--output", type=FILE_OUT, default=Path("skip.txt"), show_default=True,
              help="Skip list for --skip-from.")
@click.option("--json", "json_out", type=FILE_OUT, default=None, help="Full table as JSON.")
def sensitivity(model_name, weights, input_shape, engines_dir, metric, split, limit, top, output, json_out, **given):
    """Rank layers by what leaving each one alone in float recovers (ties: by the metric with it alone in INT8)."""
    from harness.data.datasets import resolve_dataset
    from harness.errors import HarnessError
    from harness.quantize.sensitivity import analyse, most_sensitive

    qm = _calibrated(model_name, weights, input_shape, engines_dir, given)
    data = resolve_dataset(qm.config.dataset, qm.spec)
    if metric == "top1" and not data.has_labels:
        raise HarnessError(f"--metric top1 needs labels and --dataset {data.name} has none: use --metric sqnr")
    x, y = data.take(split, limit)
    base, ranked = analyse(qm.model, x, y, metric, skip=qm.skipped, log=_log)
    unit = "dB" if metric == "sqnr" else "%"
    click.echo(f"{qm.spec.name} {qm.config.mode}/{qm.config.calib} on {data.name}/{split} ({len(x)} samples): "
               f"{metric} fp32 {base['fp32']:.2f} {unit}, all quantized {base['int8']:.2f} {unit}")
    click.echo(f"  {'layer':40s} {'gain if float':>14s} {qm.config.dtype + ' alone':>11s}")
    for r in ranked:
        click.echo(f"  {r.layer:40s} {r.gain:14.3f} {r.quant_alone:11.3f}")
    chosen = most_sensitive(ranked, top)
    lines = [f"# harness sensitivity: {qm.spec.name} {qm.config.mode}/{qm.config.calib}, {metric} on {split}",
             *[f"{r.layer}  # gain {r.gain:.3f} {unit}" for r in ranked if r.layer in chosen]]
    atomic_write(output, "\n".join(lines) + "\n")
    if json_out:
        write_json(json_out, {"model": qm.spec.name, "config": qm.config.to_dict(), "metric": metric,
                              "split": split, "samples": len(x), **base, "layers": [r.to_dict() for r in ranked]})
    click.echo(f"wrote {output} ({len(chosen)} layers; use it with --skip-from)")


@click.command()
@click.option("--quant", "quant_file", type=click.Path(path_type=Path), required=True,
              help="Calibrated checkpoint from harness quantize.")
@click.option("--epochs", type=click.IntRange(1), default=None,
              help="Default: 10 % of the digits-resnet schedule (3).")
@click.option("--lr", type=Number(0, lo_open=True), default=None,
              help="Initial LR, cosine-annealed (default: 1 % of the base LR, 5e-4).")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--limit", type=click.IntRange(1), default=None, help="Train on at most this many samples an epoch.")
@click.option("-o", "--output", type=FILE_OUT, required=True, help="Fine-tuned checkpoint.")
@quantizer_option
def qat(quant_file, epochs, lr, batch_size, limit, output, tool):
    """Quantization-aware fine-tuning from a calibrated checkpoint (scales frozen); top-1 before and after."""
    refuse_modelopt(tool)
    from harness.data.datasets import resolve_dataset
    from harness.errors import HarnessError
    from harness.measure.accuracy import topk_accuracy
    from harness.quantize import checkpoint
    from harness.quantize import qat as qat_mod
    from harness.quantize.replace import floated, quant_layers
    from harness.quantize.sensitivity import logits

    qm = checkpoint.restore(checkpoint.load(quant_file), _log)
    data = resolve_dataset(qm.config.dataset, qm.spec)
    x, y = data.take("val", 100_000)
    if y is None:
        raise HarnessError(f"dataset {data.name} has no labels: QAT needs a labelled dataset")
    layers = quant_layers(qm.model)
    with floated(layers, list(layers)):
        fp32 = topk_accuracy(logits(qm.model, x), y, 1)
    before = topk_accuracy(logits(qm.model, x), y, 1)
    epochs, lr = epochs or qat_mod.QAT_EPOCHS, lr or qat_mod.QAT_LR
    qat_mod.finetune(qm.model, data, epochs, lr, batch_size, limit, log=_log)
    after = topk_accuracy(logits(qm.model, x), y, 1)
    qm.extra["qat"] = {"epochs": epochs, "lr": lr, "top1_before": before, "top1_after": after, "fp32_top1": fp32}
    checkpoint.save(qm, output, with_weights=True)
    print_table([("fp32 top1 %", fp32), ("ptq top1 %", before), ("qat top1 %", after), ("epochs", epochs),
                 ("initial lr", lr)], f"{qm.spec.name} QAT on {data.name} (val split, PyTorch fake-quant)")
    click.echo(f"wrote {output}")


@click.command("inspect")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--strict", is_flag=True, help="Exit 1 if any hazard is found (for CI).")
@click.option("--json", "json_out", type=FILE_OUT, default=None, help="Findings as JSON.")
def inspect_cmd(model, strict, json_out):
    """TensorRT-readiness of an ONNX: quantized inputs, residual shortcuts, shared scales, hazards, and the
    convolutions/GEMMs TensorRT will not run in FP8 (each with the rule it breaks; a hazard where FP8 Q/DQ feed one).
    """
    from harness.quantize.inspect_onnx import HAZARDS, inspect_file

    report = inspect_file(model)
    click.echo(f"{model}: TensorRT readiness")
    for label, count, status in report.rows():
        click.echo(f"  {label:58s} {count:4d}  {status}")
    for kind, names in report.hazards.items():
        for name in names:
            click.echo(f"hazard: {HAZARDS[kind]}: {name}", err=True)
    if report.weighted_float:
        more = " ..." if len(report.weighted_float) > 8 else ""
        click.echo(f"in float: {', '.join(report.weighted_float[:8])}{more}")
    for layer in report.fp8_ineligible:
        click.echo(f"not FP8 in TensorRT: {layer}")
    if json_out:
        write_json(json_out, report.to_dict())
    if strict and report.hazard_count:
        raise click.exceptions.Exit(1)
