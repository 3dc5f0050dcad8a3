"""compare, debug layers, debug qdq, debug demo: where accuracy goes between two artifacts, layer by layer."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from harness.commands.common import fmt, print_table, write_json
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


@click.command()
@click.argument("sources", nargs=-1, metavar="A [B]")
@click.option("--weights", default=None, metavar="FILE", help="state_dict for a torch:MODEL source.")
@click.option("--dataset", default=None, help="Inputs from a dataset split (digits, imagefolder:PATH, synthetic) "
                                              "instead of seeded noise.")
@click.option("--split", type=click.Choice(["val", "calib", "train"]), default="val", show_default=True)
@click.option("--limit", type=click.IntRange(1), default=64, show_default=True, help="Number of inputs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic inputs.")
@click.option("--load-inputs", type=click.Path(path_type=Path), default=None, help="Inputs from FILE.npz.")
@click.option("--save-inputs", type=click.Path(path_type=Path), default=None, help="Write the inputs to FILE.npz.")
@click.option("--save-outputs", type=click.Path(path_type=Path), default=None,
              help="Write A's outputs with the inputs and settings to FILE.npz (a golden file).")
@click.option("--load-outputs", type=click.Path(path_type=Path), default=None,
              help="A golden file as the reference A (its inputs are used); then give B only.")
@click.option("--atol", multiple=True, metavar="[OUTPUT=]X", help="Absolute tolerance (per output: NAME=X).")
@click.option("--rtol", multiple=True, metavar="[OUTPUT=]X", help="Relative tolerance (per output: NAME=X).")
@click.option("--min-cosine", type=float, default=None, help="Fail below this cosine similarity.")
@click.option("--min-sqnr", type=float, default=None, help="Fail below this SQNR (dB).")
@click.option("--min-top1-agreement", type=click.FloatRange(0, 100), default=None, help="Fail below this %.")
@click.option("--top-k", type=click.IntRange(1), default=5, show_default=True, help="k of the top-k agreement.")
@click.option("--plot", type=click.Path(path_type=Path), default=None, help="PNG of |error| against |reference|.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="Figures as JSON.")
def compare(sources, weights, dataset, split, limit, seed, load_inputs, save_inputs, save_outputs, load_outputs,
            atol, rtol, min_cosine, min_sqnr, min_top1_agreement, top_k, plot, json_out):
    """Run two artifacts on the same inputs and compare every output of B with A's (exit 1 on a failed tolerance).

    A and B: an engine of any backend, an ONNX file (CPU reference), a quantization checkpoint (PyTorch
    fake-quant), torch:MODEL (FP32 PyTorch) or a golden .npz. Not to be confused with `harness report compare`,
    which compares two sweep results.
    """
    from harness.debug.compare import (
        Tolerances,
        check_pair,
        compare_outputs,
        error_plot,
        golden_source,
        open_source,
        parse_tolerance,
        write_golden,
    )

    wanted = 1 if load_outputs else 2
    only_saving = not load_outputs and len(sources) == 1 and (save_outputs or save_inputs)
    if len(sources) != wanted and not only_saving:
        raise HarnessError("give two sources A B (or B alone with --load-outputs, or A alone with --save-outputs "
                           f"/ --save-inputs); got {len(sources)}")
    tolerances = Tolerances(parse_tolerance(atol, "--atol"), parse_tolerance(rtol, "--rtol"), min_cosine, min_sqnr,
                            min_top1_agreement)
    opened = ([golden_source(load_outputs)] if load_outputs else []) + [open_source(s, weights) for s in sources]
    if len(opened) == 2:
        check_pair(*opened)
    x, settings = _inputs(opened, load_inputs, dataset, split, limit, seed)
    for source in opened:
        _check_fits(source, x)
    if save_inputs:
        click.echo(f"wrote {write_golden(save_inputs, x, settings)} ({len(x)} inputs)")
    ref = opened[0].run(x)
    if save_outputs:
        if opened[0].golden:
            raise HarnessError("--save-outputs with --load-outputs would copy the golden file: drop one")
        click.echo(f"wrote {write_golden(save_outputs, x, settings, opened[0], ref)} ({', '.join(ref)} of "
                   f"{opened[0].label})")
    if len(opened) == 1:
        return
    a, b = opened
    rows = compare_outputs(a, ref, b, b.run(x), tolerances, top_k)
    where = settings.get("kind", "inputs")
    detail = (f"{settings['dataset']}/{settings['split']}" if where == "dataset"
              else f"seed {settings['seed']}" if where == "synthetic" else where)
    click.echo(f"A (reference) {a.label}\nB (test)      {b.label}\n{len(x)} inputs ({where}, {detail})")
    for d, _, _ in rows:
        print_table(_diff_rows(d), f"output {d.name} ({'x'.join(map(str, d.shape))})")
        click.echo(f"  {'PASS' if d.passed else 'FAIL: ' + '; '.join(d.failures)}")
    if plot:
        click.echo(f"wrote {error_plot(rows, plot, (a.label, b.label))}")
    passed = all(d.passed for d, _, _ in rows)
    if json_out:
        write_json(json_out, {"a": a.label, "b": b.label, "inputs": settings, "samples": len(x),
                              "outputs": [d.to_dict() for d, _, _ in rows], "passed": passed})
        click.echo(f"wrote {json_out}")
    if not passed:
        raise click.exceptions.Exit(1)


@click.group()
def debug():
    """Find where accuracy goes: per-layer divergence (layers) and the smallest float fallback (qdq)."""


@debug.command()
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("digits-outlier.pt"),
              show_default=True, help="Where to write the state_dict.")
def demo(output):
    """Write digits-resnet weights with one outlier channel (same function in float) on which naive INT8 breaks.

    Use them with --model digits-resnet --weights FILE, e.g. --precision int8 --mode naive --calib max.
    """
    from harness.debug.demo import OUTLIER_CHANNEL, OUTLIER_LAYER, OUTLIER_SCALE, write_outlier_weights

    path = write_outlier_weights(output)
    click.echo(f"wrote {path}: digits-resnet with channel {OUTLIER_CHANNEL} of {OUTLIER_LAYER}'s input scaled by "
               f"{OUTLIER_SCALE:g} (and its weights by 1/{OUTLIER_SCALE:g})")
