"""The export check: correct files kept (deep networks at 224x224 included), broken files refused, figures kept."""

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from harness.data.datasets import resolve_dataset
from harness.errors import HarnessError
from harness.export.variants import export_variant, verify_sidecar
from harness.export.verify import PLACEMENT_SAMPLES, check_file, mcnemar_p
from harness.models.batchnorm import recompute_batchnorm
from harness.models.registry import load_model, resolve_model
from harness.quantize.checkpoint import quantized
from harness.quantize.config import QuantConfig
from harness.quantize.modules import run_recording_quantizers
from harness.quantize.onnx_graph import DEQUANTIZE, QUANTIZE, Graph, drop_unused

QUANT = QuantConfig(mode="selective", calib="entropy", calib_batches=2).to_dict()


@pytest.fixture(scope="module")
def digits_int8(tmp_path_factory):
    """A kept selective INT8 file of digits-resnet and the references a check compares it with."""
    root = tmp_path_factory.mktemp("check")
    spec = resolve_model("digits-resnet")
    path = export_variant(spec, "int8", root / "onnx" / "d.onnx", QUANT)
    x, _ = resolve_dataset("digits", spec).take("val", 32)
    with torch.no_grad():
        fp32 = load_model(spec)(torch.from_numpy(x)).numpy()
    fake_quant = run_recording_quantizers(quantized(spec, QUANT, root / "calib").model, x, PLACEMENT_SAMPLES)
    return onnx.load(path), x, fp32, fake_quant, path


def _check(proto, digits, level="strict"):
    _, x, fp32, fake_quant, _ = digits
    return check_file("int8", proto, x, fp32, level, fake_quant)


def _copy(proto):
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def _set_const(proto, name, value):
    for t in proto.graph.initializer:
        if t.name == name:
            t.CopyFrom(numpy_helper.from_array(np.asarray(value, numpy_helper.to_array(t).dtype), name))
            return
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            node.attribute[0].t.CopyFrom(numpy_helper.from_array(np.asarray(value, np.float32)))
            return
    raise KeyError(name)


def _activation_qdq(proto, consumer_op="Conv"):
    """(Q, DQ) of the first per-tensor pair feeding a node of `consumer_op`."""
    g = Graph(proto)
    for dq in g.nodes:
        if dq.op_type == DEQUANTIZE and g.const(dq.input[1]).ndim == 0 and g.op_of(dq.input[0]) == QUANTIZE \
                and any(c.op_type == consumer_op for c in g.consumers.get(dq.output[0], [])):
            return g.producer[dq.input[0]], dq
    raise LookupError(consumer_op)


def test_the_kept_file_passes_and_its_figures_are_kept(digits_int8):
    proto, *_, path = digits_int8
    report = _check(proto, digits_int8)
    assert report.passed and report.quantizers_checked >= 10
    assert abs(report.sqnr_db - report.fake_quant_sqnr_db) < 0.5
    assert report.file_vs_fake_quant_sqnr_db > report.fake_quant_sqnr_db + 10
    kept = json.loads(verify_sidecar(path).read_text())
    assert kept["passed"] and kept["level"] == "strict" and kept["samples"] == 32 and kept["inputs"] == "digits"
    assert kept["sqnr_db"] > 30 and kept["top1_agreement_pct"] == 100.0


def test_a_wrong_scale_is_refused(digits_int8):
    proto = _copy(digits_int8[0])
    q, dq = _activation_qdq(proto)
    g = Graph(proto)
    for node in (q, dq):
        _set_const(proto, node.input[1], g.const(node.input[1]) * 4)
    report = _check(proto, digits_int8)
    assert not report.passed and "has no QuantizeLinear doing the same" in report.failures[0]
    assert not _check(proto, digits_int8, "loose").passed  # 4x coarser steps show in the outputs too


def test_a_missing_qdq_is_refused(digits_int8):
    proto = _copy(digits_int8[0])
    q, dq = _activation_qdq(proto)
    for node in proto.graph.node:
        node.input[:] = [q.input[0] if i == dq.output[0] else i for i in node.input]
    drop_unused(proto)
    report = _check(proto, digits_int8)
    assert not report.passed and "has no QuantizeLinear doing the same" in report.failures[0]


