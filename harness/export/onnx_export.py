"""Trace a PyTorch model to ONNX: pinned opset, dynamic batch axis, onnx.checker passed."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from harness.errors import HarnessError
from harness.fileio import atomic_write

OPSET = 17  # TensorRT 10/11 parse 9..24; >= 13 for per-channel Q/DQ
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def trace_onnx(model: torch.nn.Module, sample: np.ndarray, opset: int = OPSET) -> onnx.ModelProto:
    """Trace `model` on `sample` (N>=2 so the batch axis is really dynamic); the graph passes onnx.checker.

    Whether the file computes what the model does is checked by harness.export.verify, on more inputs.
    """
    model = model.eval().cpu()
    x = torch.from_numpy(np.ascontiguousarray(sample, dtype=np.float32))
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
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


def export_onnx(model: torch.nn.Module, sample: np.ndarray, out: Path, opset: int = OPSET) -> Path:
    """trace_onnx written to `out` (unverified: `harness export` and the engine cache go through export_variant)."""
    return atomic_write(Path(out), trace_onnx(model, sample, opset).SerializeToString())


def run_onnx(model: bytes | str | Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    from harness.backends.cpu import QUIET

    src = str(model) if isinstance(model, Path) else model
    so = ort.SessionOptions()
    so.log_severity_level = QUIET
    sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]
