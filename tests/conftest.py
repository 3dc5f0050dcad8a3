"""Shared fixtures: a per-session engines cache so tests never touch the user's engines/ folder."""

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.backends.base import BuildOptions
from harness.build import build_artifact
from harness.cli import cli
from harness.models.registry import resolve_model


@pytest.fixture(scope="session")
def engines_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("engines")


@pytest.fixture(scope="session")
def digits_engine(engines_dir):
    """The fp32 digits-resnet cpu artifact, built once per test session."""
    meta, _ = build_artifact(resolve_model("digits-resnet"), "cpu", BuildOptions(batch_max=64), engines_dir)
    return meta


@pytest.fixture(autouse=True)
def live_outputs(request, monkeypatch):
    """No accuracy test may rest on a model whose outputs carry no signal (a zero head passes any check): a
    test in which harness finds degenerate outputs fails, unless it is marked `degenerate` (it tests exactly
    that handling)."""
    import sys

    import harness.export.variants  # noqa: F401  (import the modules that judge outputs, so all are patched)
    import harness.measure.evaluate  # noqa: F401
    from harness.measure import accuracy

    original, found = accuracy.degenerate_outputs, []

    def recording(outputs):
        why = original(outputs)
        if why:
            found.append(why)
        return why

    for module in [m for name, m in list(sys.modules.items()) if name.startswith("harness") and m is not None]:
        if getattr(module, "degenerate_outputs", None) is original:
            monkeypatch.setattr(module, "degenerate_outputs", recording)
    yield
    if found and request.node.get_closest_marker("degenerate") is None:
        pytest.fail(f"this test scored a model whose outputs are degenerate ({found[0]}): give it live outputs "
                    "(trained or BatchNorm-recalibrated weights, a non-zero head), or mark it "
                    "@pytest.mark.degenerate if that is what it tests")


@pytest.fixture
def run_cli(monkeypatch, tmp_path):
    """Invoke the CLI in a temp cwd (reports/ lands there); returns the click Result."""
    monkeypatch.chdir(tmp_path)

    def invoke(*args):
        return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)

    return invoke


# --- GPU: skip `gpu`-marked tests with the precise reason; fakes of tensorrt/pycuda for the CPU suite ---


def _gpu_skip_reason(needs_tensorrt: bool) -> str | None:
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU"
    if needs_tensorrt and not importlib.util.find_spec("tensorrt"):
        return "tensorrt not installed: pip install -e '.[gpu]'"
    return None


def pytest_runtest_setup(item):
    """`@pytest.mark.gpu` needs a CUDA GPU (torch's CUDA); `@pytest.mark.gpu(tensorrt=True)` needs tensorrt too."""
    marker = item.get_closest_marker("gpu")
    if marker is not None:
        reason = _gpu_skip_reason(marker.kwargs.get("tensorrt", False))
        if reason:
            pytest.skip(reason)


@pytest.fixture
def fake_gpu(monkeypatch):
    """Install test doubles of tensorrt and a CUDA binding into sys.modules: call with the TensorRT version.

    binding="pycuda" (default) installs pycuda's double and cuda-python's (as `.[gpu]` + `.[pycuda]` would, so
    `auto` picks pycuda and graphs are captured through cuda-python); binding="cuda-python" hides pycuda;
    binding="torch" hides both and puts torch's double in place of torch for the test (harness imports torch
    lazily), so `auto` falls back to torch.
    Returns (gpu, trt): the simulated device (call log, clock, memory, failure switches) and the fake module.
    """
    import sys

    from fakes.fake_cudart import make_cuda_python
    from fakes.fake_pycuda import FakeGpu, make_pycuda
    from fakes.fake_tensorrt import make_tensorrt

    def install(version="10.9.0", binding="pycuda", **kwargs):
        gpu = FakeGpu(**{k: kwargs.pop(k) for k in ("name", "capability", "compute_ms", "copy_ms") if k in kwargs})
        trt = make_tensorrt(version, gpu, **kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        for name, module in make_cuda_python(gpu).items():
            monkeypatch.setitem(sys.modules, name, None if binding == "torch" else module)
        package, driver = make_pycuda(gpu) if binding == "pycuda" else (None, None)
        monkeypatch.setitem(sys.modules, "pycuda", package)
        monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
        if binding == "torch":
            from fakes.fake_torch import make_torch

            for name, module in make_torch(gpu).items():
                monkeypatch.setitem(sys.modules, name, module)
        return gpu, trt

    return install


# --- sweeps: a tiny experiment (two fp32 cells and two cells of a model that cannot be built) ---

TINY_EXPERIMENT = """
name: tiny
models: [digits-resnet, brokenmodel:build]
precisions: [fp32]
batch_sizes: [1, 2]
timing: {{warmup_s: 0.01, iterations: 3, duration_s: {duration}, repeats: 3, max_s: 0.5}}
evaluation: {{limit: 64}}
"""


@pytest.fixture
def tiny_experiment(tmp_path, monkeypatch):
    """Write tiny.yaml into a temp cwd; returns a function taking the timed seconds per repeat.

    `brokenmodel:build` raises when built, so its cells exercise the failed-row path on every machine.
    """
    broken = "def build():\n    raise RuntimeError('boom: this model cannot be built')\n"
    (tmp_path / "brokenmodel.py").write_text(broken)
    monkeypatch.syspath_prepend(str(tmp_path))
    # subprocesses import this checkout's harness (not whichever one the venv has installed) and brokenmodel
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).resolve().parents[1]), str(tmp_path)]))
    monkeypatch.chdir(tmp_path)

    def write(duration: float = 0.05, name: str = "tiny.yaml") -> Path:
        path = tmp_path / name
        path.write_text(TINY_EXPERIMENT.format(duration=duration))
        return path

    return write
