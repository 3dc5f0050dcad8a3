"""Run two artifacts of one model on the same inputs and score every output of one against the other's.

A source is an engine or artifact of any backend (by its sidecar), an ONNX file (run on the CPU reference), a
quantization checkpoint (its PyTorch fake-quant model), `torch:MODEL` (the FP32 PyTorch model), or a golden file of
saved outputs. The first source is the reference: relative errors, SQNR and agreement are measured against it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.errors import HarnessError, first_line
from harness.export.onnx_export import OUTPUT_NAME
from harness.export.verify import Checked
from harness.fileio import expect_file
from harness.models.registry import ModelSpec

GOLDEN_FORMAT = "harness-golden/1"
BATCH = 64  # inputs per call where the source has no batch profile of its own


@dataclass
class Source:
    """What `compare` runs: a callable from an input batch to {output name: array}, and what it expects."""

    label: str
    run: Callable[[np.ndarray], dict[str, np.ndarray]]
    input_shape: tuple[int, ...] | None  # CxHxW (None: any)
    spec: ModelSpec | None = None
    named: bool = True  # False: one output the source does not name (PyTorch); it pairs with any single output
    batch: tuple[int, int] = (1, BATCH)  # smallest and largest batch it accepts
    golden: dict | None = None  # a golden file's outputs and metadata
    precision: str | None = None  # what it computes in (fp32, fp16, int8, int8-fp16), for --criteria default
    outputs: list[str] | None = None  # its output names, where known before it runs


def _batched(run, batch: tuple[int, int]):
    """Feed `run` chunks its profile accepts (the last one padded to the minimum batch, then cut back)."""
    from harness.measure.evaluate import _padded

    lo, hi = batch

    def call(x: np.ndarray) -> dict[str, np.ndarray]:
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(x), hi):
            chunk = x[start : start + hi]
            for name, out in run(_padded(chunk, lo)).items():
                parts.setdefault(name, []).append(np.asarray(out)[: len(chunk)])
        return {name: np.concatenate(v) for name, v in parts.items()}

    return call


def _torch_source(label: str, model, spec: ModelSpec, fake_quant: bool, precision: str) -> Source:
    import torch

    def run(x):
        if fake_quant:
            from harness.quantize.sensitivity import logits

            return {OUTPUT_NAME: logits(model, x)}
        with torch.no_grad():
            return {OUTPUT_NAME: model(torch.from_numpy(np.ascontiguousarray(x))).float().numpy()}

    return Source(label, _batched(run, (1, BATCH)), tuple(spec.input_shape), spec, named=False, precision=precision)


def onnx_precision(model) -> str:
    """What an ONNX graph computes in: int8 where it holds Q/DQ, with -fp16 (or fp16 alone) where its float
    tensors are FP16."""
    from onnx import TensorProto

    qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    half = any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer)
    return ("int8" if qdq else "fp16" if half else "fp32") + ("-fp16" if qdq and half else "")


def _onnx_source(path: Path) -> Source:
    import onnx

    from harness.backends.cpu import CpuRunner

    runner = CpuRunner(path)
    dims = runner.session.get_inputs()[0].shape[1:]
    shape = tuple(dims) if all(isinstance(d, int) for d in dims) else None
    precision = onnx_precision(onnx.load(str(path), load_external_data=False))
    return Source(str(path), _batched(runner.infer_all, (1, BATCH)), shape, precision=precision,
                  outputs=list(runner.output_names))


def open_source(text: str, weights: str | None = None, input_shape: str | None = None) -> Source:
    """A source from its command-line spelling; anything unreadable is a one-line error naming it.
    `input_shape` (CxHxW) sizes a torch:MODEL source: a user's model, or a torchvision model at another size."""
    from harness.build import load_engine, sidecar_of

    if text.startswith("torch:"):
        from harness.models.registry import load_model, resolve_model

        spec = resolve_model(text.split(":", 1)[1], weights, input_shape)
        return _torch_source(f"{text} ({weights})" if weights else text, load_model(spec), spec, fake_quant=False,
                             precision="fp32")
    what = "source"
    path = expect_file(Path(text), what, "give an engine, an ONNX file, a quantization checkpoint (.pt), a golden "
                                         "file (.npz) or torch:MODEL")
    if path.suffix == ".npz":
        return golden_source(path, what)
    if path.suffix == ".pt":
        from harness.quantize import checkpoint

        qm = checkpoint.restore(checkpoint.load(path))
        return _torch_source(text, qm.model, qm.spec, fake_quant=True, precision="int8")
    sidecar = sidecar_of(path)
    if sidecar.is_file() and sidecar != path:
        meta, runner = load_engine(path)
        lo, _, hi = meta.batch
        return Source(text, _batched(runner.infer_all, (lo, max(lo, min(hi, BATCH)))),
                      tuple(meta.input_shape), meta.spec, precision=meta.precision,
                      outputs=getattr(runner, "output_names", None))
    if path.suffix == ".onnx":
        if path.stat().st_size == 0:
            raise HarnessError(f"{what} {path}: an empty file (0 bytes), not an ONNX model; export one with "
                               "harness export")
        return _onnx_source(path)
    raise HarnessError(f"{text}: not an engine with a sidecar, an ONNX file, a checkpoint (.pt) or a golden file "
                       "(.npz); build engines with harness build-engine")


