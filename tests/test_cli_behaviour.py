"""What the command line does around the commands: progress and ETA, exit codes, closed pipes, --debug."""

import subprocess
import sys

from harness.sweep.progress import Progress


def test_eta_comes_from_finished_cells_of_the_same_kind():
    """A cell that calibrates and exports (first of its group) must not inflate the ETA of cheap neighbours."""
    lines = []
    first, cheap = ("cpu", "int8", "selective", True), ("cpu", "int8", "selective", False)
    progress = Progress([first, cheap, cheap, first, cheap], lines.append)
    progress.finished("a", "ok", 30.0, first)  # kind "cheap" not seen yet: estimated from every cell so far
    assert progress.eta() == 30.0 * 4
    progress.finished("b", "ok", 1.0, cheap)
    assert progress.eta() == 1.0 + 30.0 + 1.0
    progress.finished("d", "ok", 20.0, first)  # out of order, as executors finish groups
    assert progress.eta() == 2 * 1.0
    assert lines[-1].startswith("[3/5] ok") and "ETA 0:00:02" in lines[-1]


def test_eta_covers_the_steps_before_any_cell_finishes():
    """From the first second: exports and timings feed the ETA as they finish, priors stand in until then, and a
    cell's own time counts only what its reported steps did not."""
    lines = []
    kind = ("cpu", "fp32", None, True)
    progress = Progress([kind, kind], lines.append, {"export": (2, 3.0), "time": (2, 1.0)})
    assert progress.eta() == 2 * 3.0 + 2 * 1.0  # priors only
    progress.step("export", 10.0, "m fp32")
    assert lines[-1].startswith("[export 1/2] m fp32  10.0 s") and "ETA 0:00:12" in lines[-1]
    progress.step("export", None)  # a cache hit: done, but says nothing about cost
    assert progress.eta() == 2 * 1.0
    progress.step("time", 0.5, "m fp32 b1: p50 1 ms")
    progress.begin_cell()
    progress.step("time", 0.5)
    progress.finished("m fp32 b1", "ok", 0.75, kind)  # 0.5 s of it was timing, reported above
    assert progress.times[kind] == [0.25] and progress.eta() == 0.25


def test_long_loops_report_the_first_and_last_unit_and_at_most_one_line_every_few_seconds(monkeypatch):
    from harness import progress as prog

    now = [0.0]
    monkeypatch.setattr(prog.time, "perf_counter", lambda: now[0])
    lines = []
    ticker = prog.Ticker("sensitivity analysis: layer", 10, lines.append, every_s=2.0)
    for _ in range(10):
        now[0] += 1.0  # one second a unit
        ticker.tick()
    assert lines[0] == "sensitivity analysis: layer 1/10  elapsed 0:00:01  ETA 0:00:09"
    assert lines[-1] == "sensitivity analysis: layer 10/10  elapsed 0:00:10  ETA 0:00:00"
    assert len(lines) == 6  # units 1, 3, 5, 7, 9 and the last


def _harness(*args, **kw):
    return subprocess.run([sys.executable, "-c", "from harness.cli import main; main()", *args],
                          capture_output=True, text=True, **kw)


def test_help_lists_every_command_without_importing_torch_pandas_or_onnx():
    """`harness --help` is a page of text: it must not pay for torch (seconds) to print it."""
    code = ("import sys\nfrom harness.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('IMPORTED', sorted(m for m in ('torch', 'pandas', 'onnx', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True, check=True).stdout
    assert "IMPORTED []" in out
    from harness.cli import COMMANDS

    for name, (_, short) in COMMANDS.items():
        assert name in out and short.split()[0] in out


def test_every_listed_command_loads_and_has_help():
    """The command table's entries resolve to real commands (its one-line helps are what --help lists)."""
    import click

    from harness.cli import COMMANDS, cli

    ctx = click.Context(cli)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert isinstance(command, click.Command) and command.help, name


def test_a_reader_that_leaves_early_ends_the_command_quietly():
    """`harness --help | head -1`: no BrokenPipeError on stderr."""
    proc = subprocess.Popen([sys.executable, "-c", "from harness.cli import main; main()", "export", "--help"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # the reader leaves after one line
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "BrokenPipe" not in err and "Error" not in err, err


def test_debug_shows_the_traceback_of_harness_errors_too():
    plain = _harness("export", "--model", "no-such-model", "-o", "x.onnx")
    assert plain.returncode == 2 and "Traceback" not in plain.stderr and "unknown model 'no-such-model'" in plain.stderr
    debug = _harness("--debug", "export", "--model", "no-such-model", "-o", "x.onnx")
    assert debug.returncode == 2 and "Traceback" in debug.stderr and "resolve_model" in debug.stderr


def test_bench_at_two_batches_keeps_both_results(run_cli, digits_engine):
    from pathlib import Path

    fast = ("--warmup", 0, "--iterations", 3, "--duration", 0)
    for batch in (1, 4):
        assert run_cli("bench", digits_engine.artifact, "--batch", batch, *fast).exit_code == 0
    written = sorted(p.name for p in Path("reports/bench").glob("*.json"))
    stem = Path(digits_engine.artifact).stem
    shape = "x".join(map(str, digits_engine.input_shape))
    assert written == [f"{stem}-1x{shape}.json", f"{stem}-4x{shape}.json"]


def test_train_shows_every_epoch_and_leaves_the_bundled_weights_alone(run_cli, tmp_path, monkeypatch):
    from harness.build import sha256_file
    from harness.models import train_digits
    from harness.models.registry import BUNDLED_WEIGHTS

    monkeypatch.setattr(train_digits.DigitsDataset, "size", lambda self, split: 64)  # one batch an epoch
    bundled = sha256_file(BUNDLED_WEIGHTS)
    result = run_cli("train", "--epochs", 2)
    assert result.exit_code == 0, result.output
    assert "epoch 1/2" in result.output and "epoch 2/2" in result.output and "ETA" in result.output
    assert (tmp_path / "digits-resnet.pt").is_file() and sha256_file(BUNDLED_WEIGHTS) == bundled
    assert "--weights digits-resnet.pt" in result.output


def test_eval_does_not_score_labels_the_head_cannot_produce(run_cli, tmp_path, monkeypatch):
    """A 1000-class head evaluated on the 10 digits labels: top-1 is n/a with the reason, agreement still holds."""
    import json

    (tmp_path / "wide.py").write_text("import torch\n\ndef build():\n    torch.manual_seed(0)\n"
                                      "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 1000))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    built = run_cli("build-engine", "--model", "wide:build", "--input-shape", "1x8x8", "--engines-dir", tmp_path / "e")
    assert built.exit_code == 0, built.output
    result = run_cli("eval", built.stdout.strip(), "--json", tmp_path / "e.json")
    assert result.exit_code == 0, result.output
    assert "top-1/top-5 not scored: the model has 1000 outputs but the dataset's labels have 10 classes" in (
        result.output)
    got = json.loads((tmp_path / "e.json").read_text())
    assert got["top1"] is None and got["top1_delta"] is None and got["top1_agreement"] == 100.0


def test_labels_beyond_the_head_are_not_scored():
    import numpy as np

    from harness.measure.accuracy import accuracy

    logits = np.eye(4, dtype=np.float32)
    result = accuracy(logits, np.array([0, 1, 2, 7]), logits)
    assert result.top1 is None and result.labels_unusable == "label 7 is beyond the model's 4 outputs"
    assert accuracy(logits, np.arange(4), logits, classes=4).top1 == 100.0
