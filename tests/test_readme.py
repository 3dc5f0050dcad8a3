"""The README's command blocks run as written after its two set-up commands (from the repository root, with the
project venv at .venv). Blocks too long for the suite, needing a GPU, or written as templates carry a
`<!-- readme-test: skip (why) -->` line and are reported as skipped with that reason."""

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(?:<!-- readme-test: skip \((?P<why>[^)]*)\) -->\n[ \t]*)?```bash\n(?P<body>.*?)```", re.S)


def _blocks():
    text = (ROOT / "README.md").read_text()
    for match in BLOCK.finditer(text):
        line = text[: match.start("body")].count("\n")
        yield pytest.param(match["body"], match["why"], id=f"README.md:{line}")


def test_every_command_block_names_the_venv_or_is_marked():
    """Bare `harness` fails after the set-up commands (the venv is not activated): blocks must say .venv/bin/."""
    for param in _blocks():
        body, why = param.values
        bare = [line for line in body.splitlines() if re.match(r"\s*(harness|pip|nox|ray) ", line)]
        assert not bare, f"{param.id}: {bare[0]!r} needs .venv/bin/ to run as written"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """One folder for every block, as a user following the README top to bottom has (a later block may use what
    an earlier one wrote); the README's paths link to the repository, outputs stay out of it."""
    work = tmp_path_factory.mktemp("readme")
    for name in (".venv", "experiments"):
        (work / name).symlink_to(ROOT / name)
    return work


@pytest.mark.parametrize("body, why", list(_blocks()))
def test_readme_block_runs_as_written(body, why, work):
    if why:
        pytest.skip(why)
    if not (ROOT / ".venv" / "bin" / "harness").exists():
        pytest.skip("no .venv at the repository root (the README's set-up was not run here)")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=work, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, f"{body}\n--- stderr ---\n{result.stderr[-3000:]}"