# --- golden files: inputs, outputs and the settings that made them, in one npz ---

def _read_npz(path: Path, option: str) -> tuple[dict, dict[str, np.ndarray]]:
    """A golden file's metadata and arrays; a damaged one (truncated, not a zip, an array or key missing, a
    member cut short) is refused in one line naming it."""
    import zipfile

    fix = "write one with harness compare --save-inputs/--save-outputs"
    path = expect_file(Path(path), option, fix)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays.pop("meta")))
        if not isinstance(meta, dict):
            raise ValueError("its metadata is not a JSON object")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        why = "no metadata" if isinstance(exc, KeyError) else "not a zip archive" if isinstance(
            exc, zipfile.BadZipFile) else "an array is cut short" if isinstance(exc, EOFError) else first_line(exc)
        raise HarnessError(f"{option} {path}: not a readable harness golden file ({why}); {fix}") from exc
    if meta.get("format") != GOLDEN_FORMAT or "input" not in arrays:
        raise HarnessError(f"{option} {path}: not a harness golden file; {fix}")
    missing = [name for name in meta.get("outputs") or [] if f"output/{name}" not in arrays]
    if missing:
        raise HarnessError(f"{option} {path}: its metadata lists output {missing[0]!r} but the file has no such "
                           f"array (damaged or edited); {fix}")
    return meta, arrays


def write_golden(path: Path, x: np.ndarray, inputs: dict, source: Source | None = None,
                 outputs: dict[str, np.ndarray] | None = None) -> Path:
    from harness.fileio import atomic_write

    meta = {"format": GOLDEN_FORMAT, "inputs": inputs, "input_shape": list(x.shape[1:])}
    arrays = {"input": x}
    if source is not None:
        meta.update(source=source.label, model=source.spec.to_dict() if source.spec else None,
                    outputs=list(outputs), named=source.named, precision=source.precision)
        arrays.update({f"output/{name}": out for name, out in outputs.items()})

    def save(tmp: Path):
        with open(tmp, "wb") as f:
            np.savez_compressed(f, meta=np.array(json.dumps(meta)), **arrays)

    return atomic_write(Path(path), save)


def load_inputs(path: Path) -> tuple[np.ndarray, dict]:
    meta, arrays = _read_npz(Path(path), "--load-inputs")
    return arrays["input"], meta


def golden_source(path: Path, option: str = "--load-outputs") -> Source:
    """Saved outputs as a source: it answers for its own inputs only."""
    meta, arrays = _read_npz(Path(path), option)
    names = meta.get("outputs")
    if not names:
        raise HarnessError(f"--load-outputs {path} holds inputs only; write outputs with harness compare A "
                           "--save-outputs FILE")
    x = arrays["input"]
    outputs = {name: arrays[f"output/{name}"] for name in names}

    def run(given: np.ndarray) -> dict[str, np.ndarray]:
        if given.shape != x.shape or not np.array_equal(given, x):
            raise HarnessError(f"--load-outputs {path} answers for its own inputs only: drop --load-inputs, "
                               "--dataset and --limit")
        return outputs

    spec = ModelSpec.from_dict(meta["model"]) if meta.get("model") else None
    return Source(f"{path} ({meta.get('source')})", run, tuple(meta["input_shape"]), spec,
                  named=meta.get("named", True), golden={"meta": meta, "input": x}, precision=meta.get("precision"),
                  outputs=list(names))


