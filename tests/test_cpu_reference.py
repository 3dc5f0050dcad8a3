"""The CPU reference computes the ONNX as written, on every CPU; the timed (deployed) run is checked against it."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from harness.backends.base import BuildOptions, Runner
from harness.backends.cpu import CpuRunner, session_options
from harness.build import build_artifact, load_engine
from harness.data.datasets import resolve_dataset
from harness.export.onnx_export import run_onnx_outputs
from harness.export.variants import export_variant
from harness.measure.evaluate import check_deployed, evaluate_outputs, reference_outputs
from harness.models.registry import resolve_model
from harness.quantize.config import QuantConfig
from harness.report.headline import headline
from harness.report.merge import results_frame
from harness.sweep.environment import cpu_isa

# ONNX Runtime's integer kernels: what its Q/DQ fusions turn a Q/DQ graph into on the CPU
INTEGER_OPS = {"MatMulIntegerToFloat", "MatMulInteger", "QLinearMatMul", "QLinearConv", "ConvInteger",
               "DynamicQuantizeMatMul", "QLinearAdd", "QGemm"}
FAST = {"calib": "max", "calib_batches": 2, "calib_batch_size": 32}


@pytest.fixture(scope="module")
def vit_qdq(tmp_path_factory) -> str:
    """A naive INT8 Q/DQ file of a small ViT with a live head (every Linear's weight behind Q/DQ, axis 0)."""
    root = tmp_path_factory.mktemp("vit")
    spec = resolve_model("test_transformers:tiny_vit", input_shape="3x32x32")
    cfg = QuantConfig(mode="naive", **FAST).to_dict()
    return str(export_variant(spec, "int8", root / "vit.onnx", cfg, calib_dir=root / "calib", verify="off"))


def _optimized_ops(path: str, so, tmp_path) -> set[str]:
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return {n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node}


def test_the_reference_session_keeps_every_qdq_as_written(vit_qdq, tmp_path):
    """On any CPU: ONNX Runtime fuses this file's Q/DQ MatMuls into integer kernels unless told not to, and the
    reference (every accuracy figure) tells it not to."""
    assert _optimized_ops(vit_qdq, session_options(as_written=False), tmp_path) & INTEGER_OPS  # fusable file
    ops = _optimized_ops(vit_qdq, session_options(as_written=True), tmp_path)
    assert not ops & INTEGER_OPS and {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_reference_runs_compute_what_the_graph_says(vit_qdq):
    """run_onnx (export check, debug) and CpuRunner.infer (eval, compare, sweep accuracy) equal a run with every
    graph optimization off: the file as written, whatever the CPU's integer kernels do."""
    x = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    plain = ort.InferenceSession(vit_qdq, so, providers=["CPUExecutionProvider"])
    expected = plain.run(None, {plain.get_inputs()[0].name: x})[0]
    assert float(np.abs(expected).std(0).max()) > 1e-3  # the head is live: logits differ from image to image
    np.testing.assert_allclose(run_onnx_outputs(vit_qdq, x)[0], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(CpuRunner(vit_qdq, qdq=True).infer(x), expected, rtol=1e-5, atol=1e-5)


def test_an_int8_artifact_is_timed_deployed_and_checked_against_the_file(tmp_path):
    spec = resolve_model("digits-resnet")
    quant = QuantConfig(mode="selective", **FAST).to_dict()
    meta, _ = build_artifact(spec, "cpu", BuildOptions(precision="int8", batch_max=64), tmp_path, quant)
    _, runner = load_engine(meta.artifact)
    x = resolve_dataset("digits", spec).take("val", 4)[0]
    assert "Q/DQ fused" in runner.time(x, 0.0, 3, 0.0).includes  # the row says what was timed
    data = resolve_dataset("digits", spec)
    reference = reference_outputs(data, "val", 64, 128)
    acc, logits, _ = evaluate_outputs(runner, data, "val", (1, 64), 128, reference)
    check = check_deployed(runner, data, "val", (1, 64), logits, reference)
    assert check.agrees and check.warning() is None  # a CNN's fused kernels compute the file on any CPU
    assert abs(check.deployed_sqnr_db - acc.sqnr_db) <= 1.0 and acc.sqnr_db > 25
    assert set(check.columns()) == {"deployed_sqnr_db", "deployed_top1_agreement_pct", "deployed_matches_file"}


class _Miscomputing(Runner):
    """A runner whose deployed session is off by noise, as integer kernels that saturate would be."""

    def __init__(self, runner: Runner, noise: float):
        self.runner, self.noise = runner, noise

    def infer(self, x):
        return self.runner.infer(x)

    def time(self, *args, **kwargs):
        raise NotImplementedError

    def deployed_runner(self):
        outer = self

        class Deployed(_Miscomputing):
            def infer(self, x):
                clean = outer.runner.infer(x)
                return clean + outer.noise * np.random.default_rng(0).standard_normal(clean.shape, np.float32)

        return Deployed(self.runner, self.noise)


def test_fused_kernels_that_disagree_with_the_file_are_reported_with_both_figures(digits_engine):
    _, runner = load_engine(digits_engine.artifact)
    data = resolve_dataset("digits", resolve_model("digits-resnet"))
    reference = reference_outputs(data, "val", 64, 128)
    acc, logits, _ = evaluate_outputs(runner, data, "val", (1, 64), 128, reference)
    check = check_deployed(_Miscomputing(runner, 3.0), data, "val", (1, 64), logits, reference)
    assert check.agrees is False
    warning = check.warning()
    assert f"{check.deployed_sqnr_db:.2f} dB" in warning and f"{acc.sqnr_db:.2f} dB" in warning
    row = {"cell_id": "c1", "baseline_id": "c1", "model": "digits-resnet", "dataset": "digits", "backend": "cpu",
           "batch": 1, "precision": "int8", "tool": "pq", "mode": "naive", "calibrator": "max", "status": "ok",
           "stable": True, "latency_p50_ms": 1.0, "top1_pct": 90.0, "env_cpu_isa": "avx2", **check.columns()}
    lines = headline(results_frame([row]))
    assert any("on this CPU (avx2)" in line and "fused integer kernels" in line for line in lines)


def test_rows_name_the_cpu_features_that_change_integer_kernels():
    isa = cpu_isa()
    assert isa == "n/a" or isa == "none" or set(isa.split()) <= {"avx2", "avx512f", "avx512-vnni", "avx-vnni",
                                                                  "amx-int8", "arm-dotprod", "arm-i8mm"}
