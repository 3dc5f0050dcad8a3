"""Real TensorRT on a GPU (`nox -s gpu`): fp32/fp16/bf16/int8/fp8 digits-resnet engines against the CPU reference.

The CPU reference is ONNX Runtime running the very ONNX the engine was built from, on the same inputs, so the
comparison isolates TensorRT. Skipped with the reason where there is no CUDA GPU or no tensorrt/pycuda.
"""

from pathlib import Path

import numpy as np
import pytest

from harness.backends.base import BuildOptions, quantized_type
from harness.backends.cpu import CpuRunner
from harness.backends.tensorrt import inspector
from harness.build import build_artifact, load_engine
from harness.data.datasets import resolve_dataset
from harness.measure.accuracy import accuracy
from harness.models.registry import resolve_model
from harness.quantize.config import QuantConfig

pytestmark = pytest.mark.gpu(tensorrt=True)

SPEC = resolve_model("digits-resnet")
# precision: (min top-1 agreement with the CPU reference %, min SQNR dB, min top-1 on labels %)
BOUNDS = {"fp32": (99.5, 40.0, 99.0), "fp16": (99.0, 30.0, 99.0), "int8": (97.0, 15.0, 95.0),
          "bf16": (99.0, 25.0, 99.0), "fp8": (97.0, 15.0, 95.0), "fp8-fp16": (97.0, 15.0, 95.0)}
MIN_CAPABILITY = {"bf16": (8, 0), "fp8": (8, 9), "fp8-fp16": (8, 9)}


def needs_capability(precision):
    """Skip, saying why, where the GPU has no kernels for the precision's types."""
    import torch

    have = torch.cuda.get_device_capability(0)
    need = MIN_CAPABILITY.get(precision)
    if need and have < need:
        pytest.skip(f"{precision} needs compute capability {need[0]}.{need[1]}+; this GPU is {have[0]}.{have[1]}")


@pytest.fixture(scope="module")
def gpu_engines(tmp_path_factory):
    return tmp_path_factory.mktemp("gpu-engines")


def build(precision, engines, **options):
    kind = quantized_type(precision)
    quant = QuantConfig(dtype=kind).to_dict() if kind else None
    return build_artifact(SPEC, "tensorrt", BuildOptions(precision=precision, batch_max=64, **options), engines,
                        quant=quant)


def in_batches(runner, x, size=64):
    return np.concatenate([runner.infer(x[i:i + size]) for i in range(0, len(x), size)])


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", "bf16", "fp8", "fp8-fp16"])
def test_engine_matches_the_cpu_reference_on_the_same_inputs(precision, gpu_engines):
    """BF16's CPU reference is the file's emulation (ONNX Runtime has no BF16 kernels); FP8's is the file as
    written (ReluQuantRewrite off)."""
    needs_capability(precision)
    meta, _ = build(precision, gpu_engines)
    assert build(precision, gpu_engines)[1], "the same request again must be a cache hit"
    x, labels = resolve_dataset("digits", SPEC).take("val", 400)
    meta, runner = load_engine(meta.artifact)
    try:
        got = in_batches(runner, x)
    finally:
        runner.close()
    if precision == "bf16":
        import onnx

        from harness.export.onnx_export import run_onnx
        from harness.export.precision import emulate_bf16

        want = run_onnx(emulate_bf16(onnx.load(meta.onnx_path)).SerializeToString(), x)
    else:
        want = in_batches(CpuRunner(Path(meta.onnx_path)), x)
    result = accuracy(got, labels, want)
    agreement, sqnr, top1 = BOUNDS[precision]
    assert result.top1_agreement >= agreement, result
    assert result.sqnr_db >= sqnr, result
    assert result.top1 >= top1, result


def engine_information(precision: str, gpu_engines):
    """(the built engine's sidecar, its per-layer information as the inspector parses it)."""
    meta, _ = build(precision, gpu_engines)
    _, runner = load_engine(meta.artifact)
    try:
        return meta, inspector.parse_engine_information(runner.engine_information())
    finally:
        runner.close()


def test_int8_engine_runs_int8_layers_and_reports_the_shortfall(gpu_engines):
    meta, info = engine_information("int8", gpu_engines)
    table = inspector.layer_table(info)
    planned = inspector.int8_planned(Path(meta.onnx_path))
    facts = inspector.summary(table, planned)
    assert facts["layers_by_input_precision"].get("INT8", 0) > 0, facts
    assert facts["int8_planned"] > 0 and facts["int8_not_running_int8"] < facts["int8_planned"], facts
    assert table["tactic"].str.len().gt(0).all()


