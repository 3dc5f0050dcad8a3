"""The built-in case where naive INT8 hurts (an outlier channel, max calibration): debug layers names the culprit,
debug qdq finds the one layer to leave in float, and the skip list it writes restores accuracy."""

import json

import numpy as np
import onnx
import pytest
import torch
from test_cli_errors import assert_one_line_error

from harness.data.datasets import resolve_dataset
from harness.debug.demo import OUTLIER_LAYER, outlier_state_dict
from harness.models.registry import load_model, resolve_model

NAIVE_MAX = ("--mode", "naive", "--calib", "max")


@pytest.fixture(scope="module")
def outlier(tmp_path_factory):
    """(weights file, engines dir) shared by the module: calibration and exports happen once."""
    root = tmp_path_factory.mktemp("outlier")
    weights = root / "digits-outlier.pt"
    torch.save(outlier_state_dict(), weights)
    return weights, root / "engines"


def test_outlier_weights_compute_what_the_bundled_ones_do():
    spec = resolve_model("digits-resnet")
    x, _ = resolve_dataset("digits", spec).take("val", 64)
    model, bundled = load_model(spec), load_model(spec)
    model.load_state_dict(outlier_state_dict())
    with torch.no_grad():
        np.testing.assert_allclose(model(torch.from_numpy(x)).numpy(), bundled(torch.from_numpy(x)).numpy(),
                                   atol=1e-3)


def test_debug_layers_names_the_culprit(run_cli, outlier, tmp_path):
    weights, engines = outlier
    out = tmp_path / "layers.json"
    result = run_cli("debug", "layers", "--weights", weights, *NAIVE_MAX, "--engines-dir", engines, "--limit", 32,
                     "--json", out, "--plot", tmp_path / "sqnr.png")
    assert result.exit_code == 0, result.output
    table = json.loads(out.read_text())
    assert table["first_below"] == table["largest_drop"] == f"{OUTLIER_LAYER} (Conv)"
    assert f"first layer below 20 dB: {OUTLIER_LAYER} (Conv)" in result.output
    rows = table["layers"]
    culprit = [r["layer"] for r in rows].index(f"{OUTLIER_LAYER} (Conv)")
    assert all(r["sqnr_db"] > 25 for r in rows[:culprit]) and rows[culprit]["sqnr_db"] < 5
    assert len(rows) == 27 and not any(r["note"] for r in rows)  # every layer matched across the two files
    assert (tmp_path / "sqnr.png").read_bytes()[:4] == b"\x89PNG"


def _files(outlier):
    """The float and naive/max INT8 ONNX of the outlier model, as debug layers exported them (cached)."""
    from harness.build import onnx_for
    from harness.quantize.config import QuantConfig

    weights, engines = outlier
    spec = resolve_model("digits-resnet", str(weights))
    quant = QuantConfig(mode="naive", calib="max").to_dict()
    return onnx_for(spec, "fp32", engines), onnx_for(spec, "int8", engines, quant)


def test_debug_layers_survives_renaming_and_says_what_has_no_counterpart(run_cli, outlier, tmp_path):
    weights, engines = outlier
    fp32, int8 = _files(outlier)
    model = onnx.load(int8)
    for node in model.graph.node:
        node.name = ""  # another exporter: no node names, so layers match by position per operator
    extra = onnx.helper.make_node("Relu", ["input"], ["extra"], name="/extra/Relu")
    model.graph.node.insert(0, extra)
    model.graph.output.append(onnx.helper.make_tensor_value_info("extra", onnx.TensorProto.FLOAT, None))
    renamed = tmp_path / "renamed.onnx"
    onnx.save(model, renamed)
    out = tmp_path / "layers.json"
    result = run_cli("debug", "layers", fp32, renamed, "--weights", weights, "--limit", 32, "--json", out)
    assert result.exit_code == 0, result.output
    table = json.loads(out.read_text())
    assert table["first_below"] == f"{OUTLIER_LAYER} (Conv)"
    notes = {r["layer"]: r["note"] for r in table["layers"] if r["note"]}
    assert notes == {"extra (Relu)": "no counterpart in the float file"}


