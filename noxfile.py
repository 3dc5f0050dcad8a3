"""Sessions run in the environment nox is started from (the project venv), so no second 5 GB torch install.

    nox              # = nox -s tests: the CPU suite
    nox -s lint      # ruff
    nox -s gpu       # tests marked gpu: needs a CUDA GPU and torch's CUDA; TensorRT ones skip without tensorrt
    nox -s bench     # every benchmarks/bench_*.py, printing its figures
    nox -s report    # the quickstart sweep's report, and a screenshot of it (docs/report.png; needs chromium)
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