# --- pairing outputs and scoring them ---

def check_pair(a: Source, b: Source) -> None:
    """Refuse two sources that cannot be compared: another model, another input shape."""
    golden, other = (a, b) if a.golden else (b, a)
    if golden.golden and golden.spec and other.spec and (golden.spec.name, tuple(golden.spec.input_shape)) != (
            other.spec.name, tuple(other.spec.input_shape)):
        raise HarnessError(f"{golden.label} was saved from {golden.spec.name} "
                           f"{'x'.join(map(str, golden.spec.input_shape))}, not {other.spec.name} "
                           f"{'x'.join(map(str, other.spec.input_shape))}: save a golden file of this model")
    if a.input_shape and b.input_shape and tuple(a.input_shape) != tuple(b.input_shape):
        torch = next((s for s in (a, b) if s.label.startswith("torch:")), None)
        other = b if torch is a else a
        fix = (f"size {torch.label.split()[0]} with --input-shape {'x'.join(map(str, other.input_shape))}"
               if torch else "compare artifacts of one model")
        raise HarnessError(f"input shapes differ: {a.label} takes Nx{'x'.join(map(str, a.input_shape))}, "
                           f"{b.label} Nx{'x'.join(map(str, b.input_shape))}; {fix}")


def pair_outputs(a: Source, ref: dict[str, np.ndarray], b: Source, test: dict[str, np.ndarray]) -> list[tuple]:
    """[(name, reference array, test array)]: by name, or by position where a side does not name its output."""
    if len(ref) != len(test):
        raise HarnessError(f"{a.label} has {len(ref)} outputs ({', '.join(ref)}) and {b.label} {len(test)} "
                           f"({', '.join(test)}): compare artifacts of one model")
    if a.named and b.named:
        if set(ref) != set(test):
            raise HarnessError(f"output names differ: {a.label} has {', '.join(sorted(ref))}, {b.label} "
                               f"{', '.join(sorted(test))}: compare artifacts of one model")
        pairs = [(name, ref[name], test[name]) for name in ref]
    else:
        pairs = [(na if a.named else nb, ra, rb) for (na, ra), (nb, rb) in zip(ref.items(), test.items(), strict=True)]
    for name, r, t in pairs:
        if r.shape != t.shape:
            raise HarnessError(f"output {name}: {a.label} gives shape {r.shape} and {b.label} {t.shape}: compare "
                               "artifacts of one model")
    return pairs


@dataclass
class OutputDiff(Checked):
    """How far one output of the test source is from the reference's, over every element and every sample."""

    name: str
    shape: list[int]
    max_abs: float
    mean_abs: float
    median_abs: float
    p99_abs: float
    max_rel: float
    mean_rel: float
    median_rel: float
    p99_rel: float
    cosine: float
    sqnr_db: float
    top1_agreement: float | None  # % of samples with the same argmax (classifier-shaped outputs only)
    topk_agreement: float | None  # % of samples whose reference top-1 is in the test's top-k
    k: int
    nan_ref: int
    inf_ref: int
    nan_test: int
    inf_test: int