def test_debug_qdq_finds_the_one_layer_and_resumes(run_cli, outlier, tmp_path):
    weights, engines = outlier
    skip, out = tmp_path / "skip.txt", tmp_path / "qdq.json"
    args = ("debug", "qdq", "--weights", weights, *NAIVE_MAX, "--engines-dir", engines, "--limit", 100,
            "--max-top1-drop", 1, "-o", skip, "--json", out)
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    steps = report["steps"]
    assert steps[0]["floated"] == [] and steps[0]["top1_drop"] > 20 and not steps[0]["passed"]  # naive INT8 hurts
    assert report["fallback"] == [OUTLIER_LAYER] and steps[-1]["passed"] and steps[-1]["top1_drop"] <= 1
    assert report["order"][0] == OUTLIER_LAYER  # the sensitivity ranking put it first
    assert report["evaluations"] == len(steps) <= 6
    assert [line.split("#")[0].strip() for line in skip.read_text().splitlines()[1:]] == [OUTLIER_LAYER]

    # resumable: steps lost to an interruption are measured again, the rest come from the cache
    folder = next((engines / "debug-qdq").iterdir())
    lost = sorted(p for p in folder.glob("*.json") if p.name != "order.json")[:2]
    for path in lost:
        path.unlink()
    again = run_cli(*args)
    assert again.exit_code == 0 and json.loads(out.read_text())["measured"] == 2, again.output
    assert f"{len(steps) - 2} from the cache" in again.output

    # the skip list reproduces the step's fallback through the ordinary pipeline
    built = run_cli("build-engine", "--weights", weights, "--precision", "int8", *NAIVE_MAX, "--skip-from", skip,
                    "--engines-dir", engines)
    assert built.exit_code == 0, built.output
    artifact = built.output.strip().split()[-1]
    evaluated = run_cli("eval", artifact, "--limit", 100, "--json", tmp_path / "eval.json")
    assert evaluated.exit_code == 0 and json.loads((tmp_path / "eval.json").read_text())["top1_delta"] >= -1


def test_debug_qdq_check_command_and_unreachable_target(run_cli, outlier, tmp_path):
    weights, engines = outlier
    common = ("debug", "qdq", "--weights", weights, *NAIVE_MAX, "--engines-dir", engines, "--limit", 100,
              "--json", tmp_path / "q.json")
    # the command sees the step: here it passes any step with the ranking's first layer in float
    check = f'case ",$HARNESS_SKIP," in *,{OUTLIER_LAYER},*) exit 0;; esac; exit 3'
    found = run_cli(*common, "--check", check, "-o", tmp_path / "s.txt")
    assert found.exit_code == 0, found.output
    report = json.loads((tmp_path / "q.json").read_text())
    assert report["fallback"] == [OUTLIER_LAYER] and report["steps"][0]["checks"][check] == 3
    never = run_cli(*common, "--check", "exit 1", "-o", tmp_path / "n.txt")
    assert never.exit_code == 1 and "miss the target" in never.output
    assert len(json.loads((tmp_path / "q.json").read_text())["steps"]) == 2  # none, then all in float


def test_debug_bad_input_is_one_line(run_cli, outlier, tmp_path):
    weights, engines = outlier
    fp32, _ = _files(outlier)
    assert_one_line_error(run_cli("debug", "qdq", *NAIVE_MAX, "--engines-dir", engines), "give a target")
    assert_one_line_error(run_cli("debug", "layers", fp32), "FLOAT.onnx QUANT.onnx")
    assert_one_line_error(run_cli("debug", "layers", fp32, fp32, "--model", "resnet18"), "takes Nx1x32x32",
                          "resnet18")
    assert_one_line_error(run_cli("debug", "qdq", "--precision", "fp32", "--min-sqnr", 30), "--precision")


@pytest.mark.parametrize("version", ["10.9.0", "11.0.0"])
def test_debug_layers_on_tensorrt_reads_debug_tensors(run_cli, outlier, tmp_path, fake_gpu, version):
    """Through the TensorRT test double: layer outputs marked as debug tensors (the engine's I/O unchanged) and
    read by a listener give the table the CPU reference gives."""
    gpu, trt = fake_gpu(version)
    weights, engines = outlier
    fp32, int8 = _files(outlier)
    cpu_json, trt_json = tmp_path / "cpu.json", tmp_path / "trt.json"
    common = ("debug", "layers", fp32, int8, "--weights", weights, "--limit", 16, "--engines-dir", tmp_path)
    assert run_cli(*common, "--json", cpu_json).exit_code == 0
    result = run_cli(*common, "--backend", "tensorrt", "--json", trt_json)
    assert result.exit_code == 0, result.output
    cpu, on_trt = json.loads(cpu_json.read_text()), json.loads(trt_json.read_text())
    assert on_trt["first_below"] == f"{OUTLIER_LAYER} (Conv)"
    assert [r["sqnr_db"] for r in on_trt["layers"]] == pytest.approx([r["sqnr_db"] for r in cpu["layers"]], abs=0.01)
    marked = [c[1] for c in gpu.calls if c[0] == "mark_debug"]
    assert len(marked) == 27 and all(r["quant_tensor"] in marked for r in on_trt["layers"])
    engine_file = next((tmp_path / "debug-layers").glob("*.engine"))
    engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(engine_file.read_bytes())
    assert [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)] == ["input", "logits"]


