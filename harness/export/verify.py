"""Is an exported file the model we meant? Checks that scale with what rounding can do, not a share of the output.

INT8: ONNX Runtime's run of the Q/DQ file and PyTorch's fake-quant run of the calibrated model are two roundings
of one quantized model. They break rounding ties differently (x / scale against x * (1 / scale)), and deep
networks amplify each flipped tie, so their outputs may differ by more than any fixed tolerance while both are
equally close to FP32. So the file is judged (strict) by: each Q/DQ reads the tensor one of the model's
quantizers reads, with its scale and axis, and back (matched in float runs of both, free of rounding); its SQNR
to FP32 is within a margin of fake-quant's; and a paired test finds it no less often in top-1 agreement with FP32.
How far the file is from fake-quant is recorded, not judged: on ViT-B the two roundings are 29 dB apart while
quantization is 26 dB from FP32, both files equally right. A wrong graph (a missing,
extra or misplaced Q/DQ, a wrong scale or axis) breaks at least the first. FP32 and FP16 files are compared
with FP32 PyTorch by SQNR. A Q/DQ file made by another tool (ModelOpt) has no fake-quant twin: its figures
against FP32 are recorded and only a file further from FP32 than zeros is refused.

FP8 files are judged as INT8 ones are: harness's FP8 fake-quant model (harness.quantize.modules.Fp8Quantizer)
computes what QuantizeLinear/DequantizeLinear with FP8 E4M3 compute, so it is their twin, and the placement check
matches each FP8 Q/DQ to its quantizer (scale = amax / 448). BF16 files run through harness.export.precision's
emulation (FP32 with every BF16 tensor rounded to BF16): ONNX Runtime's CPU provider has no BF16 kernels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from harness.backends.base import float_type, quantized_type
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
    sqnr_gap_db: float  # int8/fp8: |SQNR(file) - SQNR(fake-quant)|, both against FP32
    mcnemar_p: float  # int8/fp8: refuse when the file agrees with FP32 less often than fake-quant, at this p-value
    placement: bool  # int8/fp8: each Q/DQ reads the tensor its quantizer reads, with its scale and axis


CRITERIA = {
    "strict": Criteria({"fp32": 60.0, "fp16": 30.0, "bf16": 25.0}, sqnr_gap_db=1.0, mcnemar_p=0.01,
                       placement=True),
    "loose": Criteria({"fp32": 40.0, "fp16": 20.0, "bf16": 15.0}, sqnr_gap_db=3.0, mcnemar_p=0.001,
                      placement=False),
}


@dataclass(kw_only=True)
class Checked:
    """A result that passes when no check failed; its dict carries the verdict too (JSON sidecars, --json)."""

    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


@dataclass
class Verification(Checked):
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
    quantizers_checked: int | None = None
    degenerate: str | None = None  # why the FP32 outputs cannot be scored against, when they cannot
    judged_on: str | None = None  # the tensor judged instead of the outputs, when they are degenerate

    def summary(self) -> str:
        if self.level == "off":
            return "not verified (--verify off)"
        if self.degenerate:
            head = f"not scored: the FP32 model's outputs are degenerate ({self.degenerate})"
        elif self.judged_on:
            head = f"judged on {self.judged_on}: against FP32 PyTorch SQNR {_db(self.sqnr_db)}"
            if self.fake_quant_sqnr_db is not None:
                head += (f"; PyTorch fake-quant {_db(self.fake_quant_sqnr_db)}; file against fake-quant "
                         f"{_db(self.file_vs_fake_quant_sqnr_db)}")
        else:
            head = (f"against FP32 PyTorch: SQNR {_db(self.sqnr_db)}, top-1 agreement {_pct(self.top1_agreement_pct)}")
            if self.fake_quant_sqnr_db is not None:
                head += (f"; PyTorch fake-quant {_db(self.fake_quant_sqnr_db)}, "
                         f"{_pct(self.fake_quant_top1_agreement_pct)}; file against fake-quant "
                         f"{_db(self.file_vs_fake_quant_sqnr_db)}, {_pct(self.file_vs_fake_quant_top1_agreement_pct)}"
                         f" (McNemar p {self.mcnemar_p:.2g})")
        if self.quantizers_checked is not None:
            head += f"; {self.quantizers_checked} Q/DQ read the tensors of the model's quantizers, with their scales"
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


FINGERPRINT = 4096  # values of a tensor compared to tell which tensor a Q/DQ reads
PLACEMENT_SAMPLES = 8  # inputs of the float runs that match Q/DQ to quantizers
PLACEMENT_SQNR_DB = 30.0  # the same tensor in float in PyTorch and ONNX Runtime (FP16 files: ~60 dB; others: 0-5)


def fingerprint(x: np.ndarray) -> tuple[tuple[int, ...], np.ndarray]:
    """(shape, values at fixed evenly spaced positions): enough to tell one tensor from another."""
    flat = np.asarray(x, dtype=np.float32).ravel()
    return tuple(x.shape), flat[np.linspace(0, flat.size - 1, min(FINGERPRINT, flat.size)).astype(np.int64)]


def file_quantizers(model: onnx.ModelProto, x: np.ndarray) -> list[tuple]:
    """(node, scale, axis or None, input shape, input fingerprint) of every QuantizeLinear in the file.

    Inputs come from a float run of the file (every Q/DQ pair bypassed) on `x`, so they are free of the rounding
    chaos an INT8 run carries and can be compared exactly with PyTorch's float run.
    """
    import onnx
    from onnx import helper, shape_inference

    from harness.export.onnx_export import run_onnx_outputs
    from harness.quantize.onnx_graph import DEQUANTIZE, QUANTIZE, Graph, drop_unused

    g = Graph(model)
    quantizers = [n for n in g.nodes if n.op_type == QUANTIZE]
    bypass = {dq.output[0]: g.producer[dq.input[0]].input[0] for dq in g.nodes
              if dq.op_type == DEQUANTIZE and g.op_of(dq.input[0]) == QUANTIZE}
    float_model = onnx.ModelProto()
    float_model.CopyFrom(model)
    for node in float_model.graph.node:
        node.input[:] = [bypass.get(i, i) for i in node.input]
    for out in float_model.graph.output:
        if out.name in bypass:  # a Q/DQ on the graph output itself
            float_model.graph.node.append(helper.make_node("Identity", [bypass[out.name]], [out.name]))
    graph_inputs = {i.name for i in model.graph.input}
    wanted = sorted({q.input[0] for q in quantizers} - set(g.initializers) - graph_inputs)
    types = {v.name: v for v in shape_inference.infer_shapes(model).graph.value_info}
    for name in wanted:
        if name not in types:
            raise HarnessError(f"the type of {name}, which a QuantizeLinear reads, cannot be inferred")
        float_model.graph.output.append(types[name])
    drop_unused(float_model)
    values = dict(zip([o.name for o in float_model.graph.output], run_onnx_outputs(float_model, x), strict=True))
    values.update({name: x for name in graph_inputs})
    found = []
    for q in quantizers:
        scale = g.const(q.input[1]) if len(q.input) > 1 else None
        scale = np.array(np.nan, np.float32) if scale is None else scale.astype(np.float32)
        axis = next((a.i for a in q.attribute if a.name == "axis"), 1) if scale.ndim else None
        tensor = g.const(q.input[0]) if q.input[0] in g.initializers else values[q.input[0]]
        if axis is not None and axis < 0:
            axis += tensor.ndim
        found.append((q.name or q.output[0], scale, axis, *fingerprint(tensor)))
    return found


def compare_placement(written: list[tuple], calls: list[tuple], rtol: float) -> str | None:
    """Why the file's Q/DQ do not quantize the tensors the model's quantizers quantize (with their scale and axis),
    else None. Each side's (name, scale, axis, shape, fingerprint) must find a match on the other."""

    def same(a, b) -> bool:
        return (a[2] == b[2] and a[1].shape == b[1].shape and bool(np.allclose(a[1], b[1], rtol=rtol, atol=0))
                and a[3] == b[3] and sqnr_db(a[4], b[4]) >= PLACEMENT_SQNR_DB)

    def describe(q) -> str:
        kind = "per tensor" if q[2] is None else f"per channel, axis {q[2]}"
        return f"scale {float(np.ravel(q[1])[0]):.4g} {kind}, on a {'x'.join(map(str, q[3])) or 'scalar'} tensor"

    for call in calls:
        if not any(same(call, w) for w in written):
            return f"quantizer {call[0]} ({describe(call)}) has no QuantizeLinear doing the same in the file"
    for w in written:
        if not any(same(c, w) for c in calls):
            return f"QuantizeLinear {w[0]} ({describe(w)}) does what no quantizer of the model does"
    return None