def test_a_wrong_per_channel_axis_is_refused(digits_int8):
    proto = _copy(digits_int8[0])
    g = Graph(proto)

    def weight_qdq(conv):  # initializer -> QuantizeLinear -> DequantizeLinear -> Conv
        dq = g.producer[conv.input[1]]
        return g.producer[dq.input[0]], dq

    square = [conv for conv in g.nodes if conv.op_type == "Conv" and conv.input[1] in g.producer
              and (dims := g.initializers[weight_qdq(conv)[0].input[0]].dims)[0] == dims[1]]
    for node in weight_qdq(square[0]):
        for attr in node.attribute:
            if attr.name == "axis":
                attr.i = 1
    report = _check(proto, digits_int8)
    assert not report.passed and "axis 0" in report.failures[0] and "no QuantizeLinear" in report.failures[0]


def test_a_misplaced_qdq_is_refused(digits_int8):
    """The shortcut's Q/DQ moved onto the conv branch of its residual Add: scales as before, placement wrong."""
    proto = _copy(digits_int8[0])
    g = Graph(proto)
    add = next(n for n in g.nodes if n.op_type == "Add" and any(g.op_of(i) == DEQUANTIZE for i in n.input))
    shortcut = next(i for i in add.input if g.op_of(i) == DEQUANTIZE)
    branch = next(i for i in add.input if i != shortcut)
    q = g.producer[g.producer[shortcut].input[0]]
    moved = onnx.helper.make_node(QUANTIZE, [branch, *q.input[1:]], ["moved_q"], name="moved_q")
    moved_dq = onnx.helper.make_node(DEQUANTIZE, ["moved_q", *g.producer[shortcut].input[1:]], ["moved_dq"],
                                     name="moved_dq")
    nodes = []
    for node in proto.graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        if node.name == add.name and node.output == add.output:
            copy.input[:] = ["moved_dq", q.input[0]]
            nodes += [moved, moved_dq]
        nodes.append(copy)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    report = _check(proto, digits_int8)
    assert not report.passed and "does what no quantizer of the model does" in report.failures[0]


def test_another_calibration_of_the_same_model_is_refused(digits_int8, tmp_path):
    """A file from a different calibration (a cache mix-up) is as close to FP32, but not the model we meant."""
    other = export_variant(resolve_model("digits-resnet"), "int8", tmp_path / "max.onnx",
                           QuantConfig(mode="selective", calib="max", calib_batches=2).to_dict())
    assert not _check(onnx.load(other), digits_int8).passed


def test_outputs_of_another_file_are_refused_even_when_loose(digits_int8, monkeypatch, tmp_path):
    spec = resolve_model("digits-resnet")
    monkeypatch.setattr("harness.export.onnx_export.run_onnx_outputs",
                        lambda m, x: [np.zeros((len(x), 10), np.float32)])
    for precision, quant in (("fp32", None), ("fp16", None), ("int8", QUANT)):
        out = tmp_path / f"{precision}.onnx"
        with pytest.raises(HarnessError, match="failed the loose export check.*not kept"):
            export_variant(spec, precision, out, quant, calib_dir=tmp_path / "calib", verify="loose")
        assert not out.exists() and not verify_sidecar(out).exists()


def test_verify_off_keeps_the_file_unchecked(monkeypatch, tmp_path, run_cli):
    monkeypatch.setattr("harness.export.onnx_export.run_onnx_outputs",
                        lambda m, x: pytest.fail("--verify off runs nothing"))
    result = run_cli("export", "--precision", "fp16", "--verify", "off", "-o", tmp_path / "h.onnx")
    assert result.exit_code == 0 and "not checked" in result.output
    assert json.loads(verify_sidecar(tmp_path / "h.onnx").read_text())["level"] == "off"


