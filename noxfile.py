"""Sessions run in the environment nox is started from (the project venv), so no second 5 GB torch install.

    nox              # = nox -s tests: the CPU suite
    nox -s lint      # ruff
    nox -s gpu       # tests marked gpu: needs a CUDA GPU and torch's CUDA; TensorRT ones skip without tensorrt
    nox -s bench     # every benchmarks/bench_*.py, printing its figures
    nox -s report    # the quickstart sweep's report, and a screenshot of it (docs/report.png; needs chromium)
    nox -s lock      # constraints.txt from this venv: the versions CI and the README's set-up install
    nox -s drift     # a fresh venv on the newest versions pyproject allows: what moved, then the suite there
"""

import sys
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "none"
PY = sys.executable  # the interpreter nox runs under: the project venv, not whatever `python` is on PATH


@nox.session
def tests(session):
    session.run(PY, "-m", "pytest", "-q", "-rs", *session.posargs)  # gpu tests report their skip reason


@nox.session
def lint(session):
    session.run(PY, "-m", "ruff", "check", "harness", "tests", "benchmarks", "noxfile.py")


@nox.session
def gpu(session):
    session.run(PY, "-m", "pytest", "-m", "gpu", "-rs", "-q", *session.posargs)


@nox.session
def bench(session):
    for script in sorted(Path("benchmarks").glob("bench_*.py")):
        session.log(f"== {script}")
        session.run(PY, str(script), *session.posargs)


@nox.session
def report(session):
    session.run(PY, "-c", "from harness.cli import main; main()", "sweep", "experiments/quickstart.yaml",
                *session.posargs)
    session.run(PY, "-c", "from harness.report.browser import screenshot; "
                "print(screenshot('reports/quickstart/report.html', 'docs/report.png'))")


LOCK = Path("constraints.txt")
LOCK_HEADER = """\
# The versions CI tested: the README's set-up and .ci/run install with `pip install -c constraints.txt`, so a
# fresh machine resolves what CI ran. Written by `nox -s lock` (pip freeze of the project venv); `nox -s drift`
# reports what the newest versions pyproject.toml allows would change.
"""


def _pins(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        name, sep, version = line.partition("==")
        if sep and not line.startswith("#"):
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


@nox.session
def lock(session):
    frozen = session.run(PY, "-m", "pip", "freeze", "--exclude-editable", silent=True)
    LOCK.write_text(LOCK_HEADER + "".join(f"{n}=={v}\n" for n, v in sorted(_pins(frozen).items())))
    session.log(f"wrote {LOCK} ({len(_pins(frozen))} pins)")


@nox.session
def drift(session):
    """The newest versions pyproject.toml allows, in a venv of their own: which pins moved, then the suite."""
    venv = Path(".nox/drift")
    session.run(sys.executable, "-m", "venv", "--clear", str(venv))
    py = str(venv / "bin" / "python")
    session.run(py, "-m", "pip", "install", "-q", "-e", ".[dev]")
    newest = _pins(session.run(py, "-m", "pip", "freeze", "--exclude-editable", silent=True))
    locked = _pins(LOCK.read_text())
    moved = [(n, locked.get(n, "-"), v) for n, v in sorted(newest.items()) if locked.get(n) != v]
    session.log(f"{len(moved)} of {len(newest)} packages differ from {LOCK}:")
    for name, old, new in moved:
        session.log(f"  {name}: {old} -> {new}")
    session.run(py, "-m", "pytest", "-q", "-rs", *session.posargs)
