"""One rule for criteria: every criterion asked for is evaluated or refused up front (exit 2, naming why); one that
cannot be evaluated on the data fails (exit 1); no criterion is never a PASS."""

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from test_cli_errors import assert_one_line_error
from test_report_compare import frame, latencies, write_run

from harness.debug.compare import write_golden
from harness.report.compare import compare
from harness.report.merge import load_results

# --- numeric options: refused when the options are parsed, before any file is opened -------------------------

BAD_NUMBERS = [
    (("compare", "a.onnx", "b.onnx"), "--atol", "nan", "'nan' is not a finite number"),
    (("compare", "a.onnx", "b.onnx"), "--rtol", "inf", "'inf' is not a finite number"),
    (("compare", "a.onnx", "b.onnx"), "--atol", "logits=-1", "'logits=-1': '-1' is outside 0 <= x"),
    (("compare", "a.onnx", "b.onnx"), "--min-sqnr", "nan", "'nan' is not a finite number"),
    (("compare", "a.onnx", "b.onnx"), "--min-cosine", "2", "'2' is outside -1 <= x <= 1"),
    (("compare", "a.onnx", "b.onnx"), "--min-top1-agreement", "nan", "'nan' is not a finite number"),
    (("compare", "a.onnx", "b.onnx"), "--min-top1-agreement", "101", "'101' is outside 0 <= x <= 100 %"),
    (("debug", "layers", "a.onnx", "b.onnx"), "--min-sqnr", "-inf", "'-inf' is not a finite number"),
    (("debug", "qdq", "a.onnx"), "--max-top1-drop", "nan", "'nan' is not a finite number"),
    (("debug", "qdq", "a.onnx"), "--min-sqnr", "inf", "'inf' is not a finite number"),
    (("debug", "qdq", "a.onnx"), "--check-timeout", "0", "'0' is outside 0 < x s"),
    (("bench", "e.onnx"), "--duration", "inf", "'inf' is not a finite number"),
    (("bench", "e.onnx"), "--cv-warn", "nan", "'nan' is not a finite number"),
    (("quantize",), "--percentile", "nan", "'nan' is not a finite number"),
    (("report", "compare", "a", "b"), "--max-accuracy-drop", "inf", "'inf' is not a finite number"),
]


@pytest.mark.parametrize("command, option, value, message", BAD_NUMBERS, ids=lambda v: str(v))
def test_numeric_options_refuse_nan_infinity_and_out_of_range_at_parse_time(run_cli, command, option, value,
                                                                               message):
    result = run_cli(*command, option, value)
    assert result.exit_code == 2 and f"Invalid value for '{option}': {message}" in result.output, result.output
    assert "RuntimeWarning" not in result.output and "Traceback" not in result.output


# --- harness compare --------------------------------------------------------------------------------------------


@pytest.fixture
def scaled_onnx(digits_engine, tmp_path):
    """The FP32 digits ONNX with one convolution's weights x1.5: a wrong file that still runs."""
    model = onnx.load(digits_engine.artifact)
    conv = next(i for i in model.graph.initializer if numpy_helper.to_array(i).ndim == 4)
    conv.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(conv) * 1.5, conv.name))
    path = tmp_path / "scaled.onnx"
    onnx.save(model, path)
    return path


def test_compare_without_a_criterion_gives_figures_not_a_pass(run_cli, digits_engine, scaled_onnx, tmp_path):
    result = run_cli("compare", digits_engine.artifact, scaled_onnx, "--json", tmp_path / "c.json")
    assert result.exit_code == 0, result.output
    assert "PASS" not in result.output and "figures only, no criterion given" in result.output
    assert json.loads((tmp_path / "c.json").read_text())["criteria"] is None