def test_fp8_engine_runs_the_fp8_plan_in_fp8(gpu_engines):
    """The FP8 convolutions placement kept (32+ channels) run with FP8 input on Ada/Hopper/Blackwell; any that do
    not are listed with the layer TensorRT made of them."""
    needs_capability("fp8")
    meta, info = engine_information("fp8", gpu_engines)
    planned = inspector.planned(Path(meta.onnx_path))
    table = inspector.layer_table(info, planned)
    facts = inspector.summary(table, planned)
    assert facts["fp8_planned"] > 0 and facts["layers_by_input_precision"].get("FP8", 0) > 0, facts
    assert facts["fp8_not_running_fp8"] < facts["fp8_planned"], facts["fp8_shortfall"]
    assert "FP8" in set(table.loc[table["intended"] == "FP8", "input_precision"].str.split("/").str[0])


@pytest.mark.parametrize("opts", [{}, {"cuda_graph": True}, {"cuda_graph": False}, {"no_data_transfers": True},
                                  {"no_data_transfers": False}, {"spin_wait": True}, {"streams": 2}])
def test_trtexec_style_timing_on_the_gpu(gpu_engines, opts):
    from harness.backends.tensorrt.timing import defaults

    meta, _ = build("fp16", gpu_engines)
    _, runner = load_engine(meta.artifact)
    try:
        t = runner.time(np.zeros((32, 1, 32, 32), np.float32), warmup_s=0.2, iterations=50, duration_s=0.5,
                        **opts)
    finally:
        runner.close()
    settings = {**defaults(t.convention), **opts}
    compute = t.components["gpu_compute_ms"]
    assert t.queries >= 50 and t.wall_s >= 0.5 and (compute > 0).all()
    assert np.median(t.latency_ms) >= np.median(compute)
    assert ("h2d_ms" in t.components) == (not settings["no_data_transfers"])
    assert ("CUDA graph" in t.includes) == settings["cuda_graph"]


def test_cli_build_bench_eval_inspect(run_cli, gpu_engines):
    args = ["--model", "digits-resnet", "--precision", "fp16", "--backend", "tensorrt", "--max-batch", 64,
            "--engines-dir", gpu_engines]
    built = run_cli("build-engine", *args)
    assert built.exit_code == 0, built.output
    engine = built.output.strip().split()[-1]
    bench = run_cli("bench", engine, "--batch", 32, "--duration", 1, "--cuda-graph")
    assert bench.exit_code == 0 and "gpu_compute_ms p50_ms" in bench.output, bench.output
    evaluated = run_cli("eval", engine)
    assert evaluated.exit_code == 0 and "top1 agreement with fp32 torch" in evaluated.output, evaluated.output
    inspected = run_cli("inspect-engine", engine)
    assert inspected.exit_code == 0 and "reformat layers" in inspected.output, inspected.output


def test_a_gpu_sweep_judges_every_cell_with_the_stopping_rule(run_cli, gpu_engines, tmp_path, monkeypatch):
    """TensorRT cells at ±2 %: each row carries its verdict, its drift between repeats and, when flagged, why; the
    repeats of a sub-millisecond cell are cut to 200 queries after the first, and only the first warms up."""
    import pandas as pd

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "gpu.yaml"
    path.write_text("name: gpu\nmodels: [digits-resnet]\nprecisions: [fp32, fp16]\nbackends: [tensorrt]\n"
                    "batch_sizes: [1, 32]\ntiming: {warmup_s: 0.2, iterations: 50, duration_s: 1.0, repeats: 3, "
                    "max_s: 10, interleave: true}\nevaluation: {limit: 128}\n")
    result = run_cli("sweep", path, "--engines-dir", gpu_engines)
    assert result.exit_code == 0, result.output
    table = pd.read_csv("reports/gpu/results.csv")
    assert len(table) == 4 and (table["status"] == "ok").all() and (table["ci_target_pct"] == 2.0).all()
    assert table["latency_drift_pct"].notna().all() and (table["repeats"] >= 3).all()
    flagged = table[~table["stable"].astype(bool)]
    assert flagged["unstable_reason"].notna().all(), flagged[["unstable_reason"]]
    assert table["cpu_threads"].isna().all()  # a TensorRT row has no ONNX Runtime threads
    print(table[["precision", "batch", "latency_p50_ms", "latency_ci_pct", "latency_drift_pct", "repeats",
                 "latency_samples", "stable", "unstable_reason"]].to_string())