def test_mcnemar_counts_only_the_answers_that_differ():
    same = np.array([True] * 30 + [False] * 2)
    assert mcnemar_p(same, same) == 1.0
    worse = same.copy()
    worse[:8] = False  # the file lost 8 answers fake-quant got right, won none
    assert mcnemar_p(worse, same) == pytest.approx(0.5**8)
    assert mcnemar_p(same, worse) == 1.0


# --- realistic activations: BatchNorm statistics recomputed on seeded inputs, as trained weights behave ---


def _realistic_weights(name: str, path) -> str:
    model = recompute_batchnorm(load_model(resolve_model(name)), (3, 224, 224))
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.mark.parametrize("name,mode", [("resnet50", "naive"), ("mobilenet_v2", "selective")])
def test_deep_networks_at_224_export_int8(name, mode, tmp_path):
    spec = resolve_model(name, _realistic_weights(name, tmp_path / f"{name}.pt"))
    cfg = QuantConfig(mode=mode, calib="entropy", calib_batches=1, calib_batch_size=8).to_dict()
    logged = []
    path = export_variant(spec, "int8", tmp_path / "onnx" / f"{name}.onnx", cfg, log=logged.append)
    kept = json.loads(verify_sidecar(path).read_text())
    assert kept["passed"] and kept["degenerate"] is None and kept["quantizers_checked"] > 50
    assert abs(kept["sqnr_db"] - kept["fake_quant_sqnr_db"]) < 1.0
    assert any("strict check on 32 digits inputs" in line for line in logged)


# --- degenerate models are flagged, not scored ---


CONSTANT_MODEL = """
import torch


def build():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 10))
    with torch.no_grad():
        model[4].weight.zero_()  # the output is the bias, whatever the input
    return model
"""


@pytest.mark.degenerate
def test_a_constant_head_does_not_blind_the_check_it_judges_the_features(run_cli, tmp_path, monkeypatch):
    (tmp_path / "constmodel.py").write_text(CONSTANT_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = ("--model", "constmodel:build", "--input-shape", "3x16x16")
    result = run_cli("export", *model, "-o", tmp_path / "c.onnx")
    assert result.exit_code == 0, result.output
    assert "judged on" in result.output and "features before the head" in result.output
    kept = json.loads(verify_sidecar(tmp_path / "c.onnx").read_text())
    assert kept["degenerate"] is None and kept["judged_on"] and kept["sqnr_db"] > 60  # scored, on live features
    engine = run_cli("build-engine", *model).stdout.strip()  # the path alone on stdout
    result = run_cli("eval", engine, "--limit", "64", "--json", tmp_path / "e.json")
    assert result.exit_code == 0, result.output
    assert "outputs are degenerate" in result.output and "not scored" in result.output
    scored = json.loads((tmp_path / "e.json").read_text())
    assert scored["reference_degenerate"] and scored["sqnr_db"] is None and scored["top1_agreement"] is None


@pytest.mark.degenerate
def test_a_wrong_file_behind_a_constant_head_is_refused(tmp_path, monkeypatch):
    """The head hides everything before it (its weights are 0): only the features can show the file is wrong."""
    (tmp_path / "constmodel.py").write_text(CONSTANT_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = resolve_model("constmodel:build", input_shape="3x16x16")
    good = onnx.load(export_variant(spec, "fp32", tmp_path / "c.onnx"))
    bad = _copy(good)
    conv = next(t for t in bad.graph.initializer if len(t.dims) == 4)
    _set_const(bad, conv.name, numpy_helper.to_array(conv) * 1.5)  # one convolution's weights x1.5
    from harness.export.variants import head_features

    x, _ = resolve_dataset("synthetic", spec).take("val", 32)
    float_model = load_model(spec)
    with torch.no_grad():
        fp32 = float_model(torch.from_numpy(x)).numpy()
    features = head_features(bad, float_model, None, x)
    verdict = check_file("fp32", bad, x, fp32, "strict", features=features)
    assert not verdict.passed and "SQNR" in verdict.failures[0] and verdict.judged_on
    assert check_file("fp32", good, x, fp32, "strict", features=head_features(good, float_model, None, x)).passed
