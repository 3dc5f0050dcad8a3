"""Export to ONNX and refuse to keep a file whose outputs disagree with PyTorch."""

from __future__ import annotations

import io
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import onnx
import torch

from harness.errors import HarnessError
from harness.fileio import atomic_write

OPSET = 17  # TensorRT 10/11 parse 9..24; >= 13 for per-channel Q/DQ
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def export_onnx(
    model: torch.nn.Module,
    sample: np.ndarray,
    out: Path,
    opset: int = OPSET,
    rtol: float = 1e-3,
    atol: float = 1e-4,
) -> Path:
    """Trace `model` on `sample` (N>=2 so the batch axis is really dynamic) and check ORT against torch.

    The file is written only after `onnx.checker` passes and ONNX Runtime reproduces PyTorch's outputs on the
    sample within tolerance, so a cached ONNX is always one that was verified.
    """
    model = model.eval().cpu()
    x = torch.from_numpy(np.ascontiguousarray(sample, dtype=np.float32))
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), exportable(opset):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
        expected = model(x).float().numpy()
    proto = onnx.load_from_string(buf.getvalue())
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise HarnessError(f"exported ONNX fails onnx.checker: {str(exc).splitlines()[0]}") from exc
    got = run_onnx(buf.getvalue(), sample)
    compare_outputs(expected, got, rtol, atol, what="ONNX Runtime vs PyTorch")
    return atomic_write(Path(out), buf.getvalue())


@contextmanager
def exportable(opset: int):
    """Attention on its MatMul/Softmax path, and an unsupported operator as one line.

    nn.MultiheadAttention's fused fast path (aten::_native_multi_head_attention, taken in eval without grad)
    has no ONNX form; with it off, attention exports as MatMul/Softmax and runs the same math in PyTorch. The
    exporter prints its whole IR graph before raising on an unsupported operator: that dump is dropped.
    """
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with mock.patch.object(torch._C, "_jit_onnx_log", lambda *args: None, create=True):
            yield
    except torch.onnx.errors.UnsupportedOperatorError as exc:
        message = str(exc)
        op = re.search(r"operator '([^']+)'", message)
        since = re.search(r"added in version (\d+)", message)
        needs = f" (it needs opset {since.group(1)})" if since else ""
        raise HarnessError(f"ONNX export: operator {op.group(1) if op else message.splitlines()[0]} is not "
                           f"supported at opset {opset}{needs}; a newer opset or leaving the layer that uses it "
                           "out (--skip, or a change to the model) avoids it") from exc
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def run_onnx(model: bytes | str | Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    src = str(model) if isinstance(model, Path) else model
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def compare_outputs(expected: np.ndarray, got: np.ndarray, rtol: float, atol: float, what: str) -> None:
    """Tolerance is relative to the output's range so logits of any scale compare fairly."""
    if expected.shape != got.shape:
        raise HarnessError(f"{what}: output shape {got.shape} differs from {expected.shape}")
    scale = float(np.abs(expected).max()) or 1.0
    err = float(np.abs(expected - got.astype(np.float32)).max())
    if err > atol + rtol * scale:
        raise HarnessError(
            f"{what}: max abs error {err:.3g} exceeds {atol + rtol * scale:.3g}; the file was not kept"
        )
