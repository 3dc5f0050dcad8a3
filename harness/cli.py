"""The `harness` command line: one group, errors as one line with exit code 2 unless --debug."""

from __future__ import annotations

import importlib
import traceback

import click

from harness import __version__
from harness.errors import HarnessError

# name -> module:attribute; a command's module (and torch behind it) is imported only when that command runs,
# so `harness sweep` on a finished experiment or `harness report` start in about a second.
COMMANDS = {
    "train": "pipeline:train",
    "export": "pipeline:export",
    "build-engine": "pipeline:build_engine_cmd",
    "bench": "pipeline:bench",
    "eval": "pipeline:eval_cmd",
    "quantize": "quantize:quantize",
    "sensitivity": "quantize:sensitivity",
    "qat": "quantize:qat",
    "inspect": "quantize:inspect_cmd",
    "inspect-engine": "engine_inspect:inspect_engine",
    "profile": "engine_inspect:profile_cmd",
    "sweep": "sweep:sweep",
    "report": "report:report",
    "compare": "debug:compare",
    "debug": "debug:debug",
}


class Group(click.Group):
    """Loads commands lazily, and turns unexpected exceptions into one line too (--debug: the traceback)."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, _, attr = COMMANDS[name].partition(":")
        return getattr(importlib.import_module(f"harness.commands.{module}"), attr)

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
    from harness.closed_pipe import quiet_when_closed

    quiet_when_closed()  # `harness eval ENGINE | head -1` still writes its JSON and exits as it would have
    cli(prog_name="harness")
