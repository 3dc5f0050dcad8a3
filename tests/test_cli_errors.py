"""Every documented bad input: one last line naming the problem and the fix, exit code 2, no traceback."""

import pytest


def assert_one_line_error(result, *needles, catch_all=False):
    """`catch_all`: the line is the generic one for an unexpected exception (type, message, 'rerun with --debug')."""
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and result.output.rstrip().endswith(errors[0]), result.output
    assert "Traceback" not in result.output and ("rerun with --debug" in errors[0]) == catch_all
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.mark.parametrize(
    "args, needles",
    [
        (["build-engine", "--model", "resnet9000"], ["unknown model 'resnet9000'", "digits-resnet"]),
        (["build-engine", "--model", "nosuchpkg.mod:make"], ["cannot import nosuchpkg.mod"]),
        (["build-engine", "--weights", "missing.pt"], ["--weights missing.pt", "no such file"]),
        (["build-engine", "--model", "resnet18", "--input-shape", "3xfoo"], ["--input-shape", "3x224x224"]),
        (["bench", "engines/none.onnx"], ["engines/none.onnx", "build-engine"]),
        (["eval", "engines/none.onnx"], ["engines/none.onnx", "build-engine"]),
        (["build-engine", "--backend", "tensorrt"], ["pip install -e '.[gpu]'"]),
    ],
)
def test_bad_input_gives_one_line(run_cli, args, needles):
    assert_one_line_error(run_cli(*args), *needles)


def test_wrong_input_shape_and_batch(run_cli, digits_engine):
    assert_one_line_error(run_cli("bench", digits_engine.artifact, "--shape", "1x3x32x32"),
                          "--shape 1x3x32x32", "Nx1x32x32")
    assert_one_line_error(run_cli("bench", digits_engine.artifact, "--batch", 65), "outside", "1..64")


def test_unknown_dataset(run_cli, digits_engine):
    assert_one_line_error(run_cli("eval", digits_engine.artifact, "--dataset", "mnist"),
                          "unknown dataset 'mnist'", "imagefolder:PATH")


def test_weights_that_do_not_fit(run_cli, tmp_path):
    import torch

    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "w.pt")
    assert_one_line_error(run_cli("build-engine", "--weights", tmp_path / "w.pt"), "does not fit the model")


def test_debug_shows_the_traceback(run_cli, monkeypatch):
    from harness.commands import pipeline

    def boom(*a, **k):
        raise ValueError("internal")

    monkeypatch.setattr(pipeline, "build_artifact", boom)
    assert_one_line_error(run_cli("build-engine"), "ValueError: internal", "--debug", catch_all=True)
    with pytest.raises(ValueError):
        run_cli("--debug", "build-engine")
