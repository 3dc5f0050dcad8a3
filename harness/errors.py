"""User-facing errors: one line that names the problem and the fix, exit code 2."""

import click


class HarnessError(click.ClickException):
    """An error the user can fix; the CLI prints its message alone, no traceback."""

    exit_code = 2


class MachineFault(HarnessError):
    """The machine failed under a sweep (a full disk, a file too large, a folder that cannot be written): no result
    of the cell it happened in, so nothing is stored for that cell and the run stops."""


class MissingDependency(HarnessError):
    """A backend or tool this machine lacks: a sweep reports such cells apart from real failures."""

    def __init__(self, module: str, extra: str = "gpu"):
        super().__init__(f"{module} is not installed: install it with pip install -e '.[{extra}]'")
        self.extra = extra


def require(module: str, extra: str = "gpu"):
    """Import an optional dependency lazily, turning ImportError into a one-line fix."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(module, extra) from exc


def first_line(exc: BaseException) -> str:
    """An exception's message reduced to one line (library messages often span several)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
