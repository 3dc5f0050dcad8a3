"""NVIDIA Model Optimizer as a second quantizer: one-line refusals, the missing extra, and (where the `modelopt`
extra is installed) its Q/DQ ONNX and a sweep with both tools side by side."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest

from harness.errors import HarnessError
from harness.quantize.config import QuantConfig
from harness.sweep.experiment import load_experiment
from harness.sweep.matrix import baseline_of, expand

MISSING = "nvidia-modelopt is not installed: install it with pip install -e '.[modelopt]'"
TOOLS_EXPERIMENT = """
name: tools
models: [digits-resnet]
precisions: [fp32, int8]
quantization: {tools: [pq, modelopt], modes: [selective], calibrators: [max], calib_batches: 2, calib_batch_size: 50}
timing: {warmup_s: 0.01, iterations: 3, duration_s: 0.02, repeats: 2}
evaluation: {limit: 64}
"""


def _has_modelopt() -> bool:
    try:
        return importlib.util.find_spec("modelopt.onnx.quantization") is not None
    except ImportError:
        return False


needs_modelopt = pytest.mark.skipif(not _has_modelopt(), reason=MISSING)


@pytest.fixture
def no_modelopt(monkeypatch):
    """ModelOpt absent, even in an environment that has it."""
    for name in ("modelopt", "modelopt.onnx", "modelopt.onnx.quantization"):
        monkeypatch.setitem(sys.modules, name, None)


def _sweep(run_cli, tmp_path, engines_dir) -> pd.DataFrame:
    path = tmp_path / "tools.yaml"
    path.write_text(TOOLS_EXPERIMENT)
    result = run_cli("sweep", path, "--engines-dir", engines_dir)
    assert result.exit_code == 0, result.output
    return pd.read_csv(tmp_path / "reports" / "tools" / "results.csv")


def test_missing_extra_is_one_line_for_export_and_build_engine(run_cli, no_modelopt, engines_dir):
    for args in (("export", "-o", "x.onnx"), ("build-engine", "--engines-dir", engines_dir)):
        result = run_cli(*args, "--precision", "int8", "--quantizer", "modelopt")
        assert result.exit_code == 2 and result.output.splitlines()[-1] == f"Error: {MISSING}"  # after the log
    assert not Path("x.onnx").exists()


def test_sweep_records_the_missing_extra_as_failed_cells_and_carries_on(run_cli, tmp_path, no_modelopt,
                                                                        engines_dir):
    table = _sweep(run_cli, tmp_path, engines_dir)
    failed = table[table["status"] == "failed"]
    assert failed["tool"].tolist() == ["modelopt"] and failed["error"].tolist() == [MISSING]
    assert failed["failed_stage"].tolist() == ["calibrate+export"]
    ok = table[table["status"] == "ok"]
    assert ok["precision"].tolist() == ["fp32", "int8"] and ok["tool"].fillna("-").tolist() == ["-", "pq"]
    assert MISSING in (tmp_path / "reports" / "tools" / "report.md").read_text()


@pytest.mark.parametrize("args, message", [
    (("export", "--precision", "int8", "--quantizer", "modelopt", "--mode", "naive", "--skip", "conv1", "-o", "x"),
     "--mode, --skip apply to --quantizer pq only: ModelOpt places Q/DQ itself"),
    (("export", "--precision", "int8", "--quantizer", "modelopt", "--calib", "mse", "-o", "x"),
     "--calib mse is not offered by --quantizer modelopt: use one of max, entropy"),
    (("build-engine", "--precision", "int8", "--quantizer", "modelopt", "--percentile", "99.9"),
     "--percentile apply to --quantizer pq only"),
    (("quantize", "--quantizer", "modelopt"),
     "harness quantize is a pytorch-quantization feature: --quantizer modelopt applies to harness export and "
     "build-engine only"),
    (("sensitivity", "--quantizer", "modelopt"), "harness sensitivity is a pytorch-quantization feature"),
    (("qat", "--quant", "q.pt", "--quantizer", "modelopt", "-o", "x"), "harness qat is a pytorch-quantization"),
])
def test_what_modelopt_does_not_offer_is_refused_in_one_line(run_cli, args, message):
    result = run_cli(*args)
    assert result.exit_code == 2 and message in result.output and len(result.output.splitlines()) == 1


def test_pq_only_settings_neither_change_nor_split_a_modelopt_request():
    cfg = QuantConfig(tool="modelopt", mode="naive", percentile=50.0, calib="max")
    assert cfg.mode is None and cfg.percentile == 99.99
    assert cfg.to_dict() == QuantConfig(tool="modelopt", calib="max").to_dict() == {
        "tool": "modelopt", "calib": "max", "calib_batches": 8, "calib_batch_size": 32, "dataset": "digits"}
    assert QuantConfig.from_dict(cfg.to_dict()) == cfg
    assert "tool" not in QuantConfig().to_dict()  # pq keys (caches, checkpoints) are what they were


def test_a_modelopt_release_keys_the_files_it_makes(monkeypatch, tmp_path):
    from importlib import metadata

    from harness.build import onnx_cache_path
    from harness.models.registry import resolve_model

    spec, quant = resolve_model("digits-resnet"), QuantConfig(tool="modelopt").to_dict()
    paths = set()
    for release in ("0.47.0", "0.48.0"):
        monkeypatch.setattr(metadata, "version", lambda dist, r=release: r)
        paths.add(onnx_cache_path(spec, "int8", tmp_path, quant))
    assert len(paths) == 2


@pytest.mark.parametrize("quantization, extra, needles", [
    ("{tools: [pq, tensorrt]}", "", ["quantization.tools[1]: 'tensorrt' is not allowed", "pq, modelopt"]),
    ("{tools: []}", "", ["quantization.tools: must not be empty"]),
    ("{tools: [modelopt], calibrators: [percentile, mse]}", "",
     ["quantization.tools: modelopt calibrates with max or entropy and quantization.calibrators lists neither"]),
    ("{tools: [pq, modelopt]}", "include: [{tool: modelopt, mode: naive}]\n",
     ["include[0].mode: does not apply to tool modelopt"]),
    ("{tools: [pq, modelopt]}", "exclude: [{tool: modelopt, calibrator: mse}]\n",
     ["exclude[0].calibrator: tool modelopt calibrates with max or entropy"]),
    ("{tools: [pq, modelopt]}", "baseline: {precision: int8, tool: modelopt, mode: selective}\n",
     ["baseline.mode: does not apply to tool modelopt"]),
])
def test_bad_tools_settings_name_the_key(tmp_path, quantization, extra, needles):
    path = tmp_path / "exp.yaml"
    path.write_text(f"models: [digits-resnet]\nprecisions: [int8]\nquantization: {quantization}\n{extra}")
    with pytest.raises(HarnessError) as err:
        load_experiment(path)
    for needle in needles:
        assert needle in err.value.message, err.value.message


def test_tools_axis_expands_modelopt_without_modes_over_its_calibrators(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("models: [digits-resnet]\nprecisions: [fp32, int8]\n"
                    "quantization: {tools: [pq, modelopt], modes: [naive, selective], "
                    "calibrators: [max, entropy, percentile]}\nexclude: [{tool: modelopt, calibrator: entropy}]\n"
                    "include: [{precision: int8-fp16, mode: selective, calibrator: max}]\n"
                    "baseline: {precision: int8, mode: selective, calibrator: max}\n")
    exp = load_experiment(path)
    cells = expand(exp)
    assert {(c.tool, c.mode, c.calibrator) for c in cells if c.precision == "fp32"} == {(None, None, None)}
    pq = [c for c in cells if c.tool == "pq" and c.precision == "int8"]
    assert len(pq) == 6 and {c.mode for c in pq} == {"naive", "selective"}
    assert [(c.tool, c.mode) for c in cells if c.precision == "int8-fp16"] == [("pq", "selective")]
    modelopt = [c for c in cells if c.tool == "modelopt"]
    assert [(c.mode, c.calibrator) for c in modelopt] == [(None, "max")]
    assert modelopt[0].label().endswith("int8 modelopt/max b1")
    base = baseline_of(exp, modelopt[0])  # a baseline naming a mode is a pq cell
    assert (base.tool, base.mode, base.calibrator) == ("pq", "selective", "max") and base in cells


@needs_modelopt
@pytest.mark.parametrize("precision", ["int8", "int8-fp16"])
def test_modelopt_export_is_a_checked_ready_qdq_onnx_close_to_fp32(run_cli, engines_dir, precision):
    from harness.data.datasets import resolve_dataset
    from harness.export.onnx_export import run_onnx
    from harness.measure.accuracy import sqnr_db
    from harness.measure.evaluate import reference_outputs
    from harness.models.registry import resolve_model
    from harness.quantize.inspect_onnx import inspect_file

    result = run_cli("export", "--precision", precision, "--quantizer", "modelopt", "--calib", "max", "-o", "m.onnx")
    assert result.exit_code == 0, result.output
    model = onnx.load("m.onnx")
    onnx.checker.check_model(model, full_check=True)
    report = inspect_file(Path("m.onnx"))
    assert report.hazard_count == 0 and len(report.weighted_quantized) == 11 and len(report.residual_quantized) == 4
    elem = {"int8": onnx.TensorProto.FLOAT, "int8-fp16": onnx.TensorProto.FLOAT16}[precision]
    scales = [i for i in model.graph.initializer if "scale" in i.name]
    assert scales and {i.data_type for i in scales} == {elem}
    assert [v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)] == [1, 1]  # FP32 I/O
    data = resolve_dataset("digits", resolve_model("digits-resnet"))
    x, _ = data.take("val", 400)
    got, ref = run_onnx(Path("m.onnx"), x), reference_outputs(data, "val", 400)
    assert sqnr_db(ref, got) > 30 and np.mean(got.argmax(1) == ref.argmax(1)) >= 0.99


@needs_modelopt
def test_sweep_with_both_tools_gives_rows_side_by_side(run_cli, tmp_path, engines_dir):
    table = _sweep(run_cli, tmp_path, engines_dir)
    assert (table["status"] == "ok").all(), table["error"].tolist()
    int8 = table[table["precision"] == "int8"].set_index("tool")
    assert sorted(int8.index) == ["modelopt", "pq"] and pd.isna(int8.loc["modelopt", "mode"])
    assert (int8["qdq_hazards"] == 0).all() and (int8["sqnr_db"] > 30).all()
    assert int8.loc["modelopt", "qdq_float_layers"] == 1 and int8.loc["modelopt", "onnx"] != int8.loc["pq", "onnx"]
    page = (tmp_path / "reports" / "tools" / "report.html").read_text()
    assert '<td class="text" data-key="modelopt">modelopt</td>' in page  # the results table names its tool
