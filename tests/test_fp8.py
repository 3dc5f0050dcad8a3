"""FP8 E4M3 beside INT8: the quantizer and its ONNX, the calibrators it takes, the export check, FP8 eligibility
(harness inspect, selective placement), the CPU reference's Relu rule, sweeps and the report's headline."""

import json

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from harness.backends.cpu import reference_session
from harness.data.datasets import resolve_dataset
from harness.errors import HarnessError
from harness.export.onnx_export import run_onnx, trace_onnx
from harness.measure.accuracy import sqnr_db
from harness.models.registry import load_model, resolve_model
from harness.quantize.config import QuantConfig
from harness.quantize.fp8_rules import conv_rules, gemm_rules
from harness.quantize.modules import E4M3_MAX, Fp8Quantizer, swap, to_fp8
from harness.quantize.onnx_graph import Graph

FP8 = TensorProto.FLOAT8E4M3FN


def zero_point_types(model: onnx.ModelProto) -> list[int]:
    """The element type of every QuantizeLinear's zero point (an initializer or a Constant node)."""
    g = Graph(model)
    types = []
    for q in (n for n in g.nodes if n.op_type == "QuantizeLinear"):
        name = q.input[2]
        if name in g.initializers:
            types.append(g.initializers[name].data_type)
        else:
            types.append(next(a.t.data_type for a in g.producer[name].attribute if a.name == "value"))
    return types


def _fp8_qdq_graph(scale: np.ndarray, axis: int | None, shape) -> onnx.ModelProto:
    """x -> QuantizeLinear -> DequantizeLinear with FP8 E4M3 zero points: ONNX Runtime's FP8 arithmetic."""
    zero = helper.make_tensor("z", FP8, list(scale.shape), [0.0] * scale.size)
    attrs = {} if axis is None else {"axis": axis}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **attrs),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))],
                              [numpy_helper.from_array(scale.astype(np.float32), "s"), zero])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


