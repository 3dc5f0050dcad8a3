"""Run the cells of a sweep: shared work once, every finished cell stored at once, failures kept as rows.

Calibration and export are cached per model x precision x quantization request (harness.build.onnx_for),
engines per engine key (harness.build.build_artifact), accuracy per artifact hash and dataset (in process), so
cells that differ only in batch or backend reuse what their neighbours made.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from harness.backends.base import BuildOptions, Timing, get_backend
from harness.build import build_artifact, export_check, load_engine, onnx_for, prepare_seconds
from harness.data.datasets import SyntheticDataset, resolve_dataset
from harness.errors import HarnessError
from harness.fileio import machine_fault
from harness.measure.evaluate import evaluate, reference_outputs
from harness.measure.latency import latency_stats
from harness.sweep import environment
from harness.sweep.claims import CellClaims
from harness.sweep.experiment import Experiment
from harness.sweep.matrix import Cell, baseline_of, cell_id, quant_config, work_key
from harness.sweep.progress import Progress
from harness.sweep.store import ResultStore


def one_line(exc: BaseException) -> str:
    if isinstance(exc, HarnessError):
        return exc.message
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


@dataclass
class Workspace:
    """What the cells of one process share: backends, datasets, ONNX files and accuracy, each made once."""

    exp: Experiment
    engines_dir: Path
    store: ResultStore
    log: Callable[[str], None]
    env: dict = field(default_factory=environment.capture)
    memo: dict = field(default_factory=dict)

    def once(self, key: tuple, make: Callable):
        """make() once per key, its failure too: a broken shared step fails each of its cells at once."""
        if key not in self.memo:
            try:
                self.memo[key] = (make(), None)
            except Exception as exc:  # re-raised for every cell that needs this step
                self.memo[key] = (None, exc)
        value, exc = self.memo[key]
        if exc is not None:
            raise exc
        return value

    def backend(self, cell: Cell):
        """The cell's backend, or its failure before any export work: not installed here, or not offering the
        cell's precision."""
        backend = self.once(("backend", cell.backend), lambda: get_backend(cell.backend))
        if cell.precision not in backend.precisions:
            raise HarnessError(f"backend {cell.backend} does not run {cell.precision}: it offers "
                               f"{', '.join(backend.precisions)}")
        return backend

    def quantizer(self, cell: Cell) -> None:
        """A ModelOpt cell's failure before any work where the extra is not installed."""
        if cell.tool == "modelopt":
            from harness.export.modelopt_ptq import require_modelopt

            self.once(("quantizer", cell.tool), require_modelopt)

    def qdq_verdict(self, onnx: Path) -> dict:
        """What `harness inspect` says of a cell's Q/DQ ONNX, whichever tool placed the Q/DQ."""
        from harness.quantize.inspect_onnx import inspect_file

        def make():
            report = inspect_file(onnx)
            return {"qdq_hazards": report.hazard_count, "qdq_float_layers": len(report.weighted_float)}

        return self.once(("qdq", str(onnx)), make)

    def onnx_of(self, cell: Cell) -> tuple[Path, float | None]:
        """(verified ONNX, seconds calibration + export took when it was made).

        The seconds are kept in the cached ONNX's record, so a cache hit still reports what the work costs, as
        build_s does for engines.
        """
        spec, quant = self.exp.specs[cell.model], quant_config(self.exp, cell)
        quant_dict = quant.to_dict() if quant else None

        verify = self.exp.build["verify"]

        def make():
            path = onnx_for(spec, cell.precision, self.engines_dir, quant_dict, self.log, verify)
            return path, prepare_seconds(path)

        return self.once(("onnx", cell.model, cell.precision, str(quant)), make)

    def dataset(self, cell: Cell):
        return self.once(("dataset", cell.model, cell.dataset),
                         lambda: resolve_dataset(cell.dataset, self.exp.specs[cell.model]))

    def reference(self, cell: Cell):
        """FP32 PyTorch logits of the evaluation split, which every artifact of the model is scored against."""
        return self.once(("reference", cell.model, cell.dataset),
                         lambda: reference_outputs(self.dataset(cell), self.exp.evaluation["split"],
                                                   self.exp.build["max_batch"], self.exp.evaluation["limit"]))


