"""Shared fixtures: a per-session engines cache so tests never touch the user's engines/ folder."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.backends.base import BuildOptions
from harness.build import build_engine
from harness.cli import cli
from harness.models.registry import resolve_model


@pytest.fixture(scope="session")
def engines_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("engines")


@pytest.fixture(scope="session")
def digits_engine(engines_dir):
    """The fp32 digits-resnet cpu artifact, built once per test session."""
    meta, _ = build_engine(resolve_model("digits-resnet"), "cpu", BuildOptions(batch_max=64), engines_dir)
    return meta


@pytest.fixture
def run_cli(monkeypatch, tmp_path):
    """Invoke the CLI in a temp cwd (reports/ lands there); returns the click Result."""
    monkeypatch.chdir(tmp_path)

    def invoke(*args):
        return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)

    return invoke
