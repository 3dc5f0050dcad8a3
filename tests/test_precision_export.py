"""fp16 / bf16 / int8 / int8-fp16 ONNX: explicit precision in the file (AutoCast's cast, what it keeps in FP32), Q/DQ
conventions, refusals, CPU agreement, BF16 through its emulation."""

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
from harness.export.precision import FP16_DATA_MAX, cast, emulate_bf16
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
        cast(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), "fp16")


class Loud(nn.Module):
    """A layer whose outputs reach ~3e4 on digits (FP16 holds them, barely), between two ordinary ones."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(1024, 32), nn.Linear(32, 32), nn.Linear(32, 10)
        with torch.no_grad():
            self.b.weight.mul_(2e4)

    def forward(self, x):
        return self.c(self.b(self.a(x.flatten(1))) / 2e4)


def loud() -> nn.Module:
    torch.manual_seed(0)
    return Loud()


def test_fp16_keeps_the_nodes_that_would_overflow_in_fp32_and_says_so(tmp_path, monkeypatch):
    """AutoCast's data_max rule on the reference inputs: the MatMul reaching beyond FP16_DATA_MAX stays FP32 (and its
    neighbours do not), named in the log and in the sidecar."""
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    spec = resolve_model("test_precision_export:loud", input_shape="1x32x32")
    notes = []
    out = export_variant(spec, "fp16", tmp_path / "loud.onnx", log=notes.append)
    kept = __import__("json").loads(out.with_suffix(".verify.json").read_text())["kept_fp32"]
    assert len(kept) >= 1 and all("reaches" in why and f"> {FP16_DATA_MAX:g}" in why for why in kept.values())
    model = onnx.load(out)
    assert any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer)  # the rest is FP16
    assert any("node(s) kept in FP32" in n and next(iter(kept)) in n for n in notes)


def test_autocast_on_a_qdq_graph_gives_what_modelopts_convert_to_f16_gives(exported):
    """harness casts Q/DQ graphs with convert_to_mixed_precision (it takes a node-level keep-FP32 list), which must
    give what ModelOpt's own post-quantization cast, convert_to_f16, gives."""
    from modelopt.onnx.autocast import convert_to_f16

    spec, files, root = exported
    fp32_qdq = onnx.load(files["int8"])
    x, _ = resolve_dataset("digits", spec).take("val", 64)
    ours = run_onnx(cast(fp32_qdq, "fp16", x).model.SerializeToString(), x)
    theirs = run_onnx(convert_to_f16(fp32_qdq, keep_io_types=True).SerializeToString(), x)
    np.testing.assert_array_equal(ours, theirs)


def test_bf16_file_is_bf16_inside_and_scored_through_its_emulation(exported, tmp_path):
    spec, files, root = exported
    path = export_variant(spec, "bf16", tmp_path / "bf16.onnx")
    model = onnx.load(path)
    assert TensorProto.BFLOAT16 in {t.data_type for t in model.graph.initializer}
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    x, _ = resolve_dataset("digits", spec).take("val", 64)
    emulated = run_onnx(emulate_bf16(model).SerializeToString(), x)
    fp16 = run_onnx(files["fp16"], x)
    fp32 = run_onnx(export_variant(spec, "fp32", tmp_path / "fp32.onnx"), x)
    from harness.measure.accuracy import sqnr_db

    assert 30 < sqnr_db(fp32, emulated) < sqnr_db(fp32, fp16)  # BF16 keeps 8 significant bits, FP16 11
    with pytest.raises(HarnessError, match=r"ONNX Runtime's CPU provider has no BF16 kernel for Conv \(node "
                                           r"'/conv1/Conv' .*run bf16 on --backend tensorrt"):
        build_artifact(spec, "cpu", BuildOptions(precision="bf16"), tmp_path, onnx_path=path)


def test_bf16_emulation_rounds_each_tensor_as_bf16_does():
    """Cast to BF16 rounds to nearest even; the emulation rounds a node's BF16 output the same way."""
    x = np.array([[1.0, 1.00390625, 1.01171875, 3.14159265]], np.float32)
    nodes = [onnx.helper.make_node("Cast", ["x"], ["xb"], to=TensorProto.BFLOAT16),
             onnx.helper.make_node("Mul", ["xb", "k"], ["yb"]),
             onnx.helper.make_node("Cast", ["yb"], ["y"], to=TensorProto.FLOAT)]
    k = onnx.helper.make_tensor("k", TensorProto.BFLOAT16, [], [3.0])
    graph = onnx.helper.make_graph(nodes, "g", [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                                   [onnx.helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [k])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 22)])
    got = run_onnx(emulate_bf16(model).SerializeToString(), x)
    import ml_dtypes

    want = (x.astype(ml_dtypes.bfloat16).astype(np.float32) * 3).astype(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(got, want)
    assert got[0, 1] == 3.0 and got[0, 2] != 3.0 * 1.01171875  # a tie went to even; a product was rounded
