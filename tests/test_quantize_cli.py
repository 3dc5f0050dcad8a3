"""quantize -> checkpoint -> build-engine/eval, sensitivity -> --skip-from, qat, and the options' errors."""

import json
import re
from pathlib import Path

import pytest

from harness.quantize.checkpoint import load

FAST = ("--calib-batches", 2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from click.testing import CliRunner

    from harness.cli import cli

    root = tmp_path_factory.mktemp("quant")
    out = root / "d.quant.pt"
    result = CliRunner().invoke(cli, ["quantize", "--mode", "selective", "--calib", "percentile", *map(str, FAST),
                                      "--engines-dir", str(root / "engines"), "-o", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_quantize_writes_config_and_every_amax(checkpoint):
    path, output = checkpoint
    ckpt = load(path)
    assert ckpt["config"]["mode"] == "selective" and ckpt["config"]["calib"] == "percentile"
    assert "layer1.0.residual_quantizer._amax" not in ckpt["amax"]  # names are quantizers, values their amax
    assert ckpt["amax"]["layer1.0.residual_quantizer"].numel() == 1
    assert ckpt["amax"]["layer3.conv2._weight_quantizer"].shape == (64, 1, 1, 1)
    assert ckpt["skipped"] == ["conv1", "fc"] and "head" in ckpt["reasons"]["fc"]
    assert re.search(r"residual Adds quantized on the shortcut +3", output)  # not the last: it feeds float fc
    assert re.search(r"conv1 +INT8-unfriendly", output) and re.search(r"fc +classifier head", output)


def test_quantize_head_flag_quantizes_the_classifier(run_cli, tmp_path):
    result = run_cli("quantize", "--calib", "max", *FAST, "--quantize-head", "--engines-dir", tmp_path / "e",
                     "-o", tmp_path / "h.pt")
    assert result.exit_code == 0, result.output
    ckpt = load(tmp_path / "h.pt")
    assert ckpt["config"]["quantize_head"] and ckpt["skipped"] == ["conv1"] and "fc._input_quantizer" in ckpt["amax"]


def test_checkpoint_builds_and_evaluates_with_top1_change(run_cli, checkpoint, tmp_path):
    path, _ = checkpoint
    built = run_cli("build-engine", "--precision", "int8", "--quant", path, "--engines-dir", tmp_path / "e")
    assert built.exit_code == 0, built.output
    artifact = built.output.strip().split()[-1]
    result = run_cli("eval", artifact, "--json", tmp_path / "e.json")
    got = json.loads((tmp_path / "e.json").read_text())
    assert result.exit_code == 0 and "top1 change vs fp32" in result.output
    assert got["precision"] == "int8" and got["quant"]["checkpoint"] == str(path.resolve())
    assert got["reference_top1"] == 99.5 and abs(got["top1_delta"]) <= 0.5 and got["sqnr_db"] > 15
    again = run_cli("build-engine", "--precision", "int8", "--quant", path, "--engines-dir", tmp_path / "e")
    assert "cache hit" in again.output
    built = run_cli("build-engine", "--precision", "int8", "--quant", path)  # default engines/
    assert Path(built.stdout.strip()).is_file()  # stdout is the path alone: ENGINE=$(harness build-engine ...)
    direct = run_cli("eval", path, "--json", tmp_path / "c.json")  # the checkpoint itself: its int8 cpu engine
    assert direct.exit_code == 0, direct.output
    evaluated = json.loads((tmp_path / "c.json").read_text())
    assert evaluated["top1"] == got["top1"]
    assert evaluated["engine"] == built.stdout.strip()  # the artifact build-engine made, not a second one


def test_sensitivity_skip_list_feeds_hybrid_mode(run_cli, tmp_path):
    skip = tmp_path / "skip.txt"
    result = run_cli("sensitivity", "--mode", "naive", "--calib", "max", *FAST, "--limit", 32, "--top", 2,
                     "-o", skip, "--engines-dir", tmp_path / "e", "--json", tmp_path / "s.json")
    assert result.exit_code == 0, result.output
    layers = [line.split("#")[0].strip() for line in skip.read_text().splitlines() if not line.startswith("#")]
    table = json.loads((tmp_path / "s.json").read_text())["layers"]
    assert len(layers) == 2 and layers == [r["layer"] for r in table[:2]]
    assert table[0]["gain"] >= table[-1]["gain"]
    quant = run_cli("quantize", "--mode", "hybrid", "--calib", "max", *FAST, "--skip-from", skip,
                    "--engines-dir", tmp_path / "e", "-o", tmp_path / "h.pt")
    assert quant.exit_code == 0, quant.output
    assert load(tmp_path / "h.pt")["skipped"] == layers


def test_qat_reports_before_and_after(run_cli, checkpoint, tmp_path):
    path, _ = checkpoint
    result = run_cli("qat", "--quant", path, "--epochs", 1, "--limit", 128, "-o", tmp_path / "qat.pt")
    assert result.exit_code == 0, result.output
    extra = load(tmp_path / "qat.pt")["extra"]["qat"]
    assert extra["epochs"] == 1 and extra["lr"] == pytest.approx(5e-4)
    assert extra["top1_after"] >= extra["fp32_top1"] - 1.0 and "qat top1 %" in result.output
    built = run_cli("export", "--precision", "int8", "--quant", tmp_path / "qat.pt", "-o", tmp_path / "q.onnx")
    assert built.exit_code == 0, built.output  # the fine-tuned weights travel in the checkpoint


@pytest.mark.parametrize("args, message", [
    (("export", "--precision", "fp16", "--mode", "naive", "-o", "x.onnx"), "float precision"),
    (("export", "--precision", "int8", "--quant", "nope.pt", "-o", "x.onnx"), "no such file"),
    (("build-engine", "--precision", "int8", "--quant", "{ckpt}", "--calib", "max"), "already holds"),
    (("quantize", "--skip-from", "missing.txt"), "--skip-from missing.txt"),
    (("quantize", "--override", "fc"), "--override 'fc'"),
    (("quantize", "--override", "nolayer*=max", *FAST), "--override 'nolayer*' matches no quantized layer"),
    (("quantize", "--skip", "*", *FAST), "leaves every weighted layer in float"),
    (("export", "--model", "resnet18", "--precision", "int8", "--quant", "{ckpt}", "-o", "x.onnx"),
     "was made for digits-resnet"),
])
def test_bad_quantization_options_are_one_line_errors(run_cli, checkpoint, args, message):
    result = run_cli(*[str(checkpoint[0]) if a == "{ckpt}" else a for a in args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_calibration_says_what_it_read_when_the_split_is_smaller_than_asked(run_cli, tmp_path):
    result = run_cli("quantize", "--calib", "max", "--calib-batches", 8, "--calib-batch-size", 32,
                     "--engines-dir", tmp_path / "e", "-o", tmp_path / "q.pt")
    assert result.exit_code == 0, result.output
    assert "digits: 200 calib images, 7 batch(es) of up to 32; asked for 8 x 32 = 256, the calib split has 200" in (
        result.output)