def export_check_columns(onnx: Path) -> dict:
    """The export check's verdict and figures, as row columns."""
    check = export_check(onnx) or {}
    return {"export_check": check.get("level"), "export_check_sqnr_db": check.get("sqnr_db"),
            "export_check_fake_quant_sqnr_db": check.get("fake_quant_sqnr_db")}


def build_options(exp: Experiment, cell: Cell) -> BuildOptions:
    """One engine per cell batch (TensorRT tunes for the opt batch); every engine accepts 1..max_batch."""
    return BuildOptions(precision=cell.precision, batch_min=1, batch_opt=cell.batch,
                        batch_max=exp.build["max_batch"], workspace_mb=exp.build["workspace_mb"],
                        opt_level=exp.build["opt_level"])


def time_cell(runner, spec, batch: int, timing: dict) -> dict:
    """`repeats` timed runs pooled into one set of statistics; the spread of their p50s is the noise a
    comparison must allow for."""
    x = np.resize(SyntheticDataset(spec).take("val", 1)[0], (batch, *spec.input_shape)).astype(np.float32)
    runs = [runner.time(x, timing["warmup_s"], timing["iterations"], timing["duration_s"])
            for _ in range(timing["repeats"])]
    pooled = latency_stats(Timing(np.concatenate([t.latency_ms for t in runs]), sum(t.wall_s for t in runs),
                                  batch, runs[0].includes))
    p50s = [float(np.percentile(t.latency_ms, 50)) for t in runs]
    return {
        "latency_min_ms": pooled.latency_min_ms, "latency_mean_ms": pooled.latency_mean_ms,
        "latency_p50_ms": pooled.latency_p50_ms, "latency_p90_ms": pooled.latency_p90_ms,
        "latency_p99_ms": pooled.latency_p99_ms, "latency_cv": pooled.latency_cv,
        "latency_p50_lo_ms": min(p50s), "latency_p50_hi_ms": max(p50s),
        "latency_spread_pct": 100.0 * (max(p50s) - min(p50s)) / pooled.latency_p50_ms,
        "repeats": len(runs), "throughput_ips": pooled.throughput_ips, "timing_includes": pooled.includes,
    }


def _layers(ws: Workspace, runner, cid: str) -> dict:
    """Per-layer precisions where the backend can inspect its engine (TensorRT), saved beside the rows."""
    info = getattr(runner, "engine_information", None)
    if info is None:
        return {}
    from harness.backends.tensorrt.inspector import layer_table

    table = layer_table(info())
    rel = Path("layers") / f"{cid}.csv"
    (ws.store.root / rel).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(ws.store.root / rel, index=False)
    first = table["input_precision"].str.split("/").str[0]
    counts = {f"layers_{p.lower()}": int((first == p).sum()) for p in ("INT8", "FP16", "FP32")}
    return {"layer_table": str(rel), "layers_total": len(table), **counts}