def test_skip_list_names_a_block_alone_when_its_shortcut_quantizer_is_meant(tmp_path):
    from harness.debug.qdq_bisect import exact_pattern, skip_file_text
    from harness.quantize.config import read_skip_file
    from harness.quantize.replace import resolve_skip

    layers = dict.fromkeys(["layer2", "layer2.conv1", "layer2.conv2", "layer2.downsample.0", "fc"])
    assert exact_pattern("layer2.conv2", layers) == "layer2.conv2"
    assert resolve_skip(layers, [exact_pattern("layer2", layers)]) == ["layer2"]
    text = skip_file_text("header", ["layer2", "fc"], layers)
    path = tmp_path / "skip.txt"
    path.write_text(text)
    assert resolve_skip(layers, read_skip_file(path)) == ["layer2", "fc"]


@pytest.mark.gpu(tensorrt=True)
def test_on_a_real_gpu_tensorrt_debug_tensors_and_fallback(run_cli, outlier, tmp_path):
    """Real TensorRT: the divergence shows in layer2's block from debug tensors (tensors TensorRT fused away are
    listed as not exposed), and the fallback search on TensorRT engines finds the outlier layer."""
    weights, engines = outlier
    fp32, int8 = _files(outlier)
    out = tmp_path / "layers.json"
    result = run_cli("debug", "layers", fp32, int8, "--weights", weights, "--limit", 32, "--backend", "tensorrt",
                     "--engines-dir", tmp_path / "trt", "--json", out)
    assert result.exit_code == 0, result.output
    table = json.loads(out.read_text())
    assert table["first_below"].startswith("layer2")
    exposed = [r for r in table["layers"] if r["sqnr_db"] is not None]
    assert len(exposed) >= 10 and all(r["sqnr_db"] > 20 for r in exposed if r["layer"].startswith("layer1"))
    qdq = tmp_path / "qdq.json"
    found = run_cli("debug", "qdq", "--weights", weights, *NAIVE_MAX, "--engines-dir", tmp_path / "trt", "--limit",
                    100, "--max-top1-drop", 1, "--backend", "tensorrt", "-o", tmp_path / "skip.txt", "--json", qdq)
    assert found.exit_code == 0, found.output
    assert len(json.loads(qdq.read_text())["fallback"]) <= 2


def test_debug_qdq_on_a_quantized_onnx_alone(run_cli, outlier, tmp_path):
    """No quantization options, just the Q/DQ file (ModelOpt's, another tool's): its Q/DQ is removed in the file."""
    weights, engines = outlier
    _, int8 = _files(outlier)
    skip = tmp_path / "skip.txt"
    result = run_cli("debug", "qdq", int8, "--weights", weights, "--engines-dir", engines, "--limit", 100,
                     "--max-top1-drop", 1, "-o", skip, "--json", tmp_path / "q.json")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "q.json").read_text())["fallback"] == [OUTLIER_LAYER]
    fixed = skip.with_suffix(".onnx")
    checked = run_cli("compare", "torch:digits-resnet", fixed, "--weights", weights, "--dataset", "digits",
                      "--limit", 100, "--min-top1-agreement", 99)
    assert checked.exit_code == 0, checked.output


def test_onnx_fallback_takes_the_shortcut_qdq_with_the_branch_conv(engines_dir):
    """Selective placement quantizes residual shortcuts for the Conv+Add INT8 fusion; floating the branch's last
    conv removes its Add's shortcut Q/DQ too, leaves the other Adds alone and adds no TensorRT hazard."""
    from harness.build import onnx_for
    from harness.debug.qdq_bisect import onnx_fallback, onnx_layers
    from harness.quantize.config import QuantConfig
    from harness.quantize.inspect_onnx import check
    from harness.quantize.onnx_graph import Graph

    path = onnx_for(resolve_model("digits-resnet"), "int8", engines_dir, QuantConfig(calib="max").to_dict())
    model = onnx.load(path)

    def quantized_adds(m):
        g = Graph(m)
        return {n.name for n in g.nodes if n.op_type == "Add" and any(g.quantized(i) for i in n.input)}

    before = quantized_adds(model)
    assert "/layer1.0/Add" in before
    fell = onnx_fallback(model, ["layer1.0.conv2"])
    assert quantized_adds(fell) == before - {"/layer1.0/Add"}
    assert "layer1.0.conv2" not in onnx_layers(fell) and "layer1.0.conv1" in onnx_layers(fell)
    assert check(fell).hazard_count == check(model).hazard_count == 0
    onnx.checker.check_model(fell)