@pytest.mark.parametrize("axis", [None, 0])
def test_fp8_fake_quant_is_what_onnx_runtime_computes_ties_saturation_and_subnormals(axis):
    """The twin the export check compares with must round as QuantizeLinear does: to nearest even, saturating at
    +-448, with E4M3's subnormals; per tensor and per channel."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 64)).astype(np.float32) * 3
    x[0, :6] = [1000.0, -1000.0, 1.0625, 1.1875, 2.0 ** -9, -(2.0 ** -8) * 1.5]  # over range, ties, subnormals
    amax = np.array([4.0, 2.0, 8.0, 1.0], np.float32) if axis == 0 else np.array(4.0, np.float32)
    q = Fp8Quantizer()
    q.register_buffer("_amax", torch.from_numpy(amax.reshape(4, 1) if axis == 0 else amax))
    with torch.no_grad():
        got = q(torch.from_numpy(x)).numpy()
    want = reference_session(_fp8_qdq_graph(amax / E4M3_MAX, axis, x.shape).SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, want)
    assert np.abs(got).max() <= amax.max() and len(np.unique(got[1])) < 64  # saturated, and on a coarse grid


def test_fp8_quantizer_exports_fp8_qdq_per_channel_on_weights():
    conv = to_fp8(swap(nn.Conv2d(3, 8, 3), __import__("pytorch_quantization").nn.QuantConv2d))
    conv._input_quantizer.register_buffer("_amax", torch.tensor(2.0))
    conv._weight_quantizer.register_buffer("_amax", torch.rand(8, 1, 1, 1) + 0.5)
    model = trace_onnx(conv, np.ones((2, 3, 8, 8), np.float32), 19)
    g = Graph(model)
    qs = [n for n in g.nodes if n.op_type == "QuantizeLinear"]
    assert len(qs) == 2 and zero_point_types(model) == [FP8, FP8]
    axes = sorted((next((a.i for a in n.attribute if a.name == "axis"), None) is not None) for n in qs)
    assert axes == [False, True]  # activations per tensor, weights per output channel


def test_fp8_calibrators_and_defaults_and_cache_keys():
    assert QuantConfig(dtype="fp8").calib == "max" and QuantConfig().calib == "entropy"
    assert "dtype" not in QuantConfig().to_dict() and QuantConfig(dtype="fp8").to_dict()["dtype"] == "fp8"
    for calib in ("entropy", "mse"):
        with pytest.raises(HarnessError, match=f"--calib {calib} does not apply to FP8: .* max or percentile"):
            QuantConfig(dtype="fp8", calib=calib)
    with pytest.raises(HarnessError, match="entropy does not apply to FP8"):
        QuantConfig(dtype="fp8", overrides=("layer1*=entropy",))
    assert QuantConfig(dtype="fp8", calib="percentile").calib == "percentile"
    assert QuantConfig(tool="modelopt", dtype="fp8", calib="entropy").to_dict()["dtype"] == "fp8"  # ModelOpt's FP8


def test_rules_name_each_limit():
    assert conv_rules(3, 64, 1, 49, True) == ["first convolution with 3 input channels (no FP8 tactic, TensorRT "
                                              "#3987)", "filter of 49 taps > 32", "3 input channels <= 16"]
    assert conv_rules(32, 32, 32, 9, False)[:2] == ["depthwise convolution (no optimized FP8 kernels)",
                                                    "1 input channel per group <= 16"]
    assert conv_rules(128, 128, 32, 9, False) == ["grouped (32 groups) convolution (no optimized FP8 kernels)",
                                                  "4 input channels per group <= 16"]
    assert conv_rules(3, 64, 1, 9, False) == ["3 input channels <= 16"]  # not the first: the stem rule is moot
    assert conv_rules(64, 16, 1, 9, False) == ["16 output channels <= 16"] and conv_rules(17, 17, 1, 9, False) == []
    assert gemm_rules(64, 10) == ["N=10 < 16"] and gemm_rules(8, 64) == ["K=8 < 16"] and gemm_rules(16, 16) == []


@pytest.fixture(scope="module")
def digits_fp8(tmp_path_factory):
    root = tmp_path_factory.mktemp("fp8")
    return root, root / "digits-fp8.onnx"


def test_done_when_digits_fp8_export_keeps_fp8_qdq_that_runs_on_the_cpu_within_the_bar(run_cli, digits_fp8):
    """`harness export --model digits-resnet --precision fp8`: FLOAT8E4M3FN zero points on every QuantizeLinear,
    ONNX Runtime CPU runs it, >= 18 dB SQNR and >= 98 % top-1 agreement with FP32 on the validation split."""
    root, path = digits_fp8
    result = run_cli("export", "--model", "digits-resnet", "--precision", "fp8", "-o", path)
    assert result.exit_code == 0, result.output
    types = zero_point_types(onnx.load(path))
    assert types and set(types) == {FP8}
    spec = resolve_model("digits-resnet")
    x, _ = resolve_dataset("digits", spec).take("val", 400)
    with torch.no_grad():
        fp32 = load_model(spec)(torch.from_numpy(x)).numpy()
    got = run_onnx(str(path), x)
    agreement = 100 * np.mean(got.argmax(1) == fp32.argmax(1))
    assert sqnr_db(fp32, got) >= 18.0 and agreement >= 98.0, (sqnr_db(fp32, got), agreement)
    check = json.loads(path.with_suffix(".verify.json").read_text())
    assert check["passed"] and check["quantizers_checked"] == len(types)  # each FP8 Q/DQ matched to its quantizer


def test_selective_fp8_leaves_ineligible_layers_float_and_inspect_agrees(run_cli, digits_fp8, tmp_path):
    root, path = digits_fp8
    if not path.exists():
        run_cli("export", "--model", "digits-resnet", "--precision", "fp8", "-o", path)
    result = run_cli("inspect", path, "--strict", "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output  # no FP8 Q/DQ on a layer TensorRT will not run in FP8
    report = json.loads((tmp_path / "r.json").read_text())
    assert "/fc/Gemm (Gemm): N=10 < 16" in report["fp8_ineligible"] and not report["hazards"]["fp8_ineligible"]
    assert len(report["weighted_quantized"]) == 4  # layer2.conv2 and layer3's convolutions: 32+ channels
    naive = run_cli("export", "--model", "digits-resnet", "--precision", "fp8", "--mode", "naive", "-o",
                    tmp_path / "naive.onnx")
    assert naive.exit_code == 0, naive.output
    strict = run_cli("inspect", tmp_path / "naive.onnx", "--strict")
    assert strict.exit_code == 1
    assert "hazard: FP8 Q/DQ on layers TensorRT will not run in FP8: /conv1/Conv (Conv): 1 input channel <= 16" \
        in strict.output


def test_quantize_writes_fp8_checkpoints_that_serve_fp8_precisions_only(run_cli, tmp_path):
    out = tmp_path / "d.quant.pt"
    result = run_cli("quantize", "--precision", "fp8", "--calib-batches", 2, "--engines-dir", tmp_path, "-o", out)
    assert result.exit_code == 0, result.output
    assert "FP8-ineligible in TensorRT (N=10 < 16)" in result.output and "fc" in result.output
    refused = run_cli("export", "--precision", "int8", "--quant", out, "-o", tmp_path / "x")
    assert refused.exit_code == 2
    assert f"--quant {out} is a fp8 checkpoint: use --precision fp8 or fp8-fp16" in refused.output
    wrong = run_cli("export", "--precision", "fp8", "--calib", "entropy", "-o", tmp_path / "y.onnx")
    assert wrong.exit_code == 2 and "does not apply to FP8" in wrong.output


def test_the_reference_keeps_the_relu_before_an_fp8_quantize():
    """ONNX Runtime's ReluQuantRewrite takes an FP8 zero point for the type's minimum and drops the Relu (a
    digits-resnet FP8 file read -10 dB): the reference session must run the Relu."""
    model = _fp8_qdq_graph(np.array(0.125, np.float32), None, (1, 4))
    model.graph.node.insert(0, helper.make_node("Relu", ["x0"], ["x"]))
    model.graph.input[0].name = "x0"
    x = np.array([[-2.0, -1.0, 1.0, 2.0]], np.float32)
    out = reference_session(model.SerializeToString()).run(None, {"x0": x})[0]
    np.testing.assert_array_equal(out, [[0.0, 0.0, 1.0, 2.0]])


def test_fp8_sweep_cells_take_the_fp8_calibrators(tmp_path):
    from harness.sweep.experiment import load_experiment
    from harness.sweep.matrix import expand, quant_config

    path = tmp_path / "e.yaml"
    path.write_text("models: [digits-resnet]\nprecisions: [int8, fp8]\nquantization: {tools: [pq, modelopt], "
                    "modes: [selective], calibrators: [max, entropy, percentile]}\n")
    cells = expand(load_experiment(path))
    fp8 = sorted((c.tool, c.calibrator) for c in cells if c.precision == "fp8")
    assert fp8 == [("modelopt", "entropy"), ("modelopt", "max"), ("pq", "max"), ("pq", "percentile")]
    assert quant_config(load_experiment(path), next(c for c in cells if c.precision == "fp8")).dtype == "fp8"
    path.write_text("models: [digits-resnet]\nprecisions: [fp8]\nquantization: {calibrators: [entropy]}\n")
    with pytest.raises(HarnessError, match=r"quantization.calibrators: precisions lists fp8, and FP8 calibrates "
                                           r"with max or percentile"):
        load_experiment(path)


def test_headline_compares_the_best_fp8_and_the_best_int8_recipe():
    from harness.report.headline import headline

    def row(precision, mode, calib, top1, sqnr, p50):
        return {"model": "net", "dataset": "digits", "backend": "cpu", "batch": 1, "precision": precision,
                "tool": "pq", "mode": mode, "calibrator": calib, "status": "ok", "top1_pct": top1,
                "top1_agreement_pct": 100.0, "sqnr_db": sqnr, "latency_p50_ms": p50, "latency_p50_ci_lo_ms": p50,
                "latency_p50_ci_hi_ms": p50, "stable": True, "speedup_vs_fp32": np.nan, "speedup_vs_fp16": np.nan,
                "reference_degenerate": None, "labels_unusable": None, "scenario": "closed-loop"}

    df = pd.DataFrame([row("fp32", None, None, 99.5, 120.0, 2.0) | {"tool": None},
                       row("int8", "selective", "mse", 99.5, 38.5, 1.0), row("int8", "naive", "max", 99.0, 30.0, 0.9),
                       row("fp8", "selective", "max", 99.25, 32.0, 1.1), row("fp8", "naive", "max", 97.0, 22.0, 1.0)])
    lines = headline(df)
    assert any(s.startswith("net (cpu): Best FP8 recipe: fp8 selective/max (top-1 99.25 %, SQNR 32.0 dB); against "
                            "fp8 naive/max: +2.25 points") for s in lines)
    versus = next(s for s in lines if "best FP8 against best INT8" in s)
    assert versus == ("net (cpu): best FP8 against best INT8, fp8 selective/max against int8 selective/mse: "
                      "-0.25 points, -6.5 dB SQNR, 1.10x its latency.")


def test_an_fp8_channel_rule_is_read_from_pytorch_layers_too():
    from harness.quantize.replace import fp8_ineligible_layers, prepare

    model = prepare(nn.Sequential(nn.Conv2d(3, 32, 7), nn.ReLU(), nn.Conv2d(32, 32, 3, groups=32),
                                  nn.Conv2d(32, 64, 1), nn.Flatten(), nn.Linear(64, 10)).eval(), "naive")
    found = fp8_ineligible_layers(model)
    assert list(found) == ["0", "2", "5"]
    assert found["0"].startswith("first convolution with 3 input channels") and "49 taps" in found["0"]
    assert found["2"].startswith("depthwise") and found["5"] == "N=10 < 16"


def wide_head() -> nn.Module:
    """An RGB stem, a 32-channel conv and a 20-class head: a head FP8 could run (N >= 16)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 20))