def check_file(precision: str, model: onnx.ModelProto, x: np.ndarray, fp32: np.ndarray, level: str = "strict",
               fake_quant: tuple | None = None, inputs: str = "", features: tuple | None = None) -> Verification:
    """Run the file on `x` (ONNX Runtime, as written) and judge it against FP32 PyTorch's outputs `fp32` on the
    same inputs and, for a pytorch-quantization INT8 file, against its fake-quant model: `(outputs, calls)` from
    harness.quantize.modules.run_recording_quantizers, whose calls cover the first PLACEMENT_SAMPLES inputs.

    `features`: (the file's tensor before the head, FP32's value of it, fake-quant's or None). When FP32's outputs
    carry no signal (a zero or constant head), the file is judged on these instead, so a degenerate head cannot
    blind the check."""
    from harness.export.onnx_export import run_onnx_outputs
    from harness.export.precision import emulate_bf16
    from harness.quantize.onnx_graph import with_outputs

    if level not in LEVELS:
        raise HarnessError(f"--verify {level!r} is unknown: use one of {', '.join(LEVELS)}")
    v = Verification(level, precision, len(fp32), inputs)
    if level == "off":
        return v
    crit = CRITERIA[level]
    degenerate = degenerate_outputs(fp32)
    usable = features is not None and degenerate is not None and degenerate_outputs(_rows(features[1])) is None
    runnable = emulate_bf16(model) if float_type(precision) == "bf16" else model
    runs = run_onnx_outputs(with_outputs(runnable, [features[0]]) if usable else runnable, x)
    got = runs[0].astype(np.float32)
    if got.shape != fp32.shape:
        v.failures.append(f"output shape {got.shape} differs from PyTorch's {fp32.shape}")
        return v
    if not np.all(np.isfinite(got)):
        v.failures.append(f"{int(np.sum(~np.isfinite(got)))} outputs are NaN or Inf")
    fq = None if fake_quant is None else fake_quant[0]
    if usable:
        tensor = runs[-1].astype(np.float32)
        if tensor.shape != features[1].shape:
            usable = False
        else:
            v.judged_on = f"{features[0]} (the features before the head; the outputs are degenerate: {degenerate})"
            fp32, got = _rows(features[1]), _rows(tensor)
            fq = None if features[2] is None else _rows(features[2])
    v.degenerate = None if usable else degenerate
    if quantized_type(precision) and fake_quant is not None and crit.placement:
        written = file_quantizers(model, x[:PLACEMENT_SAMPLES])
        v.quantizers_checked = len(written)
        why = compare_placement(written, fake_quant[1], rtol=1e-3 if precision.endswith("fp16") else 1e-5)
        if why:
            v.failures.append(why)
    if v.degenerate or not v.passed:
        return v
    classes = not usable  # features have no classes: top-1 agreement and McNemar do not apply
    v.sqnr_db = sqnr_db(fp32, got)
    v.top1_agreement_pct = _agreement(got, fp32) if classes else None
    v.max_abs_error = float(np.abs(got - fp32).max())
    if not quantized_type(precision):
        if v.sqnr_db < crit.min_sqnr_db[precision]:
            v.failures.append(f"SQNR against FP32 PyTorch {_db(v.sqnr_db)} is below {crit.min_sqnr_db[precision]} dB")
        return v
    if fake_quant is None:  # another tool's file (ModelOpt): FP32 is all there is to compare with
        if v.sqnr_db < UNREFERENCED_MIN_SQNR_DB:
            v.failures.append(f"SQNR against FP32 PyTorch {_db(v.sqnr_db)} is below {UNREFERENCED_MIN_SQNR_DB:g} dB: "
                              "the outputs are further from FP32 than all-zero outputs are")
        return v
    v.fake_quant_sqnr_db = sqnr_db(fp32, fq)
    v.file_vs_fake_quant_sqnr_db = sqnr_db(fq, got)
    gap = v.sqnr_db - v.fake_quant_sqnr_db
    if abs(gap) > crit.sqnr_gap_db:
        v.failures.append(f"SQNR against FP32 is {_db(v.sqnr_db)} for the file but {_db(v.fake_quant_sqnr_db)} for "
                          f"PyTorch fake-quant (allowed gap {crit.sqnr_gap_db} dB)")
    if not classes:
        return v
    v.fake_quant_top1_agreement_pct = _agreement(fq, fp32)
    v.file_vs_fake_quant_top1_agreement_pct = _agreement(got, fq)
    truth = fp32.argmax(1)
    v.mcnemar_p = mcnemar_p(got.argmax(1) == truth, fq.argmax(1) == truth)
    if v.mcnemar_p < crit.mcnemar_p:
        v.failures.append(f"the file agrees with FP32's top-1 less often than PyTorch fake-quant "
                          f"({_pct(v.top1_agreement_pct)} against {_pct(v.fake_quant_top1_agreement_pct)}, "
                          f"McNemar p {v.mcnemar_p:.2g})")
    return v


def _rows(x: np.ndarray) -> np.ndarray:
    """One row per input: features of any shape, scored like logits."""
    return np.asarray(x, dtype=np.float32).reshape(len(x), -1)