def test_search_finds_the_needed_layers_in_few_evaluations():
    """Bisection over the ranking, then the pass that drops what is not needed: exactly the two layers the target
    needs, although the ranking put a harmless one between them, in far fewer evaluations than trying subsets."""
    from harness.debug.qdq_bisect import Search, Step

    order = [f"l{i}" for i in range(16)]
    needed = {"l0", "l2"}

    def measure(floated):
        return Step(list(floated), passed=needed <= set(floated))

    search = Search(order, measure)
    assert search.run() == ["l0", "l2"]
    assert len(search.steps) <= 8 and not search.steps[0].passed and search.steps[1].passed


def test_debug_layers_refuses_a_float_file_as_quant_like_debug_qdq(run_cli, outlier):
    """An FP32 file given as QUANT read every layer at inf dB and 'every layer at or above 20 dB'."""
    weights, _ = outlier
    fp32, _ = _files(outlier)
    for args in (("debug", "layers", fp32, fp32), ("debug", "qdq", fp32, "--min-sqnr", 20)):
        assert_one_line_error(run_cli(*args, "--weights", weights), f"{fp32}: no weighted layer reads a Q/DQ pair")


def test_debug_qdq_refuses_an_impossible_target_before_calibrating(run_cli, tmp_path):
    result = run_cli("debug", "qdq", *NAIVE_MAX, "--dataset", "synthetic", "--max-top1-drop", 1,
                     "--engines-dir", tmp_path / "engines")
    assert_one_line_error(result, "--max-top1-drop needs labels and dataset synthetic has none")
    assert "calibration" not in result.output and not (tmp_path / "engines" / "calib").exists()


def test_an_edited_debug_qdq_step_is_measured_again_not_used(run_cli, outlier, tmp_path):
    """The step cache has integrity records like every other cache: a step edited to pass is not a measurement."""
    weights, engines = outlier
    _, int8 = _files(outlier)
    args = ("debug", "qdq", int8, "--weights", weights, "--engines-dir", engines / "edited", "--limit", 50,
            "--min-top1-agreement", 99, "-o", tmp_path / "skip.txt", "--json", tmp_path / "q.json")
    assert run_cli(*args).exit_code == 0
    first = json.loads((tmp_path / "q.json").read_text())
    assert first["steps"][0]["floated"] == [] and not first["steps"][0]["passed"] and first["fallback"]
    folder = next((engines / "edited" / "debug-qdq").iterdir())
    step = next(p for p in folder.glob("*.json") if p.name != "order.json" and json.loads(p.read_text())["floated"]
                == [])
    step.write_text(json.dumps({**json.loads(step.read_text()), "top1_agreement": 100.0, "sqnr_db": 99.0}))
    again = run_cli(*args)
    assert again.exit_code == 0 and f"{step} does not match the hash recorded" in again.output, again.output
    second = json.loads((tmp_path / "q.json").read_text())
    assert second["fallback"] == first["fallback"] and second["measured"] == 1  # the edited step, measured again
    assert second["steps"][0]["top1_agreement"] == first["steps"][0]["top1_agreement"] < 99


@pytest.mark.parametrize("check, timeout, message", [
    ("no-such-command-xyz", 60, "the shell exited 127 (command not found)"),
    ("sleep 30", 1, "did not finish within 1 s; make it faster or raise --check-timeout"),
    ("kill -9 $$", 60, "was killed by signal SIGKILL"),
])
def test_a_check_that_cannot_give_a_verdict_stops_the_search_instead_of_failing_the_step(run_cli, outlier, tmp_path,
                                                                                         check, timeout, message):
    weights, engines = outlier
    _, int8 = _files(outlier)
    result = run_cli("debug", "qdq", int8, "--weights", weights, "--engines-dir", engines, "--limit", 50,
                     "--check", check, "--check-timeout", timeout, "-o", tmp_path / "skip.txt")
    assert_one_line_error(result, f"--check '{check}'" if " " in check else f"--check {check}", message)
    assert "waiting for --check" in result.output and "miss the target" not in result.output
    assert not (tmp_path / "skip.txt").exists()
