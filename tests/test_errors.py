"""Every class of bad input the fault audit found reaching the catch-all ends in one line that names the file or
option and the fix, with exit code 2 (no traceback, no 'rerun with --debug')."""

import errno

import pytest
from test_cli_errors import assert_one_line_error

FACTORIES = {
    "badimport": ("import nonexistent_pkg\ndef build(): pass\n", "cannot import badimport"),
    "badsyntax": ("def build(:\n", "importing badsyntax raised SyntaxError"),
    "raises": ("def build():\n    raise ValueError('nope')\n", "calling the factory raised ValueError: nope"),
    "needsargs": ("def build(n):\n    pass\n", "must build the model with no arguments"),
    "fwd": ("import torch\nclass M(torch.nn.Module):\n    def forward(self, x):\n        raise RuntimeError('broke')\n"
            "def build():\n    return M()\n", "forward on a 1x3x8x8 input raised RuntimeError: broke"),
    "chan": ("import torch\ndef build():\n    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3))\n",
             "expected input[1, 3, 8, 8] to have 1 channels"),
}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_a_broken_user_factory_isassert_one_line_error(run_cli, tmp_path, monkeypatch, name):
    source, message = FACTORIES[name]
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    result = run_cli("export", "--model", f"{name}:build", "--input-shape", "3x8x8", "-o", "x.onnx")
    assert_one_line_error(result, message)


def test_a_shape_the_model_does_not_take_isassert_one_line_error(run_cli):
    assert_one_line_error(run_cli("export", "--model", "resnet18", "--input-shape", "1x32x32", "-o", "x.onnx"),
              "give the shape the model takes with --input-shape")


def test_a_corrupt_image_is_named(run_cli, tmp_path):
    from PIL import Image

    for split in ("calib", "val"):
        for cls in ("a", "b"):
            (tmp_path / "imgs" / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.new("L", (8, 8), i * 40).save(tmp_path / "imgs" / split / cls / f"{i}.png")
    bad = tmp_path / "imgs" / "calib" / "b" / "1.png"
    bad.write_bytes(bad.read_bytes()[:20])  # truncated
    assert_one_line_error(run_cli("quantize", "--dataset", f"imagefolder:{tmp_path / 'imgs'}", "--calib", "max",
                      "--calib-batches", 1, "--calib-batch-size", 8, "-o", "q.pt"), f"{bad}: unreadable image")


def test_a_damaged_checkpoint_isassert_one_line_error(run_cli, tmp_path):
    import torch

    assert run_cli("quantize", "--calib", "max", "--calib-batches", 1, "-o", "q.pt").exit_code == 0
    ckpt = torch.load(tmp_path / "q.pt", weights_only=False)
    del ckpt["amax"]
    torch.save(ckpt, tmp_path / "damaged.pt")
    assert_one_line_error(run_cli("export", "--precision", "int8", "--quant", tmp_path / "damaged.pt", "-o", "x.onnx"),
              "the checkpoint lacks amax")


def test_an_output_path_that_is_a_folder_isassert_one_line_error(run_cli, tmp_path):
    (tmp_path / "out").mkdir()
    assert_one_line_error(run_cli("export", "-o", tmp_path / "out"), "is a directory")


def test_an_onnx_runtime_failure_isassert_one_line_error(digits_engine):
    import numpy as np

    from harness.backends.cpu import CpuRunner
    from harness.errors import HarnessError

    with pytest.raises(HarnessError) as caught:
        CpuRunner(digits_engine.artifact).infer(np.zeros((1, 3, 5, 5), np.float32))
    message = caught.value.message
    assert "\n" not in message and message.startswith(f"ONNX Runtime cannot run {digits_engine.artifact} on a 1x3x5x5")


def test_disk_full_names_the_file_and_the_fix(run_cli, monkeypatch, digits_engine):
    def full(path, payload):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("harness.commands.pipeline.write_json", full)
    assert_one_line_error(run_cli("eval", digits_engine.artifact, "--limit", 8, "--json", "out.json"),
              "out.json: No space left on device; free disk space there and run the command again")


@pytest.mark.parametrize("args, what", [
    (("sweep", "{file}"), "{file}: not UTF-8 text (byte 0xff at offset 8)"),
    (("quantize", "--skip-from", "{file}"), "--skip-from {file}: not UTF-8 text"),
    (("inspect-engine", "--layer-info", "{file}"), "--layer-info {file}: not UTF-8 text"),
])
def test_a_file_that_is_not_utf8_isassert_one_line_error(run_cli, tmp_path, args, what):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"models: \xff\xfe\n")
    assert_one_line_error(run_cli(*[a.format(file=path) for a in args]), what.format(file=path))


