"""Options and output helpers shared by commands, so every command spells the same choice the same way."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from harness.backends.base import PRECISIONS, BuildOptions, backend_names, quantized_type
from harness.build import ENGINES_DIR
from harness.fileio import atomic_write, expect_file
from harness.models.registry import model_names


class Number(click.ParamType):
    """A finite number within [lo, hi] (either end open with lo_open/hi_open, or absent), checked when the options
    are parsed: NaN and infinities are refused whatever the range, since a NaN bound passes or fails every
    comparison and an infinite one is no bound. `unit` is shown in the message; `suffix` (e.g. "%") may follow."""

    name = "number"

    def __init__(self, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                 hi_open: bool = False, unit: str = "", suffix: str = ""):
        self.lo, self.hi, self.lo_open, self.hi_open, self.unit, self.suffix = lo, hi, lo_open, hi_open, unit, suffix

    def range(self) -> str:
        lo = "" if self.lo is None else f"{self.lo:g} <{'' if self.lo_open else '='} "
        hi = "" if self.hi is None else f" <{'' if self.hi_open else '='} {self.hi:g}"
        return f"{lo}x{hi}{' ' + self.unit if self.unit else ''}" if lo or hi else "a finite number"

    def check(self, text) -> float:
        """The number in `text`, or ValueError saying why not (for option values parsed elsewhere too)."""
        try:
            value = float(str(text).strip().removesuffix(self.suffix) if self.suffix else text)
        except (TypeError, ValueError):
            raise ValueError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"{text!r} is not a finite number")
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)) or \
                self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)):
            raise ValueError(f"{text!r} is outside {self.range()}")
        return value

    def convert(self, value, param, ctx):
        try:
            return self.check(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)

    def get_metavar(self, param, ctx=None):
        return "X"


class PerOutput(click.ParamType):
    """`X` (every output) or `NAME=X` (one output), X a Number: parsed to (name or "", value)."""

    name = "[output=]number"

    def __init__(self, number: Number):
        self.number = number

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        name, sep, text = str(value).rpartition("=")
        try:
            return (name if sep else "", self.number.check(text))
        except ValueError as exc:
            where = f"{value!r}: " if sep else ""
            self.fail(f"{where}{exc}; write a number ({self.number.range()}), or OUTPUT=NUMBER for one output",
                      param, ctx)


PERCENT = Number(0, 100, unit="%")
DB = Number(unit="dB")
NON_NEGATIVE = Number(0)
SECONDS = Number(0, unit="s")


class OutputPath(click.Path):
    """Where a command writes (a file, or with folder=True a folder), checked when the options are parsed: a
    folder given for a file, a file for a folder, or a file where a folder of the path should be, is refused
    before any work, in one line."""

    def __init__(self, folder: bool = False):
        super().__init__(path_type=Path, file_okay=not folder, dir_okay=folder)
        self.folder = folder

    def convert(self, value, param, ctx):
        path = super().convert(value, param, ctx)
        if path.exists() and path.is_dir() != self.folder:
            self.fail(f"{path} is {'a file' if self.folder else 'a folder'}; give a "
                      f"{'folder' if self.folder else 'file'} path", param, ctx)
        blocker = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            self.fail(f"cannot write {path}: {blocker} is a file, not a folder", param, ctx)
        return path


FILE_OUT = OutputPath()  # an output file
DIR_OUT = OutputPath(folder=True)  # an output folder (created when missing)


def model_options(f):
    f = click.option("--input-shape", default=None, metavar="CxHxW",
                     help="Input shape for torchvision or user models (default: the model's native size, "
                          "3x224x224; 3x299x299 for inception_v3).")(f)
    f = click.option("--weights", default=None, metavar="FILE",
                     help="state_dict to load (torch.load(weights_only=True)); bundled for digits-resnet.")(f)
    f = click.option("--model", "model_name", default="digits-resnet", show_default=True,
                     help=f"digits-resnet, any torchvision classification model ({', '.join(model_names()[1:])}, "
                          "...), or package.module:factory.")(f)
    return f

def build_options(f):
    f = click.option("--engines-dir", type=DIR_OUT, default=ENGINES_DIR, show_default=True,
                     help="Artifact cache.")(f)
    f = click.option("--opt-level", type=click.IntRange(0, 5), default=3, show_default=True,
                     help="TensorRT builder optimization level.")(f)
    f = click.option("--workspace-mb", type=click.IntRange(1), default=4096, show_default=True,
                     help="TensorRT workspace memory pool limit.")(f)
    f = click.option("--max-batch", type=click.IntRange(1), default=32, show_default=True,
                     help="Largest batch the artifact accepts.")(f)
    f = click.option("--batch", "opt_batch", type=click.IntRange(1), default=1, show_default=True,
                     help="Batch the builder optimizes for.")(f)
    f = click.option("--min-batch", type=click.IntRange(1), default=1, show_default=True)(f)
    f = click.option("--backend", type=click.Choice(backend_names()), default="cpu", show_default=True)(f)
    f = click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True)(f)
    return f

def cuda_binding_option(f):
    from harness.cuda import BINDINGS

    return click.option("--cuda-binding", type=click.Choice(BINDINGS), default="auto", show_default=True,
                        help="TensorRT: the CUDA binding for buffers, streams, events and graphs: cuda-python "
                             "(.[gpu]), pycuda (.[pycuda]) or torch; auto = pycuda if installed, then "
                             "cuda-python, then torch.")(f)


def check_cuda_binding(backend: str, cuda_binding: str) -> None:
    from harness.errors import HarnessError

    if backend != "tensorrt" and cuda_binding != "auto":
        raise HarnessError(f"--cuda-binding {cuda_binding} applies to tensorrt engines only, not {backend}")


def verify_option(f):
    from harness.export.verify import LEVELS

    return click.option("--verify", "verify_level", type=click.Choice(LEVELS), default="strict", show_default=True,
                        help="Export check before the ONNX is kept: strict (each Q/DQ reads its quantizer's tensor "
                             "with its scale; SQNR and top-1 against FP32 within what rounding explains), loose "
                             "(outputs only, wider margins), off.")(f)


def make_build_options(precision, min_batch, opt_batch, max_batch, workspace_mb, opt_level) -> BuildOptions:
    return BuildOptions(precision=precision, batch_min=min_batch, batch_opt=max(opt_batch, min_batch),
                        batch_max=max(max_batch, opt_batch, min_batch), workspace_mb=workspace_mb,
                        opt_level=opt_level)

def fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)

def print_table(rows: list[tuple[str, object]], title: str | None = None) -> None:
    if title:
        click.echo(title)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"  {key.ljust(width)}  {fmt(value)}")

def write_json(path: Path, payload: dict) -> Path:
    """Results as JSON, written whole or not at all (a failure: `cannot write FILE: reason`)."""
    return atomic_write(Path(path), json.dumps(payload, indent=2, sort_keys=True, default=str))


def quantizer_option(f):
    from harness.quantize.config import TOOLS

    return click.option("--quantizer", "tool", type=click.Choice(TOOLS), default=None,
                        help="pq: pytorch-quantization with harness's placement (default); modelopt: NVIDIA Model "
                             "Optimizer's ONNX PTQ (export and build-engine; pip install -e '.[modelopt]').")(f)


def refuse_modelopt(tool: str | None) -> None:
    """For the commands that are pytorch-quantization features (quantize, sensitivity, qat)."""
    from harness.errors import HarnessError

    if tool == "modelopt":
        command = f"harness {click.get_current_context().info_name}"
        raise HarnessError(f"{command} is a pytorch-quantization feature: --quantizer modelopt applies to "
                           "harness export and build-engine only")


def _option(key: str) -> str:
    return {"overrides": "--override", "tool": "--quantizer"}.get(key, f"--{key.replace('_', '-')}")


def quant_options(f):
    """The quantization request, as `harness quantize` takes it; every option defaults to QuantConfig's."""
    from harness.quantize.config import CALIBRATORS, MODES

    f = click.option("--quantize-attention-matmul", is_flag=True, default=None,
                     help="Also quantize the inputs of the attention MatMuls (Q @ K^T, softmax @ V).")(f)
    f = click.option("--quantize-head", is_flag=True, default=None,
                     help="Quantize the classifier head too (selective keeps it in float).")(f)
    f = click.option("--auto-skip", type=click.IntRange(0), default=None,
                     help="Leave the N layers the sensitivity analysis ranks worst in float "
                          "(default: 2 in hybrid mode without a skip list, else 0).")(f)
    f = click.option("--override", "overrides", multiple=True, metavar="PATTERN=VALUE[,VALUE]",
                     help="Per-layer calibrator and/or weight granularity, e.g. 'layer4.*=max,per-tensor'.")(f)
    f = click.option("--skip-from", type=click.Path(path_type=Path), default=None,
                     help="File of layer patterns to leave in float (as written by harness sensitivity).")(f)
    f = click.option("--skip", multiple=True, metavar="PATTERN",
                     help="Layer name pattern to leave in float (fnmatch; a block name covers its layers).")(f)
    f = click.option("--calib-batch-size", type=click.IntRange(1), default=None, help="Default 32.")(f)
    f = click.option("--calib-batches", type=click.IntRange(1), default=None,
                     help="Calibration batches from the dataset's calib split (default 8).")(f)
    f = click.option("--percentile", type=Number(0, 100, lo_open=True), default=None,
                     help="For --calib percentile (default 99.99).")(f)
    f = click.option("--calib", type=click.Choice(CALIBRATORS), default=None,
                     help="Activation calibrator (default entropy; FP8: max, and max or percentile only).")(f)
    f = click.option("--dataset", default=None, help="Calibration data: digits (default), imagefolder:PATH, "
                     "synthetic.")(f)
    f = click.option("--mode", type=click.Choice(MODES), default=None,
                     help="naive: every supported layer; hybrid: naive minus sensitive layers; "
                          "selective (default): residual-aware, shared scales, unfriendly layers in float.")(f)
    return quantizer_option(f)


