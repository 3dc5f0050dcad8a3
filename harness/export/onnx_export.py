"""Trace a PyTorch model to ONNX: pinned opset, dynamic batch axis, onnx.checker passed."""

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

OPSET = 17  # TensorRT 10/11 parse 9..24; >= 13 for per-channel Q/DQ
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def trace_onnx(model: torch.nn.Module, sample: np.ndarray, opset: int = OPSET) -> onnx.ModelProto:
    """Trace `model` on `sample` (N>=2 so the batch axis is really dynamic); the graph passes onnx.checker.

    Whether the file computes what the model does is checked by harness.export.verify, on more inputs.
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
    proto = onnx.load_from_string(buf.getvalue())
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise HarnessError(f"exported ONNX fails onnx.checker: {str(exc).splitlines()[0]}") from exc
    return proto


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
    return run_onnx_outputs(model, x)[0]


def run_onnx_outputs(model: bytes | str | Path | onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    """The file's outputs, computed as written (harness.backends.cpu.reference_session), on any CPU."""
    from harness.backends.cpu import reference_session

    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    sess = reference_session(src)
    return sess.run(None, {sess.get_inputs()[0].name: x})
