"""The `harness` command line: one group, errors as one line with exit code 2 unless --debug."""

from __future__ import annotations

import importlib
import os
import traceback

import click

from harness import __version__
from harness.errors import HarnessError

# name -> (module:attribute, one-line help). A command's module (and torch behind it) is imported only when that
# command runs, so `harness --help`, `harness sweep` on a finished experiment or `harness report` start at once;
# the one-line help lives here so that listing the commands imports none of them.
COMMANDS = {
    "train": ("pipeline:train", "Retrain digits-resnet from scratch (seeded, CPU)."),
    "export": ("pipeline:export", "Export a model to ONNX, checked against PyTorch before it is kept."),
    "build-engine": ("pipeline:build_engine_cmd", "Build (or reuse from the cache) a backend artifact under engines/."),
    "bench": ("pipeline:bench", "Time an engine: percentiles, throughput, CV."),
    "eval": ("pipeline:eval_cmd", "Top-1/top-5 on a dataset, and agreement with the FP32 PyTorch reference."),
    "quantize": ("quantize:quantize", "Calibrate a model and write its quantization checkpoint."),
    "sensitivity": ("quantize:sensitivity", "Rank layers by what leaving each one alone in float recovers."),
    "qat": ("quantize:qat", "Quantization-aware fine-tuning from a calibrated checkpoint."),
    "inspect": ("quantize:inspect_cmd", "TensorRT-readiness of a Q/DQ ONNX: quantized inputs, shared scales, hazards."),
    "inspect-engine": ("engine_inspect:inspect_engine", "Per-layer table of an engine: precisions and tactics."),
    "profile": ("engine_inspect:profile_cmd", "Per-layer profile of a TensorRT engine."),
    "sweep": ("sweep:sweep", "Run every cell of an experiment file, resumably, into a results table and report."),
    "report": ("report:report", "Merge sweep results into one report; `report compare` gates regressions."),
    "compare": ("debug:compare", "Run two artifacts on the same inputs and compare every output."),
    "debug": ("debug:debug", "Find where accuracy goes: per-layer divergence and the smallest float fallback."),
}


class Group(click.Group):
    """Loads commands lazily, and turns unexpected exceptions into one line too (--debug: the traceback)."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, _, attr = COMMANDS[name][0].partition(":")
        return getattr(importlib.import_module(f"harness.commands.{module}"), attr)

    def format_commands(self, ctx, formatter):
        """The command list from COMMANDS' one-line helps, without importing any command's module."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, short) in COMMANDS.items()])

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except HarnessError:
            if (ctx.obj or {}).get("debug"):
                traceback.print_exc()  # the one-line error follows; --debug promises where it came from
            raise
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            raise click.Abort() from None
        except Exception as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            from harness.fileio import MACHINE_FIXES

            if isinstance(exc, OSError) and exc.errno in MACHINE_FIXES:
                raise HarnessError(f"{exc.filename or 'a file'}: {exc.strerror}; {MACHINE_FIXES[exc.errno]}") from exc
            raise HarnessError(f"{type(exc).__name__}: {exc} (rerun with --debug for the traceback)") from exc


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="harness")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx, debug):
    """Quantize, export, build, benchmark and compare PyTorch models on TensorRT and ONNX Runtime.

    Pipeline: model -> quantize -> export -> build-engine -> bench / eval -> sweep -> report.
    """
    ctx.obj = {"debug": debug}


def main() -> None:
    # torch's OpenMP threads spin between parallel regions by default: on a machine shared with other jobs a
    # spinning thread holds the core its preempted sibling needs, and calibration, export checks and references
    # ran 4-6x slower (digits-resnet, 2 cores at load 5). Sleeping threads do not. Set before torch loads; a value
    # the user gives wins. ONNX Runtime's CPU timing does not use OpenMP (its threads: harness.backends.cpu_threads).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from harness.closed_pipe import quiet_when_closed

    quiet_when_closed()  # `harness eval ENGINE | head -1` still writes its JSON and exits as it would have
    cli(prog_name="harness")
