"""Engine inspector JSON (TensorRT 10.x and 11.x layouts) -> per-layer table, reformats, INT8/FP8 shortfall."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from fakes.tiny_onnx import tiny_onnx

from harness.backends.base import BuildOptions
from harness.backends.tensorrt import inspector
from harness.build import build_artifact
from harness.errors import HarnessError
from harness.models.registry import resolve_model

# Trimmed from real DETAILED inspector output: a reformat, a fused INT8 conv, a conv left in FP16.
LAYERS_10 = {
    "Layers": [
        {"Name": "Reformatting CopyNode for Input Tensor 0 to /conv1/Conv", "LayerType": "Reformat",
         "Inputs": [{"Name": "input", "Location": "Device", "Dimensions": [8, 1, 32, 32],
                     "Format/Datatype": "Row major linear FP32"}],
         "Outputs": [{"Name": "r", "Location": "Device", "Dimensions": [8, 1, 32, 32],
                      "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}],
         "ParameterType": "Reformat", "Origin": "REFORMAT", "TacticValue": "0x00000000000003ea",
         "Metadata": ""},
        {"Name": "w1 + /conv1/input/QuantizeLinear + /conv1/Conv + /relu/Relu", "LayerType": "CaskConvolution",
         "Inputs": [{"Name": "r", "Location": "Device", "Dimensions": [8, 1, 32, 32],
                     "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}],
         "Outputs": [{"Name": "c1", "Location": "Device", "Dimensions": [8, 4, 32, 32],
                      "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}],
         "TacticName": "sm80_xmma_fprop_implicit_gemm_interleaved_i8i8_i8i32_f32_nchw_vect_c_32",
         "TacticValue": "0x123", "Metadata": "[ONNX Layer: /conv1/Conv]\x1e[ONNX Layer: /relu/Relu]"},
        {"Name": "/conv2/Conv", "LayerType": "CaskConvolution",
         "Inputs": [{"Name": "c1", "Location": "Device", "Dimensions": [8, 4, 32, 32],
                     "Format/Datatype": "Half"}],
         "Outputs": [{"Name": "c2", "Location": "Device", "Dimensions": [8, 4, 32, 32],
                      "Format/Datatype": "Half"}],
         "TacticName": "sm80_xmma_fprop_implicit_gemm_f16f16_f16f16_f16", "Metadata": "[ONNX Layer: /conv2/Conv]"},
        {"Name": "/fc/Gemm", "LayerType": "CaskGemm",
         "Inputs": [{"Name": "f", "Format/Datatype": "Row major linear FP32 format"},
                    {"Name": "bias", "Format/Datatype": "Row major linear BFloat16 format"}],
         "Outputs": [{"Name": "logits", "Format/Datatype": "Row major linear FP32 format"}],
         "TacticValue": "0x7"},
    ],
    "Bindings": ["input", "logits"],
}


def as_11x(info10: dict) -> dict:
    """The same engine as TensorRT 11.x reports it: I/O Tensors objects, Format and DataType apart."""
    words = {"FP32": "Float", "FP16": "Half", "INT8": "Int8", "BF16": "BFloat16", "FP8": "FP8"}

    def tensor(t):
        out = {k: v for k, v in t.items() if k != "Format/Datatype"}
        return {**out, "Format": "kLINEAR", "DataType": words[inspector.tensor_precision(t)]}

    layers = [{**layer, "Inputs": [tensor(t) for t in layer["Inputs"]],
               "Outputs": [tensor(t) for t in layer["Outputs"]]} for layer in info10["Layers"]]
    io = [{"Name": "input", "IOMode": "Input", "DataType": "Float", "Dimensions": [-1, 1, 32, 32],
           "Location": "Device", "IsShapeInferenceIO": False, "ProfileInfo": []},
          {"Name": "logits", "IOMode": "Output", "DataType": "Float", "Dimensions": [-1, 10],
           "Location": "Device", "IsShapeInferenceIO": False, "ProfileInfo": []}]
    return {"Layers": layers, "I/O Tensors": io}


@pytest.mark.parametrize("info, layout", [(LAYERS_10, "10.x"), (as_11x(LAYERS_10), "11.x")])
def test_both_layouts_give_the_same_table(info, layout):
    info = inspector.parse_engine_information(json.dumps(info))
    assert inspector.layout(info) == layout and inspector.io_tensor_names(info) == ["input", "logits"]
    table = inspector.layer_table(info)
    assert list(table.columns) == inspector.COLUMNS
    assert table["input_precision"].tolist() == ["FP32", "INT8", "FP16", "FP32/BF16"]
    assert table["output_precision"].tolist() == ["INT8", "FP16", "FP16", "FP32"]
    assert table["tactic"].tolist()[1].endswith("i8i8_i8i32_f32_nchw_vect_c_32")
    assert table["tactic"].tolist()[3] == "0x7"  # no TacticName: the value stands in
    assert table["onnx_nodes"].tolist()[1] == "/conv1/Conv;/relu/Relu"
    assert table["onnx_nodes"].tolist()[3] == "/fc/Gemm"  # no Metadata: the layer name
    assert len(inspector.reformat_layers(table)) == 1


def test_planned_int8_layers_running_in_float_are_found(tmp_path):
    planned = inspector.planned(tiny_onnx(tmp_path / "qdq.onnx", qdq=True))
    assert planned == {"/conv1/Conv": "INT8", "/conv2/Conv": "INT8"}  # fc has no Q/DQ in front: not planned
    short = inspector.shortfall(inspector.layer_table(LAYERS_10), {**planned, "/gone/Conv": "INT8"})
    assert short["onnx_node"].tolist() == ["/conv2/Conv", "/gone/Conv"]
    assert short["finding"].tolist() == ["planned INT8, runs with FP16 input", "no engine layer names this node"]
    facts = inspector.summary(inspector.layer_table(LAYERS_10), planned)
    assert facts["int8_planned"] == 2 and facts["int8_not_running_int8"] == 1 and "fp8_planned" not in facts
    assert facts["layers_by_input_precision"] == {"FP32": 2, "INT8": 1, "FP16": 1}


def test_fp8_plan_is_read_from_the_dq_type_and_the_table_shows_intended_beside_actual(tmp_path):
    planned = inspector.planned(tiny_onnx(tmp_path / "fp8.onnx", qdq=True, fp8=True))
    assert planned == {"/conv1/Conv": "FP8", "/conv2/Conv": "FP8"}
    fp8_10 = json.loads(json.dumps(LAYERS_10).replace("Thirty-two wide channel vectorized row major Int8 format",
                                                      "Row major linear FP8 format"))
    for info in (fp8_10, as_11x(fp8_10)):
        table = inspector.layer_table(inspector.parse_engine_information(json.dumps(info)), planned)
        assert table["intended"].tolist() == ["", "FP8", "FP8", ""]
        assert table["input_precision"].tolist()[1:3] == ["FP8", "FP16"]  # conv2: meant FP8, runs FP16
        facts = inspector.summary(table, planned)
        assert facts["fp8_planned"] == 2 and facts["fp8_not_running_fp8"] == 1 and "int8_planned" not in facts
        assert facts["fp8_shortfall"][0]["finding"] == "planned FP8, runs with FP16 input"


@pytest.mark.parametrize("text, needle", [
    ("not json", "not JSON"),
    ('{"Bindings": []}', "no 'Layers' list"),
    ('{"Layers": ["conv1", "relu"]}', "DETAILED"),
])
def test_unusable_inspector_json_is_refused_with_the_fix(text, needle):
    with pytest.raises(HarnessError, match=needle):
        inspector.parse_engine_information(text)


def test_cli_reads_saved_layer_info_without_a_gpu(run_cli, tmp_path):
    (tmp_path / "layers.json").write_text(json.dumps(as_11x(LAYERS_10)))
    onnx_path = tiny_onnx(tmp_path / "qdq.onnx", qdq=True)
    result = run_cli("inspect-engine", "--layer-info", tmp_path / "layers.json", "--onnx", onnx_path)
    assert result.exit_code == 0, result.output
    assert "reformat layers" in result.output and "TensorRT 11.x" in result.output
    assert "not INT8: /conv2/Conv -> /conv2/Conv: planned INT8, runs with FP16 input" in result.output
    assert "residual Add whose shortcut input is not quantized" in result.output
    table = pd.read_csv(tmp_path / "reports" / "inspect" / "layers.layers.csv", keep_default_na=False)
    assert table["intended"].tolist() == ["", "INT8", "INT8", ""]
    assert len(table) == 4 and json.loads((tmp_path / "reports/inspect/layers.summary.json").read_text())[
        "int8_not_running_int8"] == 1


@pytest.mark.parametrize("version", ["10.9.0", "11.0.0"])
def test_cli_inspects_an_int8_engine_with_the_onnx_from_its_sidecar(fake_gpu, run_cli, tmp_path, version):
    fake_gpu(version, not_int8=("/conv2/Conv",))
    onnx_path = tiny_onnx(tmp_path / "qdq.onnx", qdq=True)
    meta, _ = build_artifact(resolve_model("digits-resnet"), "tensorrt", BuildOptions(precision="int8"),
                           tmp_path / "engines", onnx_path=onnx_path)
    result = run_cli("inspect-engine", meta.artifact, "--all-layers")
    assert result.exit_code == 0, result.output
    assert f"TensorRT {version[:2]}.x" in result.output
    assert re.search(r"planned INT8 but not running INT8 +1\n", result.output)
    assert "not INT8: /conv2/Conv -> /conv2/Conv: planned INT8, runs with FP32 input" in result.output
    assert "i8i8_i8i32" in result.output  # --all-layers prints the tactic column


@pytest.mark.parametrize("version", ["10.9.0", "11.0.0"])
def test_cli_inspects_an_fp8_engine_intended_against_actual(fake_gpu, run_cli, tmp_path, version):
    fake_gpu(version, not_int8=("/conv2/Conv",))  # the double leaves conv2 in float although FP8 was meant
    onnx_path = tiny_onnx(tmp_path / "fp8.onnx", qdq=True, fp8=True)
    meta, _ = build_artifact(resolve_model("digits-resnet"), "tensorrt", BuildOptions(precision="fp8"),
                             tmp_path / "engines", onnx_path=onnx_path)
    result = run_cli("inspect-engine", meta.artifact, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert re.search(r"layers with FP8 input +1\n", result.output)
    assert re.search(r"planned FP8 but not running FP8 +1\n", result.output) and "planned INT8" not in result.output
    assert "not FP8: /conv2/Conv -> /conv2/Conv: planned FP8, runs with FP32 input" in result.output
    assert "no FP8 kernel" in result.output  # FP8's causes, not INT8's
    table = pd.read_csv(tmp_path / "out" / f"{Path(meta.artifact).stem}.layers.csv", keep_default_na=False)
    assert table.set_index("name").loc[["/conv1/Conv", "/conv2/Conv"], "intended"].tolist() == ["FP8", "FP8"]


def test_cli_refuses_other_artifacts_and_missing_arguments(run_cli, digits_engine):
    result = run_cli("inspect-engine", digits_engine.artifact)
    assert result.exit_code == 2 and "is a cpu artifact" in result.output
    result = run_cli("inspect-engine")
    assert result.exit_code == 2 and "give an ENGINE or --layer-info FILE" in result.output
