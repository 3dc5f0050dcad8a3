"""Options and output helpers shared by commands, so every command spells the same choice the same way."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from harness.backends.base import PRECISIONS, BuildOptions, backend_names
from harness.build import ENGINES_DIR
from harness.models.registry import model_names


def model_options(f):
    f = click.option("--input-shape", default=None, metavar="CxHxW",
                     help="Input shape for torchvision or user models (default 3x224x224).")(f)
    f = click.option("--weights", default=None, metavar="FILE",
                     help="state_dict to load (torch.load(weights_only=True)); bundled for digits-resnet.")(f)
    f = click.option("--model", "model_name", default="digits-resnet", show_default=True,
                     help=f"{', '.join(model_names())}, or package.module:factory.")(f)
    return f

def build_options(f):
    f = click.option("--engines-dir", type=click.Path(path_type=Path), default=ENGINES_DIR, show_default=True,
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    return path
