import numpy as np
import onnx
import pytest
import torch

from harness.data.datasets import resolve_dataset
from harness.export.onnx_export import OPSET, run_onnx, trace_onnx
from harness.models.registry import load_model, resolve_model


@pytest.fixture(scope="module")
def digits():
    spec = resolve_model("digits-resnet")
    return spec, load_model(spec), resolve_dataset("digits", spec)


def test_exported_onnx_matches_pytorch_at_any_batch(digits, tmp_path):
    spec, model, data = digits
    proto = trace_onnx(model, data.take("calib", 2)[0])
    onnx.checker.check_model(proto)
    out = proto.SerializeToString()
    assert proto.opset_import[0].version == OPSET
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    x, _ = data.take("val", 7)  # a batch size never seen at export time
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_onnx(out, x), expected, rtol=1e-4, atol=1e-4)


def test_export_command_writes_a_verified_file(run_cli, tmp_path):
    result = run_cli("export", "--model", "digits-resnet", "-o", tmp_path / "d.onnx")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d.onnx").stat().st_size > 10_000
    assert "passed the strict export check" in result.output
    assert "fp32 ONNX strict check on 32 synthetic inputs, against FP32 PyTorch: SQNR" in result.output
