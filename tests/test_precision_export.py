"""fp16 / int8 / int8-fp16 ONNX: explicit precision in the file, Q/DQ conventions, refusals, CPU agreement."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper
from torch import nn

from harness.backends.base import BuildOptions
from harness.build import build_artifact, load_engine
from harness.data.datasets import resolve_dataset
from harness.errors import HarnessError
from harness.export.onnx_export import run_onnx
from harness.export.precision import to_fp16
from harness.export.variants import QDQ_OPSET, export_variant
from harness.models.registry import resolve_model
from harness.quantize.calibrate import apply_calibration, check_calibrated, collect_stats
from harness.quantize.checkpoint import quantized
from harness.quantize.config import QuantConfig
from harness.quantize.onnx_graph import Graph
from harness.quantize.replace import prepare
from harness.quantize.sensitivity import logits

QUANT = QuantConfig(mode="selective", calib="entropy", calib_batches=4).to_dict()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("variants")
    spec = resolve_model("digits-resnet")
    files = {p: export_variant(spec, p, root / "onnx" / f"{p}.onnx", QUANT if p.startswith("int8") else None)
             for p in ("fp16", "int8", "int8-fp16")}
    return spec, files, root


def test_fp16_file_is_fp16_inside_with_fp32_io(exported):
    spec, files, _ = exported
    model = onnx.load(files["fp16"])
    assert {t.data_type for t in model.graph.initializer} == {TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert [n.op_type for n in model.graph.node][0] == "Cast"


def test_int8_qdq_conventions(exported):
    model = onnx.load(exported[1]["int8"])
    assert model.opset_import[0].version == QDQ_OPSET >= 13
    g = Graph(model)
    qs = [n for n in g.nodes if n.op_type == "QuantizeLinear"]
    assert qs and all(np.all(g.const(n.input[2]) == 0) and g.const(n.input[2]).dtype == np.int8 for n in qs)
    weight_q = [n for n in qs if g.op_of(n.input[0]) is None and n.input[0] in g.initializers]
    assert weight_q and all(dict((a.name, a.i) for a in n.attribute).get("axis") == 0 for n in weight_q)
    assert all(g.const(n.input[1]).shape == (g.initializers[n.input[0]].dims[0],) for n in weight_q)


def test_int8_fp16_quantizes_fp16_tensors(exported):
    model = onnx.load(exported[1]["int8-fp16"])
    g = Graph(model)
    scales = [g.const(n.input[1]) for n in g.nodes if n.op_type == "QuantizeLinear"]
    assert scales and all(s.dtype == np.float16 for s in scales)
    assert model.opset_import[0].version >= 19


def test_cpu_reference_agrees_with_pytorch_fake_quant(exported):
    spec, files, root = exported
    x, y = resolve_dataset("digits", spec).take("val", 400)
    model = quantized(spec, QUANT, root / "calib").model
    torch_out = logits(model, x)
    ort_out = run_onnx(files["int8"], x)
    agreement = 100 * np.mean(torch_out.argmax(1) == ort_out.argmax(1))
    assert agreement >= 99.9
    assert 100 * np.mean(run_onnx(files["int8-fp16"], x).argmax(1) == torch_out.argmax(1)) >= 99.0


@pytest.mark.parametrize("precision", ["fp16", "int8", "int8-fp16"])
def test_cpu_backend_runs_every_precision(exported, precision):
    spec, files, root = exported
    meta, hit = build_artifact(spec, "cpu", BuildOptions(precision=precision, batch_max=8), root,
                             onnx_path=files[precision])
    _, runner = load_engine(meta.artifact)
    x, y = resolve_dataset("digits", spec).take("val", 8)
    out = runner.infer(x)
    assert out.dtype == np.float32 and out.shape == (8, 10) and np.mean(out.argmax(1) == y) >= 0.875


def test_conv_transpose_weights_are_per_channel_on_axis_1(tmp_path):
    model = prepare(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(4, 6, 2, 2)).eval(),
                    "naive")
    x = torch.randn(2, 3, 8, 8).numpy()
    apply_calibration(model, collect_stats(model, [x]), QuantConfig(calib="max"))
    assert model[2]._weight_quantizer._amax.shape == (1, 6, 1, 1)
    from harness.export.onnx_export import trace_onnx
    from harness.quantize.modules import fb_fake_quant

    with fb_fake_quant():
        g = Graph(trace_onnx(model, x, opset=QDQ_OPSET))
    conv_t = next(n for n in g.nodes if n.op_type == "ConvTranspose")
    dq = g.producer[conv_t.input[1]]
    assert dict((a.name, a.i) for a in dq.attribute)["axis"] == 1


def test_uncalibrated_or_zero_scale_is_refused():
    model = prepare(nn.Sequential(nn.Conv2d(3, 4, 3)).eval(), "naive")
    with pytest.raises(HarnessError, match="not calibrated"):
        check_calibrated(model)
    with torch.no_grad():
        model[0].weight[1] = 0  # an all-zero output channel: exact at any scale, so it gets a positive one
    apply_calibration(model, collect_stats(model, [np.ones((1, 3, 5, 5), np.float32)]), QuantConfig(calib="max"))
    check_calibrated(model)
    assert float(model[0]._weight_quantizer._amax.flatten()[1]) == 1.0
    with torch.no_grad():
        model[0]._weight_quantizer._amax[2] = 0  # a damaged or hand-edited scale is still refused
    with pytest.raises(HarnessError, match="zero or invalid scale .* in channel 2"):
        check_calibrated(model)


def test_precision_and_quant_request_must_fit(tmp_path):
    spec = resolve_model("digits-resnet")
    with pytest.raises(HarnessError, match="needs calibration"):
        export_variant(spec, "int8", tmp_path / "a.onnx")
    with pytest.raises(HarnessError, match="float precision"):
        export_variant(spec, "fp16", tmp_path / "b.onnx", QUANT)


def test_fp16_qdq_needs_opset_19():
    q = onnx.helper.make_node("QuantizeLinear", ["x", "s"], ["y"])
    graph = onnx.helper.make_graph([q], "g", [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", TensorProto.INT8, [1])],
                                   [numpy_helper.from_array(np.array(0.1, np.float32), "s")])
    with pytest.raises(HarnessError, match="opset >= 19"):
        to_fp16(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]))