def test_default_criteria_pass_the_right_file_and_fail_the_wrong_one(run_cli, digits_engine, scaled_onnx):
    right = run_cli("compare", "torch:digits-resnet", digits_engine.artifact, "--dataset", "digits", "--limit", 64,
                    "--criteria", "default")
    assert right.exit_code == 0, right.output
    assert "criteria: SQNR >= 40 dB, top-1 agreement >= 99.5 % (fp32 defaults where not given)" in right.output
    assert "  PASS" in right.output
    wrong = run_cli("compare", "torch:digits-resnet", scaled_onnx, "--dataset", "digits", "--limit", 64,
                    "--criteria", "default")
    assert wrong.exit_code == 1 and "FAIL: SQNR" in wrong.output and "< 40 dB" in wrong.output, wrong.output
    # a bound given beside the defaults replaces the default one
    mine = run_cli("compare", "torch:digits-resnet", scaled_onnx, "--dataset", "digits", "--limit", 64,
                   "--criteria", "default", "--min-sqnr", 5)
    assert "criteria: SQNR >= 5 dB, top-1 agreement >= 99.5 %" in mine.output


def test_default_criteria_take_the_less_precise_side(run_cli, digits_engine, engines_dir):
    from harness.backends.base import BuildOptions
    from harness.build import build_artifact
    from harness.models.registry import resolve_model
    from harness.quantize.config import QuantConfig

    quant = QuantConfig(calib="max", calib_batches=1, calib_batch_size=16).to_dict()
    int8, _ = build_artifact(resolve_model("digits-resnet"), "cpu", BuildOptions(precision="int8"), engines_dir,
                             quant)
    result = run_cli("compare", digits_engine.artifact, int8.artifact, "--dataset", "digits", "--limit", 64,
                     "--criteria", "default")
    assert result.exit_code == 0 and "(int8 defaults where not given)" in result.output, result.output
    noise = run_cli("compare", digits_engine.artifact, int8.artifact, "--criteria", "int8", "--limit", 8)
    assert "warning: the int8 defaults assume inputs like the data the model was calibrated on" in noise.output


def test_a_tolerance_for_an_output_that_does_not_exist_is_refused(run_cli, digits_engine):
    """A typo in --atol NAME=X used to drop the tolerance and pass."""
    for a in (digits_engine.artifact, "torch:digits-resnet"):
        result = run_cli("compare", a, digits_engine.artifact, "--atol", "logitz=0", "--limit", 4)
        assert_one_line_error(result, "--atol logitz=0: no output is named 'logitz' (the outputs: logits)")
    assert run_cli("compare", digits_engine.artifact, digits_engine.artifact, "--atol", "logits=0",
                   "--limit", 4).exit_code == 0


def test_a_criterion_on_no_inputs_fails(run_cli, digits_engine, tmp_path):
    empty = write_golden(tmp_path / "none.npz", np.zeros((0, 1, 32, 32), np.float32), {"kind": "file"})
    judged = run_cli("compare", "torch:digits-resnet", digits_engine.artifact, "--load-inputs", empty,
                     "--min-sqnr", 40)
    assert judged.exit_code == 1 and "no outputs to compare (0 inputs)" in judged.output, judged.output
    figures = run_cli("compare", "torch:digits-resnet", digits_engine.artifact, "--load-inputs", empty)
    assert figures.exit_code == 0, figures.output


