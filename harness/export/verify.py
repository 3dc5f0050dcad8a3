"""Is an exported file the model we meant? Checks that scale with what rounding can do, not a share of the output.

INT8: ONNX Runtime's run of the Q/DQ file and PyTorch's fake-quant run of the calibrated model are two roundings
of one quantized model. They break rounding ties differently (x / scale against x * (1 / scale)), and deep
networks amplify each flipped tie, so their outputs may differ by more than any fixed tolerance while both are
equally close to FP32. So the file is judged (strict) by: its Q/DQ scales are exactly the scales of the quantizers
that ran; its SQNR to FP32 is within a margin of fake-quant's; it differs from fake-quant by less than
quantization itself differs from FP32; and a paired test finds it no less often in top-1 agreement with FP32.
A wrong graph (a missing, extra or misplaced Q/DQ, a wrong scale or axis) breaks at least one of these.
FP32 and FP16 files are compared with FP32 PyTorch by SQNR. A Q/DQ file made by another tool (ModelOpt) has no
fake-quant twin: its figures against FP32 are recorded and only a file further from FP32 than zeros is refused.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from harness.errors import HarnessError
from harness.measure.accuracy import degenerate_outputs, sqnr_db

if TYPE_CHECKING:
    import onnx

LEVELS = ("strict", "loose", "off")
UNREFERENCED_MIN_SQNR_DB = 0.0  # an INT8 file with no fake-quant model to compare with (ModelOpt's): sanity only
SAMPLES = 32  # inputs a check runs: enough that top-1 and SQNR are stable, few enough for 224x224 on a CPU


@dataclass(frozen=True)
class Criteria:
    min_sqnr_db: dict  # float precisions: the file against FP32 PyTorch
    sqnr_gap_db: float  # int8: |SQNR(file) - SQNR(fake-quant)|, both against FP32
    noise_margin_db: float | None  # int8: SQNR(file against fake-quant) - SQNR(fake-quant against FP32), at least
    mcnemar_p: float  # int8: refuse when the file agrees with FP32 less often than fake-quant, at this p-value
    scales: bool  # int8: the file's Q/DQ scales are the quantizers' own


CRITERIA = {
    "strict": Criteria({"fp32": 60.0, "fp16": 30.0}, sqnr_gap_db=1.0, noise_margin_db=3.0, mcnemar_p=0.01, scales=True),
    "loose": Criteria({"fp32": 40.0, "fp16": 20.0}, sqnr_gap_db=3.0, noise_margin_db=None, mcnemar_p=0.001,
                      scales=False),
}


@dataclass
class Verification:
    """What the check measured (sidecar `<file>.verify.json`, the engine sidecar and the log) and its verdict."""

    level: str
    precision: str
    samples: int = 0
    inputs: str = ""
    sqnr_db: float | None = None  # the file (ONNX Runtime) against FP32 PyTorch
    top1_agreement_pct: float | None = None
    max_abs_error: float | None = None
    fake_quant_sqnr_db: float | None = None  # PyTorch fake-quant against FP32 PyTorch
    fake_quant_top1_agreement_pct: float | None = None
    file_vs_fake_quant_sqnr_db: float | None = None
    file_vs_fake_quant_top1_agreement_pct: float | None = None
    mcnemar_p: float | None = None
    scales_checked: int | None = None
    degenerate: str | None = None  # why the FP32 outputs cannot be scored against, when they cannot
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def summary(self) -> str:
        if self.level == "off":
            return "not verified (--verify off)"
        if self.degenerate:
            head = f"not scored: the FP32 model's outputs are degenerate ({self.degenerate})"
        else:
            head = (f"against FP32 PyTorch: SQNR {_db(self.sqnr_db)}, top-1 agreement {_pct(self.top1_agreement_pct)}")
            if self.fake_quant_sqnr_db is not None:
                head += (f"; PyTorch fake-quant {_db(self.fake_quant_sqnr_db)}, "
                         f"{_pct(self.fake_quant_top1_agreement_pct)}; file against fake-quant "
                         f"{_db(self.file_vs_fake_quant_sqnr_db)}, {_pct(self.file_vs_fake_quant_top1_agreement_pct)}"
                         f" (McNemar p {self.mcnemar_p:.2g})")
        if self.scales_checked is not None:
            head += f"; {self.scales_checked} Q/DQ scales match the quantizers"
        return f"{self.level} check on {self.samples} {self.inputs} inputs, {head}"


def _db(value: float | None) -> str:
    return "n/a" if value is None else ("inf dB" if math.isinf(value) else f"{value:.2f} dB")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} %"


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return 100.0 * float(np.mean(a.argmax(1) == b.argmax(1)))


def mcnemar_p(file_right: np.ndarray, fq_right: np.ndarray) -> float:
    """One-sided exact McNemar test: the chance of the file losing this many paired top-1 answers by luck."""
    lost = int(np.sum(fq_right & ~file_right))
    won = int(np.sum(file_right & ~fq_right))
    n = lost + won
    return sum(math.comb(n, k) for k in range(lost, n + 1)) / 2**n if n else 1.0


Scale = tuple[str, np.ndarray, "int | None"]  # (quantizer or node name, scale, axis; None per tensor)


def file_scales(model: onnx.ModelProto) -> list[Scale]:
    """(node, scale, axis or None) of every QuantizeLinear, as written."""
    from harness.quantize.onnx_graph import QUANTIZE, Graph

    g = Graph(model)
    found = []
    for node in g.nodes:
        if node.op_type != QUANTIZE:
            continue
        scale = g.const(node.input[1]) if len(node.input) > 1 else None
        if scale is None:
            found.append((node.name, np.array(np.nan), None))
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1) if scale.ndim else None
        if axis is not None and axis < 0:
            axis += len(g.initializers[node.input[0]].dims) if node.input[0] in g.initializers else 0
        found.append((node.name, scale.astype(np.float32), axis))
    return found


def compare_scales(model: onnx.ModelProto, expected: list[Scale], rtol: float) -> str | None:
    """Why the file's Q/DQ scales are not the quantizers' (one per distinct scale either way), else None."""

    def same(a, b) -> bool:
        return a[2] == b[2] and a[1].shape == b[1].shape and bool(np.allclose(a[1], b[1], rtol=rtol, atol=0))

    written = file_scales(model)
    for q in expected:
        if not any(same(q, w) for w in written):
            kind = "per-tensor" if q[2] is None else f"per-channel (axis {q[2]})"
            return (f"quantizer {q[0]} ({kind}, scale {float(np.ravel(q[1])[0]):.4g}...) has no QuantizeLinear with "
                    "that scale and axis in the file")
    for w in written:
        if not any(same(q, w) for q in expected):
            return (f"QuantizeLinear {w[0] or '?'} has scale {float(np.ravel(w[1])[0]):.4g} (axis {w[2]}), which no "
                    "quantizer of the model has")
    return None


def check_outputs(precision: str, model: onnx.ModelProto, got: np.ndarray, fp32: np.ndarray,
                  level: str = "strict", fake_quant: tuple | None = None, inputs: str = "") -> Verification:
    """Judge a file's outputs `got` on some inputs, against FP32 PyTorch's `fp32` (and, for int8, fake-quant's
    `(outputs, scales)` from harness.quantize.modules.run_recording_scales) on the same inputs."""
    if level not in LEVELS:
        raise HarnessError(f"--verify {level!r} is unknown: use one of {', '.join(LEVELS)}")
    v = Verification(level, precision, len(fp32), inputs)
    if level == "off":
        return v
    crit = CRITERIA[level]
    got = got.astype(np.float32)
    if got.shape != fp32.shape:
        v.failures.append(f"output shape {got.shape} differs from PyTorch's {fp32.shape}")
        return v
    if not np.all(np.isfinite(got)):
        v.failures.append(f"{int(np.sum(~np.isfinite(got)))} outputs are NaN or Inf")
    v.degenerate = degenerate_outputs(fp32)
    if precision.startswith("int8") and fake_quant is not None:
        fq, expected = fake_quant
        if crit.scales:
            v.scales_checked = len(expected)
            why = compare_scales(model, expected, rtol=1e-3 if precision.endswith("fp16") else 1e-5)
            if why:
                v.failures.append(why)
    if v.degenerate or not v.passed:
        return v
    v.sqnr_db = sqnr_db(fp32, got)
    v.top1_agreement_pct = _agreement(got, fp32)
    v.max_abs_error = float(np.abs(got - fp32).max())
    if not precision.startswith("int8"):
        if v.sqnr_db < crit.min_sqnr_db[precision]:
            v.failures.append(f"SQNR against FP32 PyTorch {_db(v.sqnr_db)} is below {crit.min_sqnr_db[precision]} dB")
        return v
    if fake_quant is None:  # another tool's file (ModelOpt): FP32 is all there is to compare with
        if v.sqnr_db < UNREFERENCED_MIN_SQNR_DB:
            v.failures.append(f"SQNR against FP32 PyTorch {_db(v.sqnr_db)} is below {UNREFERENCED_MIN_SQNR_DB:g} dB: "
                              "the outputs are further from FP32 than all-zero outputs are")
        return v
    v.fake_quant_sqnr_db = sqnr_db(fp32, fq)
    v.fake_quant_top1_agreement_pct = _agreement(fq, fp32)
    v.file_vs_fake_quant_sqnr_db = sqnr_db(fq, got)
    v.file_vs_fake_quant_top1_agreement_pct = _agreement(got, fq)
    truth = fp32.argmax(1)
    v.mcnemar_p = mcnemar_p(got.argmax(1) == truth, fq.argmax(1) == truth)
    gap = v.sqnr_db - v.fake_quant_sqnr_db
    if abs(gap) > crit.sqnr_gap_db:
        v.failures.append(f"SQNR against FP32 is {_db(v.sqnr_db)} for the file but {_db(v.fake_quant_sqnr_db)} for "
                          f"PyTorch fake-quant (allowed gap {crit.sqnr_gap_db} dB)")
    # FP16 scales and weights move the quantization grid of an int8-fp16 file by design, so it is another rounding
    # of the model by up to the quantization noise itself: the noise margin applies to int8 files only.
    margin = crit.noise_margin_db if precision == "int8" else None
    if margin is not None and v.file_vs_fake_quant_sqnr_db < v.fake_quant_sqnr_db + margin:
        v.failures.append(f"the file differs from PyTorch fake-quant (SQNR {_db(v.file_vs_fake_quant_sqnr_db)}) about "
                          f"as much as quantization differs from FP32 ({_db(v.fake_quant_sqnr_db)}): it is another "
                          "quantization of the model")
    if v.mcnemar_p < crit.mcnemar_p:
        v.failures.append(f"the file agrees with FP32's top-1 less often than PyTorch fake-quant "
                          f"({_pct(v.top1_agreement_pct)} against {_pct(v.fake_quant_top1_agreement_pct)}, "
                          f"McNemar p {v.mcnemar_p:.2g})")
    return v