def run_cell(ws: Workspace, cell: Cell) -> dict:
    """Every stage of one cell; an exception becomes the row's status, error and failed stage."""
    exp, spec = ws.exp, ws.exp.specs[cell.model]
    row = {"cell_id": cell_id(exp, cell), "baseline_id": cell_id(exp, baseline_of(exp, cell)),
           "experiment": exp.name, **cell.settings(), "status": "ok", "error": None, "failed_stage": None}
    start, stage, runner = time.perf_counter(), "backend", None
    try:
        backend = ws.backend(cell)
        onnx = None
        if not hasattr(backend, "build_from_spec"):  # backends that run the PyTorch model need no export
            stage = "calibrate+export"
            ws.quantizer(cell)
            onnx, prepare_s = ws.onnx_of(cell)
            row.update(onnx=str(onnx), export_s=prepare_s,
                       calib_s=prepare_s if quant_config(exp, cell) else None, **export_check_columns(onnx))
        stage = "build"
        quant = quant_config(exp, cell)
        meta, hit = build_artifact(spec, cell.backend, build_options(exp, cell), ws.engines_dir,
                                   quant.to_dict() if quant else None, onnx, ws.log, exp.build["verify"])
        row.update(engine=meta.artifact, engine_size_mb=meta.artifact_bytes / 1e6, build_s=meta.build_s,
                   engine_cache_hit=hit)
        stage = "load"
        meta, runner = load_engine(Path(meta.artifact))
        stage = "time"
        row.update(time_cell(runner, spec, cell.batch, exp.timing))
        stage = "evaluate"
        acc = ws.once(("accuracy", meta.artifact_sha256, cell.dataset),
                      lambda: evaluate(runner, ws.dataset(cell), exp.evaluation["split"],
                                       (meta.batch[0], meta.batch[2]), exp.evaluation["limit"],
                                       ws.reference(cell)))
        row.update(top1_pct=acc.top1, top5_pct=acc.top5, top1_agreement_pct=acc.top1_agreement,
                   sqnr_db=acc.sqnr_db, max_abs_error=acc.max_abs_error, eval_samples=acc.samples,
                   reference_degenerate=acc.reference_degenerate)
        stage = "inspect"
        if onnx is not None and cell.tool is not None:
            row.update(ws.qdq_verdict(onnx))
        row.update(_layers(ws, runner, row["cell_id"]))
    except Exception as exc:  # one broken cell must not end the sweep: it becomes a row
        fault = machine_fault(exc)
        if fault:  # not a result of the cell: no row, so a re-run retries it
            raise HarnessError(f"sweep stopped at {cell.label()} ({stage}): {fault}; nothing was stored for this "
                               "cell: free space or fix permissions, then re-run") from exc
        row.update(status="failed", error=one_line(exc), failed_stage=stage)
    finally:
        close = getattr(runner, "close", None)
        if close:
            close()
    row["cell_s"] = round(time.perf_counter() - start, 3)
    row["finished_utc"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    row.update(ws.env)
    return row


@dataclass
class SweepResult:
    ran: int
    failed: int
    skipped: int
    table: Path | None


def execution_order(cells: list[Cell]) -> list[Cell]:
    """Cells that share calibration and export run back to back, in matrix order of their first member."""
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(work_key(cell), []).append(cell)
    return [c for group in groups.values() for c in group]


def run_sweep(ws: Workspace, cells: list[Cell], matrix: list[Cell], retry_failed: bool = False) -> SweepResult:
    """Run `cells` (this shard's), skipping the finished; the tables cover every finished cell of `matrix`."""
    exp = ws.exp
    order = [cell_id(exp, c) for c in matrix]
    rows = ws.store.rows()
    done = {i for i, r in rows.items() if r.get("status") == "ok" or not retry_failed}
    todo = [c for c in execution_order(cells) if cell_id(exp, c) not in done]
    skipped = len(cells) - len(todo)
    if skipped:
        ws.log(f"skipped {skipped} finished cell(s) already in {ws.store.cells}")
    table = ws.store.write_tables(order)
    progress = Progress(len(todo), ws.log)
    failed = ran = 0
    for cell in CellClaims(ws.store.root, ws.log).take(todo, lambda c: cell_id(exp, c)):
        ran += 1
        row = run_cell(ws, cell)
        ws.store.write(row)
        table = ws.store.write_tables(order)
        failed += row["status"] != "ok"
        progress.finished(cell.label(), row["status"], row["cell_s"])
        if row["error"]:
            ws.log(f"    {row['failed_stage']}: {row['error']}")
    if ran < len(todo):  # another process stored some of them
        table = ws.store.write_tables(order)
    return SweepResult(ran, failed, len(cells) - ran, table)