def _golden(run_cli, tmp_path):
    """A golden file of digits-resnet, and damaged copies of it: the audit's BadZipFile, EOFError and KeyError."""
    import json
    import zipfile

    import numpy as np

    golden = tmp_path / "golden.npz"
    assert run_cli("compare", "torch:digits-resnet", "--limit", 4, "--save-outputs", golden).exit_code == 0
    data = golden.read_bytes()
    damaged = {"truncated": data[: len(data) // 2], "not a zip": b"PK\x03\x04" + b"x" * 100}
    for name, raw in damaged.items():
        (tmp_path / f"{name}.npz").write_bytes(raw)
    with zipfile.ZipFile(golden) as z, zipfile.ZipFile(tmp_path / "cut member.npz", "w") as out:
        for member in z.namelist():
            out.writestr(member, z.read(member)[:200] if member.startswith("input") else z.read(member))
    with np.load(golden) as f:
        arrays = {k: f[k] for k in f.files}
    np.savez(tmp_path / "output missing.npz", **{k: v for k, v in arrays.items() if not k.startswith("output/")})
    np.savez(tmp_path / "meta not an object.npz", **{**arrays, "meta": np.array(json.dumps([1, 2]))})
    return golden


@pytest.mark.parametrize("name, why", [
    ("truncated", "not a readable harness golden file (not a zip archive)"),
    ("not a zip", "not a readable harness golden file (not a zip archive)"),
    ("cut member", "not a readable harness golden file"),
    ("output missing", "its metadata lists output 'logits' but the file has no such array"),
    ("meta not an object", "not a readable harness golden file (its metadata is not a JSON object)"),
])
def test_a_damaged_golden_file_is_one_line(run_cli, tmp_path, name, why):
    _golden(run_cli, tmp_path)
    path = tmp_path / f"{name}.npz"
    assert_one_line_error(run_cli("compare", "--load-outputs", path, "torch:digits-resnet"),
                          f"--load-outputs {path}: {why}")
    if name != "output missing":  # inputs alone are a valid --load-inputs file
        assert_one_line_error(run_cli("compare", "torch:digits-resnet", "--load-inputs", path, "--save-outputs",
                                      tmp_path / "o.npz"), f"--load-inputs {path}")


@pytest.mark.parametrize("args, role", [
    (("compare", "torch:digits-resnet", "{empty}"), "source"),
    (("debug", "layers", "{onnx}", "{empty}"), "QUANT"),
    (("debug", "qdq", "{empty}", "--min-sqnr", "20"), "QUANT.onnx"),
    (("inspect", "{empty}"), "MODEL"),
], ids=lambda a: a if isinstance(a, str) else " ".join(a[:2]))
def test_an_empty_onnx_file_is_one_line_not_a_pass(run_cli, tmp_path, digits_engine, args, role):
    """`inspect empty.onnx` read an empty model and reported no hazard; debug layers raised IndexError."""
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    result = run_cli(*[a.format(empty=empty, onnx=digits_engine.artifact) for a in args])
    assert_one_line_error(result, f"{role} {empty}: an empty file (0 bytes), not an ONNX model")