def test_selective_fp8_keeps_the_head_float_as_int8_does_and_the_stem_for_its_rule(tmp_path, monkeypatch):
    from harness.quantize.checkpoint import calibrate

    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    spec = resolve_model("test_fp8:wide_head", input_shape="3x8x8")
    fp8 = calibrate(spec, QuantConfig(dtype="fp8", calib_batches=1), tmp_path)
    assert fp8.reasons["6"] == "classifier head (--quantize-head quantizes it)"
    assert fp8.reasons["0"].startswith("FP8-ineligible in TensorRT (first convolution with 3 input channels")
    assert "2" not in fp8.reasons and isinstance(fp8.model.get_submodule("2")._input_quantizer, Fp8Quantizer)
    head = calibrate(spec, QuantConfig(dtype="fp8", calib_batches=1, quantize_head=True), tmp_path)
    assert "6" not in head.reasons


@pytest.mark.parametrize("name, expected", [
    ("resnet18", {"/conv1/Conv": ["first convolution with 3 input channels", "filter of 49 taps > 32"]}),
    ("mobilenet_v2", {"/features/features.0/features.0.0/Conv": ["first convolution with 3 input channels"],
                      "/features/features.1/conv/conv.0/conv.0.0/Conv": ["depthwise"]}),
])
def test_inspect_names_the_fp8_ineligible_layers_of_torchvision_models_with_their_rules(name, expected):
    """What `harness inspect` lists before an FP8 build: each layer TensorRT will not run in FP8, with its rule."""
    from harness.export.onnx_export import trace_onnx
    from harness.models.registry import load_model, resolve_model
    from harness.quantize.inspect_onnx import check

    spec = resolve_model(name, input_shape="3x32x32")
    proto = trace_onnx(load_model(spec), np.zeros((1, 3, 32, 32), np.float32))
    listed = {line.split(" (")[0]: line for line in check(proto).fp8_ineligible}
    for node, rules in expected.items():
        assert node in listed, sorted(listed)[:5]
        assert all(rule in listed[node] for rule in rules), listed[node]
    if name == "mobilenet_v2":
        assert sum("depthwise" in line for line in listed.values()) == 17  # every depthwise convolution
