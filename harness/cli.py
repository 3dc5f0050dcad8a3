"""The `harness` command line: one group, errors as one line with exit code 2 unless --debug."""

from __future__ import annotations

import click

from harness import __version__
from harness.commands import engine_inspect, pipeline, quantize, report, sweep
from harness.errors import HarnessError


class Group(click.Group):
    """Turns unexpected exceptions into one line too; --debug shows the traceback instead."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            raise click.Abort() from None
        except Exception as exc:
            if (ctx.obj or {}).get("debug"):
                raise
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


for command in (pipeline.train, pipeline.export, pipeline.build_engine_cmd, pipeline.bench, pipeline.eval_cmd,
                engine_inspect.inspect_engine, sweep.sweep, report.report, quantize.quantize, quantize.sensitivity,
                quantize.qat, quantize.inspect_cmd):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="harness")