def make_quant_config(**given):
    """A QuantConfig from the options the user gave (the rest at their defaults)."""
    from harness.quantize.config import QuantConfig, read_skip_file

    skip = tuple(given.pop("skip", ()) or ())
    skip_from = given.pop("skip_from", None)
    if skip_from is not None:
        skip += read_skip_file(skip_from)
    kwargs = {k: v for k, v in given.items() if v not in (None, ())}
    return QuantConfig(skip=skip, **{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in kwargs.items()})


def quant_request(precision: str, quant_file: Path | None, **given) -> dict | None:
    """The quant dict export/build-engine pass on: a checkpoint reference, a config, or None for float."""
    from harness.build import sha256_file
    from harness.errors import HarnessError
    from harness.quantize.config import MODELOPT_FIELDS

    given_keys = [k for k, v in given.items() if v not in (None, ())]
    options = [_option(k) for k in given_keys]
    dtype = quantized_type(precision)
    if dtype is None:
        if quant_file or options:
            raise HarnessError(f"--precision {precision} is a float precision: --quant and "
                               f"{', '.join(options) or '--mode/--calib'} apply to int8, int8-fp16, fp8 and fp8-fp16 "
                               "only")
        return None
    if quant_file is not None:
        if given.get("tool") == "modelopt":
            raise HarnessError(f"--quant {quant_file} is a pytorch-quantization checkpoint: drop --quantizer modelopt")
        options = [o for k, o in zip(given_keys, options, strict=True) if k != "tool"]
        if options:
            raise HarnessError(f"--quant {quant_file} already holds the calibration: drop {', '.join(options)}")
        if not expect_file(Path(quant_file), "--quant").is_file():
            raise HarnessError(f"--quant {quant_file}: no such file; write one with harness quantize")
        return {"checkpoint": str(Path(quant_file).resolve()), "sha256": sha256_file(Path(quant_file))}
    pq_only = [_option(k) for k in given_keys if k not in MODELOPT_FIELDS]
    if given.get("tool") == "modelopt" and pq_only:
        raise HarnessError(f"{', '.join(pq_only)} apply to --quantizer pq only: ModelOpt places Q/DQ itself and "
                           "takes --calib max|entropy, --calib-batches, --calib-batch-size and --dataset")
    return make_quant_config(**given, dtype=dtype).to_dict()
