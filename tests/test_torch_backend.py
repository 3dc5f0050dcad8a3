"""The eager PyTorch baseline backend: built from the model spec, cached like any artifact, fp32/fp16/bf16."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.backends.base import BuildOptions
from harness.backends.torch_backend import TorchBackend
from harness.build import build_artifact, load_engine
from harness.data.datasets import resolve_dataset
from harness.errors import HarnessError
from harness.measure.evaluate import evaluate
from harness.models.registry import load_model, resolve_model

SPEC = resolve_model("digits-resnet")


@pytest.fixture(scope="module")
def torch_engines(tmp_path_factory, digits_engine):
    """fp32, fp16 and bf16 torch artifacts (on this machine's device), reusing the session's verified fp32 ONNX."""
    root = tmp_path_factory.mktemp("torch-engines")
    return {p: build_artifact(SPEC, "torch", BuildOptions(precision=p, batch_max=64), root,
                            onnx_path=Path(digits_engine.onnx_path)) for p in ("fp32", "fp16", "bf16")}


def test_artifact_records_what_load_rebuilds_and_the_request_is_cached(torch_engines, digits_engine):
    meta, hit = torch_engines["fp32"]
    assert not hit and meta.artifact.endswith(".torch") and meta.backend == "torch"
    record = json.loads(Path(meta.artifact).read_text())
    assert record == {"model": SPEC.to_dict() | {"input_shape": list(SPEC.input_shape), "mean": [0.5],
                                                  "std": [0.5]},
                      "precision": "fp32", "device": "cuda" if torch.cuda.is_available() else "cpu"}
    again, hit = build_artifact(SPEC, "torch", BuildOptions(precision="fp32", batch_max=64),
                              Path(meta.artifact).parent, onnx_path=Path(digits_engine.onnx_path))
    assert hit and again.artifact == meta.artifact


def test_fp32_matches_the_model_and_fp16_stays_close(torch_engines):
    x = np.random.default_rng(0).standard_normal((5, 1, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = load_model(SPEC)(torch.from_numpy(x)).numpy()
    _, fp32 = load_engine(torch_engines["fp32"][0].artifact)
    _, fp16 = load_engine(torch_engines["fp16"][0].artifact)
    np.testing.assert_allclose(fp32.infer(x), expected, rtol=1e-4, atol=1e-4)
    assert fp16.infer(x).dtype == np.float32
    assert np.abs(fp16.infer(x) - expected).max() < 0.05 * np.abs(expected).max()


def test_bf16_baseline_runs_in_bfloat16_where_onnx_runtime_cannot(torch_engines):
    """The BF16 row beside TensorRT's, on the CPU too: eager PyTorch in bfloat16 (8 significant bits: further
    from FP32 than FP16, still the same answers)."""
    _, bf16 = load_engine(torch_engines["bf16"][0].artifact)
    assert bf16.dtype == torch.bfloat16 and next(bf16.model.parameters()).dtype == torch.bfloat16
    result = evaluate(bf16, resolve_dataset("digits", SPEC), "val", (1, 64), limit=64)
    assert result.top1_agreement >= 98.0 and 25 < result.sqnr_db < 60


def test_eval_agrees_with_the_fp32_reference(torch_engines):
    _, runner = load_engine(torch_engines["fp16"][0].artifact)
    result = evaluate(runner, resolve_dataset("digits", SPEC), "val", (1, 64), limit=64)
    assert result.samples == 64 and result.top1_agreement >= 99.0 and result.sqnr_db > 30


def test_timing_says_what_it_includes(torch_engines):
    _, runner = load_engine(torch_engines["fp32"][0].artifact)
    t = runner.time(np.zeros((4, 1, 32, 32), np.float32), warmup_s=0.0, iterations=5, duration_s=0.0)
    assert t.queries == 5 and t.batch == 4 and "eager forward" in t.includes


def test_cli_fp16_build_keys_on_the_fp32_onnx_and_benches(run_cli, digits_engine, engines_dir):
    built = run_cli("build-engine", "--backend", "torch", "--precision", "fp16", "--engines-dir", engines_dir)
    assert built.exit_code == 0, built.output
    artifact = built.output.strip().split()[-1]
    assert json.loads(Path(artifact).with_suffix(".json").read_text())["onnx_path"] == digits_engine.onnx_path
    bench = run_cli("bench", artifact, "--warmup", 0, "--iterations", 3, "--duration", 0)
    assert bench.exit_code == 0 and "(torch, fp16)" in bench.output


def test_int8_and_onnx_builds_are_refused(tmp_path):
    with pytest.raises(HarnessError, match="--precision int8 is not supported by backend torch"):
        build_artifact(SPEC, "torch", BuildOptions(precision="int8"), tmp_path)
    with pytest.raises(HarnessError, match="runs the PyTorch model itself"):
        TorchBackend().build(tmp_path / "m.onnx", tmp_path / "a.torch", BuildOptions())


@pytest.mark.gpu
def test_cuda_fp16_reports_gpu_compute_beside_host_latency(tmp_path, digits_engine):
    meta, _ = build_artifact(SPEC, "torch", BuildOptions(precision="fp16", batch_max=64), tmp_path,
                           onnx_path=Path(digits_engine.onnx_path))
    _, runner = load_engine(meta.artifact)
    assert meta.device["gpu"] == torch.cuda.get_device_name(0)
    t = runner.time(np.zeros((32, 1, 32, 32), np.float32), warmup_s=0.2, iterations=50, duration_s=0.5)
    compute = t.components["gpu_compute_ms"]
    assert len(compute) == t.queries and (compute > 0).all() and np.median(compute) <= np.median(t.latency_ms)
