"""harness compare: two artifacts on the same inputs, golden files both ways, tolerances as a CI check."""

import json

import numpy as np
import onnx
import torch
from test_cli_errors import assert_one_line_error

from harness.debug.compare import diff
from harness.models.registry import load_model, resolve_model


def test_engine_against_torch_scores_every_metric(run_cli, digits_engine, tmp_path):
    out = tmp_path / "c.json"
    result = run_cli("compare", "torch:digits-resnet", digits_engine.artifact, "--dataset", "digits", "--limit", 32,
                     "--min-sqnr", 60, "--min-cosine", 0.9999, "--min-top1-agreement", 100, "--json", out,
                     "--plot", tmp_path / "err.png")
    assert result.exit_code == 0, result.output
    row = json.loads(out.read_text())["outputs"][0]
    assert row["name"] == "logits" and row["shape"] == [32, 10] and row["passed"]
    assert row["sqnr_db"] > 100 and row["top1_agreement"] == 100.0 and row["max_abs"] < 1e-4
    assert (tmp_path / "err.png").read_bytes()[:4] == b"\x89PNG"


def test_golden_files_round_trip(run_cli, digits_engine, tmp_path):
    """Outputs saved on one machine (PyTorch here) are the reference for an engine elsewhere, and back."""
    golden, inputs = tmp_path / "golden.npz", tmp_path / "inputs.npz"
    saved = run_cli("compare", "torch:digits-resnet", "--dataset", "digits", "--limit", 16,
                    "--save-outputs", golden, "--save-inputs", inputs)
    assert saved.exit_code == 0, saved.output
    x = np.load(inputs)["input"]
    spec = resolve_model("digits-resnet")
    with torch.no_grad():
        want = load_model(spec)(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(np.load(golden)["output/logits"], want)
    meta = json.loads(str(np.load(golden)["meta"]))
    assert meta["inputs"] == {"kind": "dataset", "dataset": "digits", "split": "val", "limit": 16}

    out = tmp_path / "c.json"
    result = run_cli("compare", "--load-outputs", golden, digits_engine.artifact, "--atol", "logits=1e-4",
                     "--json", out)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["samples"] == 16
    # and back: the engine's outputs saved, the PyTorch model checked against them on the saved inputs
    engine_golden = tmp_path / "engine.npz"
    assert run_cli("compare", digits_engine.artifact, "--load-inputs", inputs,
                   "--save-outputs", engine_golden).exit_code == 0
    back = run_cli("compare", "--load-outputs", engine_golden, "torch:digits-resnet", "--atol", "1e-4")
    assert back.exit_code == 0, back.output


def test_broken_tolerance_exits_1(run_cli, digits_engine, tmp_path):
    out = tmp_path / "c.json"
    result = run_cli("compare", "torch:digits-resnet", digits_engine.artifact, "--atol", 0, "--rtol", 0,
                     "--json", out)
    assert result.exit_code == 1, result.output
    assert "FAIL:" in result.output and "off by more than atol 0" in result.output
    assert json.loads(out.read_text())["passed"] is False


def test_metrics_on_known_values():
    ref = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], np.float32)
    test = np.array([[1.0, 2.0, 3.5], [1.0, 2.0, 3.0]], np.float32)
    d = diff("y", ref, test, k=2)
    assert d.max_abs == 2.0 and d.top1_agreement == 50.0 and d.topk_agreement == 50.0
    assert np.isclose(d.sqnr_db, 10 * np.log10(28 / 8.25))
    nan = diff("y", ref, np.where(ref > 2, np.nan, ref))
    assert nan.nan_test == 2 and nan.nan_ref == 0


def _renamed(src, dst, output="probs", extra_output=False):
    model = onnx.load(src)
    if extra_output:
        first = model.graph.node[0].output[0]
        model.graph.output.append(onnx.helper.make_tensor_value_info(first, onnx.TensorProto.FLOAT, None))
    else:
        last = model.graph.node[-1]
        last.output[0] = output
        model.graph.output[0].name = output
    onnx.save(model, dst)
    return dst


def test_bad_input_is_one_line(run_cli, digits_engine, tmp_path):
    onnx_path = digits_engine.onnx_path
    assert_one_line_error(run_cli("compare", "torch:digits-resnet", "torch:resnet18"), "input shapes differ",
                          "Nx1x32x32", "Nx3x224x224")
    assert_one_line_error(run_cli("compare", onnx_path, _renamed(onnx_path, tmp_path / "renamed.onnx")),
                          "output names differ", "logits", "probs")
    assert_one_line_error(run_cli("compare", onnx_path, _renamed(onnx_path, tmp_path / "two.onnx", extra_output=True)),
                          "has 1 outputs", "2")
    other = tmp_path / "resnet.npz"
    assert run_cli("compare", "torch:resnet18", "--limit", 2, "--save-outputs", other).exit_code == 0
    assert_one_line_error(run_cli("compare", "--load-outputs", other, digits_engine.artifact),
                          "saved from resnet18", "not digits-resnet")
    assert_one_line_error(run_cli("compare", "torch:digits-resnet"), "give two sources")
    assert_one_line_error(run_cli("compare", "torch:digits-resnet", "nothing.engine"), "nothing.engine: no such file")
    assert_one_line_error(run_cli("compare", "torch:digits-resnet", onnx_path, "--atol", "x=abc"),
                          "Invalid value for '--atol': 'x=abc': 'abc' is not a number")