def diff(name: str, ref: np.ndarray, test: np.ndarray, k: int = 5) -> OutputDiff:
    from harness.measure.accuracy import sqnr_db, topk_accuracy

    r, t = ref.astype(np.float64), test.astype(np.float64)
    finite = np.isfinite(r) & np.isfinite(t)
    err = np.abs(r - t)[finite]
    rel = err / np.maximum(np.abs(r[finite]), np.finfo(np.float32).tiny)
    stats = {}
    for kind, values in (("abs", err), ("rel", rel)):
        empty = values.size == 0
        stats |= {f"max_{kind}": float("nan") if empty else float(values.max()),
                  f"mean_{kind}": float("nan") if empty else float(values.mean()),
                  f"median_{kind}": float("nan") if empty else float(np.median(values)),
                  f"p99_{kind}": float("nan") if empty else float(np.percentile(values, 99))}
    rf, tf = r[finite], t[finite]
    norm = float(np.linalg.norm(rf) * np.linalg.norm(tf))
    cosine = float(rf @ tf / norm) if norm > 0 else (1.0 if np.array_equal(rf, tf) else 0.0)
    top1 = topk = None
    if ref.ndim == 2 and ref.shape[0] and ref.shape[1] > 1 and finite.all():
        labels = ref.argmax(1)
        top1 = 100.0 * float((test.argmax(1) == labels).mean())
        topk = topk_accuracy(test, labels, k)
    return OutputDiff(name, list(ref.shape), **stats, cosine=cosine, sqnr_db=sqnr_db(rf, tf),
                      top1_agreement=top1, topk_agreement=topk, k=min(k, ref.shape[-1]) if ref.ndim == 2 else k,
                      nan_ref=int(np.isnan(r).sum()), inf_ref=int(np.isinf(r).sum()),
                      nan_test=int(np.isnan(t).sum()), inf_test=int(np.isinf(t).sum()))


# Per-precision default criteria (--criteria): (min SQNR dB, min top-1 agreement %) of B against A on inputs like
# the model's data. Justified in README "Default criteria": TensorRT's FP32 may run convolutions in TF32 (10-bit
# mantissa), FP16 has an 11-bit one, INT8 rounds to 256 levels; the digits-resnet figures measured here sit far
# above each bound, a wrong scale or a broken layer far below.
DEFAULT_CRITERIA = {"fp32": (40.0, 99.5), "fp16": (30.0, 99.0), "int8-fp16": (15.0, 97.0), "int8": (15.0, 97.0)}


def looser_precision(*precisions: str | None) -> str | None:
    """Of the sources' precisions, the one whose default criteria are the loosest (None if none is known)."""
    known = [p for p in precisions if p in DEFAULT_CRITERIA]
    return min(known, key=lambda p: DEFAULT_CRITERIA[p]) if known else None


