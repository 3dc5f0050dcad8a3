"""Each TensorRT-readiness hazard built into a small ONNX by hand, and a clean graph that has none."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.quantize.inspect_onnx import check

C = 4


def _const(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


class Builder:
    """x (1x4x8x8) -> nodes; every Q/DQ gets scale/zero-point initializers of its own."""

    def __init__(self):
        self.nodes, self.inits, self.n = [], [_const("w", np.ones((C, C, 1, 1)))], 0

    def name(self, stem):
        self.n += 1
        return f"{stem}{self.n}"

    def qdq(self, x, scale=0.1, zero=0, scale_input=None):
        s, z, q, d = self.name("s"), self.name("z"), self.name("q"), self.name("dq")
        self.inits += [_const(s, scale), _const(z, zero, np.int8)]
        self.nodes += [helper.make_node("QuantizeLinear", [x, scale_input or s, z], [q], name=self.name("Q")),
                       helper.make_node("DequantizeLinear", [q, scale_input or s, z], [d], name=self.name("DQ"))]
        return d

    def op(self, op, inputs, name=None, **attrs):
        out = self.name("t")
        self.nodes.append(helper.make_node(op, inputs, [out], name=name or self.name(op), **attrs))
        return out

    def conv(self, x):
        return self.op("Conv", [x, self.qdq("w")])

    def model(self, out, extra_inputs=()):
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, 8, 8]), *extra_inputs]
        outputs = [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, None, 8, 8])]
        graph = helper.make_graph(self.nodes, "g", inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
        onnx.checker.check_model(model)
        return model


def residual(shortcut_quantized=True, branch_quantized=False):
    b = Builder()
    xq = b.qdq("x")
    branch = b.op("Relu", [b.conv(b.qdq(b.op("Relu", [b.conv(xq)])))])
    branch = b.qdq(branch) if branch_quantized else branch
    return b.model(b.op("Add", [branch, xq if shortcut_quantized else "x"], name="res_add"))


def test_residual_add_with_quantized_shortcut_is_clean():
    r = check(residual())
    assert r.residual_quantized == ["res_add"] and not r.residual_float
    assert len(r.weighted_quantized) == 2 and r.hazard_count == 0


def test_unquantized_shortcut_is_a_hazard():
    r = check(residual(shortcut_quantized=False))
    assert r.residual_float == ["res_add"]
    assert r.hazards["unquantized_shortcut"] == ["res_add"]


def test_quantized_conv_branch_input_is_a_hazard():
    r = check(residual(branch_quantized=True))
    assert r.hazards["quantized_branch"] == ["res_add"]
    assert not r.hazards["unquantized_shortcut"]


@pytest.mark.parametrize("quantized", [(), (1,), (0, 1)], ids=["float", "shortcut", "both"])
def test_add_after_a_linear_branch_is_never_a_hazard(quantized):
    """ConvNeXt's block: Conv -> Transpose -> MatMul (Linear) -> Transpose -> layer-scale Mul -> Add. No Conv+Add
    fusion exists there, so a float stream (harness), a quantized shortcut or both inputs quantized (Model
    Optimizer's choice) are all fine; the Add is reported as not after a conv."""
    b = Builder()
    b.inits += [_const("wl", np.ones((C, C))), _const("ls", np.full((1, C, 1, 1), 0.5))]
    xq = b.qdq("x")
    nhwc = b.op("Transpose", [b.conv(xq)], perm=[0, 2, 3, 1])
    linear = b.op("MatMul", [b.qdq(nhwc), b.qdq("wl")])
    branch = b.op("Mul", [b.op("Transpose", [linear], perm=[0, 3, 1, 2]), "ls"])
    sides = [b.qdq(t) if i in quantized else t for i, t in enumerate([branch, "x"])]
    r = check(b.model(b.conv(b.qdq(b.op("Add", sides, name="block")))))
    assert r.residual_not_conv == ["block"] and r.hazard_count == 0


@pytest.mark.parametrize("quantized", [None, 0, 1, (0, 1)])
def test_add_of_two_equally_deep_branches_needs_exactly_one_quantized_input(quantized):
    """conv3x3(x) + conv1x1(x) feeding a quantized conv: a tie, fine with either input quantized, not both."""
    b = Builder()
    xq = b.qdq("x")
    sides = [b.conv(xq), b.conv(xq)]
    chosen = () if quantized is None else quantized if isinstance(quantized, tuple) else (quantized,)
    sides = [b.qdq(t) if i in chosen else t for i, t in enumerate(sides)]
    r = check(b.model(b.conv(b.qdq(b.op("Add", sides, name="tie")))))
    assert (r.residual_quantized if chosen else r.residual_float) == ["tie"]
    assert r.hazards["unquantized_shortcut"] == (["tie"] if not chosen else [])
    assert r.hazards["quantized_branch"] == (["tie"] if len(chosen) == 2 else [])


def test_add_of_two_plain_tensors_is_not_a_residual():
    b = Builder()
    r = check(b.model(b.op("Add", [b.op("Relu", ["x"]), b.op("Sigmoid", ["x"])])))
    assert not r.residual_quantized and not r.residual_float and r.hazard_count == 0


@pytest.mark.parametrize("scales, hazard", [((0.1, 0.1), False), ((0.1, 0.2), True)])
def test_concat_inputs_with_different_scales(scales, hazard):
    b = Builder()
    a, c = b.qdq(b.conv(b.qdq("x")), scales[0]), b.qdq(b.op("Relu", ["x"]), scales[1])
    r = check(b.model(b.op("Concat", [a, c], name="cat", axis=1)))
    assert r.hazards["concat_scales"] == (["cat"] if hazard else [])


def test_qdq_between_pad_and_conv():
    b = Builder()
    padded = b.op("Pad", ["x", "pads"])
    b.inits.append(_const("pads", [0, 0, 1, 1, 0, 0, 1, 1], np.int64))
    r = check(b.model(b.conv(b.qdq(padded))))
    assert len(r.hazards["pad_qdq_conv"]) == 1


def test_zero_and_missing_scales_and_nonzero_zero_points():
    b = Builder()
    t = b.qdq("x", scale=0.0)
    t = b.qdq(t, zero=3)
    t = b.qdq(t, scale_input="runtime_scale")
    model = b.model(b.conv(t), [helper.make_tensor_value_info("runtime_scale", TensorProto.FLOAT, [])])
    r = check(model)
    assert len(r.hazards["bad_scale"]) == 4  # Q and DQ of the zero scale, Q and DQ of the non-constant one
    assert len(r.hazards["zero_point"]) == 2


def test_inspect_command_strict_exit_code(run_cli, tmp_path):
    clean, bad = tmp_path / "clean.onnx", tmp_path / "bad.onnx"
    onnx.save(residual(), clean)
    onnx.save(residual(shortcut_quantized=False), bad)
    ok = run_cli("inspect", clean, "--strict", "--json", tmp_path / "r.json")
    assert ok.exit_code == 0 and "residual Adds with a quantized shortcut" in ok.output
    failed = run_cli("inspect", bad, "--strict")
    assert failed.exit_code == 1 and "HAZARD" in failed.output
    assert run_cli("inspect", bad).exit_code == 0  # without --strict it only reports
    missing = run_cli("inspect", tmp_path / "nope.onnx")
    assert missing.exit_code == 2 and "no such file" in missing.output