def test_torch_source_takes_an_input_shape(run_cli, tmp_path, monkeypatch):
    """A user's model (or a torchvision one at another size) as the reference: --input-shape sizes it."""
    (tmp_path / "tinynet.py").write_text(
        "import torch\n\ndef build():\n    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),"
        " torch.nn.Flatten(), torch.nn.Linear(4, 5))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert run_cli("export", "--model", "tinynet:build", "--input-shape", "3x16x16", "-o", "t.onnx").exit_code == 0
    missing = run_cli("compare", "torch:tinynet:build", "t.onnx")
    assert_one_line_error(missing, "size torch:tinynet:build with --input-shape 3x16x16")
    sized = run_cli("compare", "torch:tinynet:build", "t.onnx", "--input-shape", "3x16x16", "--criteria", "default")
    assert sized.exit_code == 0 and "  PASS" in sized.output, sized.output
    assert_one_line_error(run_cli("compare", "t.onnx", "t.onnx", "--input-shape", "3x16x16"),
                          "--input-shape sizes a torch:MODEL source")


# --- harness report compare -----------------------------------------------------------------------------------


@pytest.mark.parametrize("current, verdict", [
    (frame().drop(columns=["top1_pct"]), "REGRESSION: accuracy (top1_pct missing in current) not evaluated"),
    (frame(top1=float("nan")), "REGRESSION: accuracy (top1_pct missing in current) not evaluated"),
    (frame(p50=float("nan")), "REGRESSION: latency (latency_p50_ms missing in current) not evaluated"),
])
def test_a_gate_criterion_the_data_cannot_answer_fails_the_cell(current, verdict):
    result = compare(frame(), current, max_latency_pct=5.0, max_drop_pp=0.2)
    assert result.table["verdict"].tolist() == [verdict] and result.regressions == 1
    if "accuracy" in verdict:  # --latency-only: accuracy is not asked for
        assert compare(frame(), current, 5.0, None).table["verdict"].tolist() == ["ok"]


@pytest.mark.parametrize("damage", ["no top1_pct column", "NaN in one cell", "NaN in every cell"])
def test_report_compare_fails_a_current_run_without_accuracy(run_cli, tmp_path, damage):
    rng = np.random.default_rng(0)
    base = write_run(tmp_path / "base", {1: latencies(rng), 8: latencies(rng)})
    table = load_results([base])
    if damage == "no top1_pct column":
        table = table.drop(columns=["top1_pct"])
    else:
        table.loc[table.index[:1 if damage == "NaN in one cell" else None], "top1_pct"] = np.nan
    table.to_csv(tmp_path / "cur.csv", index=False)
    result = run_cli("report", "compare", base, tmp_path / "cur.csv")
    cells = 1 if damage == "NaN in one cell" else 2
    assert result.exit_code == 1, result.output
    assert result.output.count("accuracy (top1_pct missing in current) not evaluated") == cells, result.output
    latency_only = run_cli("report", "compare", base, tmp_path / "cur.csv", "--latency-only")
    assert latency_only.exit_code == 0 and "(latency only)" in latency_only.output, latency_only.output


# --- the export check: a pass that says what it vouches for -------------------------------------------------

def test_a_passed_check_of_an_unusable_quantization_warns_and_names_debug_layers(run_cli, tmp_path):
    """The file is the quantized model, faithfully; the quantized model itself is far from FP32 (the outlier)."""
    from harness.debug.demo import outlier_state_dict

    torch.save(outlier_state_dict(), tmp_path / "outlier.pt")
    result = run_cli("export", "--weights", tmp_path / "outlier.pt", "--precision", "int8", "--mode", "naive",
                     "--calib", "max", "-o", tmp_path / "x.onnx")
    assert result.exit_code == 0, result.output
    assert "warning: the file passed the strict export check" in result.output
    assert "the quantized model itself is far from FP32" in result.output
    assert "harness debug layers" in result.output


def test_a_good_quantization_passes_without_the_warning_and_loose_failing_suggests_off_only(run_cli, tmp_path,
                                                                                             monkeypatch):
    from harness.export import variants

    good = run_cli("export", "--precision", "int8", "--calib", "max", "--calib-batches", 1, "-o", tmp_path / "g.onnx")
    assert good.exit_code == 0 and "far from FP32" not in good.output, good.output
    monkeypatch.setattr(variants, "_verified", lambda precision, *a: variants.Verification(
        a[-1], precision, failures=["SQNR against FP32 PyTorch 3.00 dB is below 40.0 dB"]))
    loose = run_cli("export", "--verify", "loose", "-o", tmp_path / "l.onnx")
    assert_one_line_error(loose, "failed the loose export check", "--verify off keeps (unchecked) such a file")
    assert "--verify loose" not in loose.output
    strict = run_cli("export", "-o", tmp_path / "s.onnx")
    assert_one_line_error(strict, "--verify loose or off keeps such a file")


def test_a_criterion_on_outputs_with_no_finite_value_fails(run_cli, digits_engine, tmp_path):
    """NaN inputs gave NaN on both sides, equal counts, and SQNR over nothing read as inf dB: a PASS."""
    nan = write_golden(tmp_path / "nan.npz", np.full((4, 1, 32, 32), np.nan, np.float32), {"kind": "file"})
    for criterion in (("--min-sqnr", 40), ("--criteria", "default"), ("--atol", 1)):
        result = run_cli("compare", "torch:digits-resnet", digits_engine.artifact, "--load-inputs", nan, *criterion)
        assert result.exit_code == 1 and "no finite values on both sides" in result.output, result.output