@dataclass
class Tolerances:
    """Pass/fail criteria; unset ones are not checked. atol/rtol map an output name ('' = every output) to a value.

    `defaults` names the per-precision defaults that filled the unset SQNR and top-1 bounds (--criteria); their
    top-1 bound applies to classifier-shaped outputs only, where a user's own --min-top1-agreement applies to all.
    """

    atol: dict[str, float] = field(default_factory=dict)
    rtol: dict[str, float] = field(default_factory=dict)
    min_cosine: float | None = None
    min_sqnr: float | None = None
    min_top1_agreement: float | None = None
    defaults: str | None = None
    default_top1: bool = False

    @property
    def given(self) -> bool:
        return bool(self.atol or self.rtol) or any(v is not None for v in (self.min_cosine, self.min_sqnr,
                                                                            self.min_top1_agreement))

    def with_defaults(self, precision: str) -> Tolerances:
        """These criteria, the unset SQNR and top-1 bounds filled from `precision`'s defaults."""
        sqnr, top1 = DEFAULT_CRITERIA[precision]
        return Tolerances(self.atol, self.rtol, self.min_cosine, sqnr if self.min_sqnr is None else self.min_sqnr,
                          top1 if self.min_top1_agreement is None else self.min_top1_agreement, precision,
                          default_top1=self.min_top1_agreement is None)

    def describe(self) -> str:
        parts = [f"atol {k or 'every output'} {v:g}" for k, v in self.atol.items()]
        parts += [f"rtol {k or 'every output'} {v:g}" for k, v in self.rtol.items()]
        parts += [f"cosine >= {self.min_cosine:g}"] if self.min_cosine is not None else []
        parts += [f"SQNR >= {self.min_sqnr:g} dB"] if self.min_sqnr is not None else []
        parts += [f"top-1 agreement >= {self.min_top1_agreement:g} %"] if self.min_top1_agreement is not None else []
        return ", ".join(parts) + (f" ({self.defaults} defaults where not given)" if self.defaults else "")

    def check_outputs(self, names: list[str]) -> None:
        """Refuse a per-output tolerance that names no output: a typo must not drop the check."""
        for option, table in (("--atol", self.atol), ("--rtol", self.rtol)):
            unknown = [k for k in table if k and k not in names]
            if unknown:
                raise HarnessError(f"{option} {unknown[0]}={table[unknown[0]]:g}: no output is named {unknown[0]!r} "
                                   f"(the outputs: {', '.join(names)}); name one of them, or drop the name for every "
                                   "output")

    def per_output(self, table: dict[str, float], name: str) -> float | None:
        return table.get(name, table.get(""))

    def judge(self, d: OutputDiff, ref: np.ndarray, test: np.ndarray) -> None:
        """Fill d.failures: NaN/Inf the reference lacks always fails; each given tolerance as numpy.isclose; a
        given criterion with nothing to evaluate it on (no values) fails."""
        if ref.size == 0:
            if self.given:
                d.failures.append("no values to compare (0 inputs): the criteria cannot be evaluated")
            return
        if d.nan_test > d.nan_ref or d.inf_test > d.inf_ref:
            d.failures.append(f"{d.nan_test} NaN / {d.inf_test} Inf against the reference's {d.nan_ref} / "
                              f"{d.inf_ref}")
        if self.given and not (np.isfinite(ref) & np.isfinite(test)).any():
            d.failures.append("no finite values on both sides (every element NaN or Inf in A or B): the criteria "
                              "cannot be evaluated")
            return
        atol, rtol = self.per_output(self.atol, d.name), self.per_output(self.rtol, d.name)
        if atol is not None or rtol is not None:
            a, r = atol or 0.0, rtol or 0.0
            bad = ~np.isclose(test.astype(np.float64), ref.astype(np.float64), rtol=r, atol=a, equal_nan=True)
            if bad.any():
                d.failures.append(f"{int(bad.sum())} of {bad.size} elements off by more than atol {a:g} + rtol "
                                  f"{r:g} x |reference| (max abs error {d.max_abs:.3g})")
        if self.min_cosine is not None and not d.cosine >= self.min_cosine:
            d.failures.append(f"cosine similarity {d.cosine:.6f} < {self.min_cosine:g}")
        if self.min_sqnr is not None and not d.sqnr_db >= self.min_sqnr:
            d.failures.append(f"SQNR {d.sqnr_db:.2f} dB < {self.min_sqnr:g} dB")
        if self.min_top1_agreement is not None:
            if d.top1_agreement is None:
                if not self.default_top1:
                    d.failures.append("top-1 agreement asked for, but the output is not (samples, classes) with "
                                      "finite values")
            elif d.top1_agreement < self.min_top1_agreement:
                d.failures.append(f"top-1 agreement {d.top1_agreement:.2f} % < {self.min_top1_agreement:g} %")


def compare_outputs(a: Source, ref: dict, b: Source, test: dict, tolerances: Tolerances, k: int = 5,
                    ) -> list[tuple[OutputDiff, np.ndarray, np.ndarray]]:
    rows = []
    pairs = pair_outputs(a, ref, b, test)
    tolerances.check_outputs([name for name, _, _ in pairs])
    for name, r, t in pairs:
        d = diff(name, r, t, k)
        tolerances.judge(d, r, t)
        rows.append((d, r, t))
    return rows


def error_plot(rows: list[tuple[OutputDiff, np.ndarray, np.ndarray]], path: Path, labels: tuple[str, str]) -> Path:
    """|test - reference| against |reference|, one panel per output: where the error grows with magnitude
    (scale error) or sits flat (rounding noise) shows on a log-log plot."""
    from harness.fileio import atomic_write
    from harness.report.png import png, pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, len(rows), figsize=(5.5 * len(rows), 4.2), squeeze=False)
    for ax, (d, r, t) in zip(axes[0], rows, strict=True):
        r64, t64 = r.astype(np.float64).ravel(), t.astype(np.float64).ravel()
        keep = np.isfinite(r64) & np.isfinite(t64)
        floor = np.finfo(np.float32).tiny
        ax.scatter(np.abs(r64[keep]) + floor, np.abs(r64 - t64)[keep] + floor, s=3, alpha=0.4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"|reference| ({labels[0]})")
        ax.set_ylabel(f"|error| ({labels[1]})")
        ax.set_title(f"{d.name}: SQNR {d.sqnr_db:.1f} dB, cosine {d.cosine:.4f}", fontsize=9)
        ax.grid(alpha=0.3)
    return atomic_write(Path(path), png(fig))
