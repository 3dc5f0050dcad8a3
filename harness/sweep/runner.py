"""Run the cells of a sweep: shared work once, every finished cell stored at once, failures kept as rows.

Calibration and export are cached per model x precision x quantization request (harness.build.onnx_for),
engines per engine key (harness.build.build_artifact), accuracy per artifact hash and dataset (in process), so
cells that differ only in batch or backend reuse what their neighbours made. An artifact is opened once per
process (its ONNX Runtime session serves the build check, the timing and the evaluation), and the results
tables are rewritten every TABLE_EVERY_S seconds and at the end, not after every cell: each row is already on
disk in the cell store the moment its cell finishes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from harness import cache_integrity
from harness.backends.base import BuildOptions, Timing
from harness.build import (
    backend_for,
    build_artifact,
    export_check,
    load_engine,
    onnx_cache_path,
    onnx_for,
    prepare_seconds,
)
from harness.data.datasets import SyntheticDataset, resolve_dataset
from harness.errors import HarnessError, MachineFault, MissingDependency
from harness.fileio import atomic_write, machine_fault
from harness.measure.energy import EnergyMeter, closed_loop_energy
from harness.measure.evaluate import check_deployed, evaluate_outputs, reference_outputs
from harness.measure.latency import latency_stats
from harness.measure.loadgen import CLOSED_LOOP
from harness.measure.samples import write_samples
from harness.measure.serving import library_for
from harness.measure.stability import StopRule, judge, load_average, time_until_stable
from harness.sweep import environment
from harness.sweep.claims import CellClaims
from harness.sweep.experiment import Experiment
from harness.sweep.matrix import Cell, baseline_of, cell_id, quant_config, work_key
from harness.sweep.progress import Progress, cell_kinds
from harness.sweep.scenario_cell import measure_cell
from harness.sweep.store import ResultStore

CELL_FIELDS = [f.name for f in fields(Cell)]
TABLE_EVERY_S = 20.0
HOLD_BYTES = 512e6  # artifacts opened for interleaved timing stay open for their evaluation up to this much in all


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
    timed: dict = field(default_factory=dict)  # cell id -> timing columns measured ahead (timing.interleave)
    held: dict = field(default_factory=dict)  # cell id -> (runner, artifact bytes) kept open after interleaved timing
    built: set = field(default_factory=set)  # cell ids whose build step progress has counted
    progress: Progress | None = None  # where this process runs the cells' steps, they are reported here

    def step(self, phase: str, seconds: float | None, what: str | None = None) -> None:
        if self.progress is not None:
            self.progress.step(phase, seconds, what)

    def cpu_session(self, cell: Cell) -> dict | None:
        """ONNX Runtime's thread count and spin-waiting for a CPU cell (harness.backends.cpu_threads)."""
        if cell.backend != "cpu":
            return None
        from harness.backends.cpu_threads import session_settings

        return session_settings(cell.batch, self.exp.timing["threads"], self.exp.timing["spin_wait"])

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
        backend = self.once(("backend", cell.backend),
                            lambda: backend_for(cell.backend, self.exp.timing["cuda_binding"]))
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
            start = time.perf_counter()
            cached = cache_integrity.check(onnx_cache_path(spec, cell.precision, self.engines_dir, quant_dict,
                                                           verify)) is not None
            path = onnx_for(spec, cell.precision, self.engines_dir, quant_dict, self.log, verify)
            what = f"{cell.model} {cell.precision}" + (f" {cell.mode}/{cell.calibrator}" if cell.mode else "")
            self.step("export", None if cached else time.perf_counter() - start, None if cached else what)
            return path, prepare_seconds(path)

        return self.once(("onnx", cell.model, cell.precision, str(quant)), make)

    def dataset(self, cell: Cell):
        return self.once(("dataset", cell.model, cell.dataset),
                         lambda: resolve_dataset(cell.dataset, self.exp.specs[cell.model]))

    def reference(self, cell: Cell):
        """FP32 PyTorch logits of the evaluation split, which every artifact of the model is scored against."""
        def make():
            start = time.perf_counter()
            out = reference_outputs(self.dataset(cell), self.exp.evaluation["split"], self.exp.build["max_batch"],
                                    self.exp.evaluation["limit"])
            self.step("reference", time.perf_counter() - start)
            return out

        return self.once(("reference", cell.model, cell.dataset), make)


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


def cell_input(spec, batch: int) -> np.ndarray:
    return np.resize(SyntheticDataset(spec).take("val", 1)[0], (batch, *spec.input_shape)).astype(np.float32)


def time_cell(ws: Workspace, cell: Cell, runners: dict, labels: dict[str, str] | None = None) -> dict[str, dict]:
    """Time each runner (cell id -> runner of `cell`'s model and batch; several only for `timing.interleave`)
    until its median is stable, repeats alternating between runners; cell id -> row columns. The raw
    per-query latencies go to samples/<cell id>.parquet for `report compare`; the GPU's clocks, power and
    throttling (NVML) are watched throughout."""
    from harness.measure.gpu_state import GpuMonitor

    timing, spec = ws.exp.timing, ws.exp.specs[cell.model]
    x = cell_input(spec, cell.batch)
    rule = StopRule.of(timing, cell.backend)
    load_before = load_average()
    labels = labels or dict.fromkeys(runners, cell.label())

    def report(cid: str, runs: list[Timing], spent_s: float) -> None:
        verdict = judge([t.latency_ms for t in runs], rule.target_pct, rule.min_repeats)
        ws.step("time", spent_s, f"{labels[cid]}: p50 {verdict.p50_ms:.3g} ms ±{verdict.half_width_pct:.1f} %, "
                f"{len(runs)} repeats, " + ("stable" if verdict.stable else "UNSTABLE"))

    on_gpu = any(getattr(r, "on_gpu", False) for r in runners.values())
    with GpuMonitor(enabled=on_gpu) as gpu, EnergyMeter(on_gpu) as meter:
        runs = time_until_stable(
            {cid: (lambda seconds, first, r=r: r.time(x, timing["warmup_s"] if first else 0.0, timing["iterations"],
                                                      seconds))
             for cid, r in runners.items()},
            dict.fromkeys(runners, rule), on_done=report)
    extra = {"load_avg_before": load_before, "load_avg_after": load_average(), **gpu.columns()}
    columns = {cid: timing_columns(timed, cell.batch, rule, extra, ws.cpu_session(cell)) for cid, timed in runs.items()}
    return {cid: {**columns[cid], **extra, **closed_loop_energy(meter, columns[cid]["throughput_ips"], len(runs)),
                  "samples_file": write_samples(ws.store.root, cid, [t.latency_ms for t in timed])}
            for cid, timed in runs.items()}


def contention(session: dict | None, loads: list) -> str | None:
    """Why a multi-threaded CPU cell may wobble: its threads share the cores with other work (the load average
    counts this process's own threads too)."""
    loads = [v for v in loads if v is not None]
    if not session or session["threads"] < 2 or not loads:
        return None
    others = max(loads) - session["threads"]
    if others < 0.5:
        return None
    return (f"contention: its {session['threads']} intra-op threads share {os.cpu_count()} cores with other "
            f"processes (load {max(loads):.1f}), so a query waits for whichever is preempted (timing.threads 1 "
            "avoids that)")


def timing_columns(runs: list[Timing], batch: int, rule: StopRule, extra: dict | None = None,
                   session: dict | None = None) -> dict:
    """Pooled percentiles, the median's interval, the drift between repeats and the verdict with its reason."""
    pooled = latency_stats(Timing(np.concatenate([t.latency_ms for t in runs]), sum(t.wall_s for t in runs),
                                  batch, runs[0].includes))
    verdict = judge([t.latency_ms for t in runs], rule.target_pct, rule.min_repeats).columns()
    why = None if verdict["stable"] else contention(session, [(extra or {}).get("load_avg_before"),
                                                               (extra or {}).get("load_avg_after")])
    if why:
        verdict["unstable_reason"] += f"; {why}"
    p50s = [float(np.percentile(t.latency_ms, 50)) for t in runs]
    return {
        "latency_min_ms": pooled.latency_min_ms, "latency_mean_ms": pooled.latency_mean_ms,
        "latency_p50_ms": pooled.latency_p50_ms, "latency_p90_ms": pooled.latency_p90_ms,
        "latency_p99_ms": pooled.latency_p99_ms, "latency_cv": pooled.latency_cv, **verdict,
        "latency_spread_pct": 100.0 * (max(p50s) - min(p50s)) / pooled.latency_p50_ms,
        "repeats": len(runs), "latency_samples": pooled.iterations, "throughput_ips": pooled.throughput_ips,
        "timing_includes": pooled.includes, "timing_convention": runs[0].convention or None,
        "gpu_compute_p50_ms": (float(np.median(np.concatenate([t.components["gpu_compute_ms"] for t in runs])))
                               if "gpu_compute_ms" in runs[0].components else None),
    }


def _profile(ws: Workspace, runner, spec, row: dict) -> dict:
    """timing.profile: after the timed runs, a separate profiled run (TensorRT); its files beside the rows."""
    if not hasattr(runner, "layer_times"):
        return {}
    from harness.backends.tensorrt import profile as prof

    table = prof.profile_table(runner.layer_times(cell_input(spec, row["batch"])), runner.engine_information())
    rel = Path("profiles") / row["cell_id"]
    prof.write(table, ws.store.root / rel.parent, rel.name)
    return {"profile_table": str(rel.parent / f"{rel.name}.profile.csv"),
            **prof.summary(table, row.get("gpu_compute_p50_ms"))}


def _layers(ws: Workspace, runner, cid: str, onnx: Path | None = None) -> dict:
    """Per-layer precisions where the backend can inspect its engine (TensorRT), saved beside the rows; with the
    cell's Q/DQ ONNX, each layer's intended precision too."""
    info = getattr(runner, "engine_information", None)
    if info is None:
        return {}
    from harness.backends.tensorrt.inspector import layer_table, planned

    table = layer_table(info(), planned(onnx) if onnx is not None else None)
    rel = Path("layers") / f"{cid}.csv"
    atomic_write(ws.store.root / rel, lambda tmp: table.to_csv(tmp, index=False))
    first = table["input_precision"].str.split("/").str[0]
    counts = {f"layers_{p.lower()}": int((first == p).sum()) for p in ("INT8", "FP8", "FP16", "BF16", "FP32")}
    return {"layer_table": str(rel), "layers_total": len(table), **counts}


def row_head(exp: Experiment, cell: Cell) -> dict:
    """The columns every row of a cell has, whatever happened to it."""
    return {"cell_id": cell_id(exp, cell), "baseline_id": cell_id(exp, baseline_of(exp, cell)),
            "experiment": exp.name, **cell.settings(), "status": "ok", "error": None, "failed_stage": None,
            "missing_extra": None}


def lost_row(exp: Experiment, cell: Cell, stage: str, error: str) -> dict:
    """The failed row of a cell whose worker never returned one (it died past its retries, or its job failed)."""
    return {**row_head(exp, cell), "status": "failed", "error": error, "failed_stage": stage, "cell_s": None,
            "finished_utc": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}


def open_artifact(ws: Workspace, cell: Cell, row: dict, runner=None):
    """Export, build and load the cell's artifact (unless `runner` already holds it open), recording figures in
    `row`; row["failed_stage"] names the stage in progress, so a failure is reported where it happened. Returns
    (artifact metadata, runner, ONNX)."""
    exp, spec = ws.exp, ws.exp.specs[cell.model]
    row["failed_stage"] = "backend"
    backend = ws.backend(cell)
    onnx = None
    if not hasattr(backend, "build_from_spec"):  # backends that run the PyTorch model need no export
        row["failed_stage"] = "calibrate+export"
        ws.quantizer(cell)
        onnx, prepare_s = ws.onnx_of(cell)
        row.update(onnx=str(onnx), export_s=prepare_s,
                   calib_s=prepare_s if quant_config(exp, cell) else None, **export_check_columns(onnx))
    row["failed_stage"] = "build"
    quant = quant_config(exp, cell)
    session = ws.cpu_session(cell)
    start = time.perf_counter()
    meta, hit = build_artifact(spec, cell.backend, build_options(exp, cell), ws.engines_dir,
                               quant.to_dict() if quant else None, onnx, ws.log, exp.build["verify"],
                               exp.timing["cuda_binding"], session)
    if cell_id(exp, cell) not in ws.built:  # interleaved timing opens a cell's artifact before run_cell does
        ws.built.add(cell_id(exp, cell))
        ws.step("build", None if hit else time.perf_counter() - start)
    row.update(engine=meta.artifact, engine_size_mb=meta.artifact_bytes / 1e6, build_s=meta.build_s,
               engine_cache_hit=hit)
    if session:  # what a deployment sets to get these figures (harness.backends.cpu_threads)
        row.update(cpu_threads=session["threads"], cpu_spin_wait=session["spin_wait"])
    row["failed_stage"] = "load"
    if runner is None:
        meta, runner = load_engine(Path(meta.artifact), exp.timing["cuda_binding"], session)
    row["cuda_binding"] = getattr(runner, "cuda_binding", None)
    return meta, runner, onnx


def close(runner) -> None:
    closer = getattr(runner, "close", None)
    if closer:
        closer()


def accuracy_of(ws: Workspace, cell: Cell, runner, batch: tuple[int, int]):
    """(accuracy of the file as written, check of the timed session where it differs (ONNX Runtime's fused
    integer kernels), with a warning in the log when they disagree on this CPU)."""
    split, limit, data, reference = ws.exp.evaluation["split"], ws.exp.evaluation["limit"], ws.dataset(cell), \
        ws.reference(cell)
    acc, logits, reference = evaluate_outputs(runner, data, split, batch, limit, reference)
    deployed = check_deployed(runner, data, split, batch, logits, reference)
    if deployed and deployed.warning():
        ws.log(f"    warning: {cell.label()}: {deployed.warning()}")
    return acc, deployed


def run_cell(ws: Workspace, cell: Cell) -> dict:
    """Every stage of one cell; an exception becomes the row's status, error and failed stage."""
    exp, spec = ws.exp, ws.exp.specs[cell.model]
    row = row_head(exp, cell)
    cid = row["cell_id"]
    start, (runner, _) = time.perf_counter(), ws.held.pop(cid, (None, 0))
    if ws.progress is not None:
        ws.progress.begin_cell()
    try:
        meta, runner, onnx = open_artifact(ws, cell, row, runner)
        row["failed_stage"] = "time"
        cid = row["cell_id"]
        if cell.scenario == CLOSED_LOOP:
            row.update(ws.timed.pop(cid, None) or time_cell(ws, cell, {cid: runner})[cid])
        else:
            library = ws.once(("library", cell.model), lambda: library_for(spec))
            row.update(measure_cell(ws.store.root, cid, cell, runner, library, exp, ws.log))
        if exp.timing["profile"]:
            row["failed_stage"] = "profile"
            row.update(_profile(ws, runner, spec, row))
        row["failed_stage"] = "evaluate"
        took = []

        def score():
            begin = time.perf_counter()
            result = accuracy_of(ws, cell, runner, (meta.batch[0], meta.batch[2]))
            took.append(time.perf_counter() - begin)
            return result

        acc, deployed = ws.once(("accuracy", meta.artifact_sha256, cell.dataset), score)
        ws.step("evaluate", took[0] if took else None)
        row.update(top1_pct=acc.top1, top5_pct=acc.top5, top1_agreement_pct=acc.top1_agreement,
                   sqnr_db=acc.sqnr_db, max_abs_error=acc.max_abs_error, eval_samples=acc.samples,
                   reference_degenerate=acc.reference_degenerate, labels_unusable=acc.labels_unusable,
                   **(deployed.columns() if deployed else {}))
        row["failed_stage"] = "inspect"
        if onnx is not None and cell.tool is not None:
            row.update(ws.qdq_verdict(onnx))
        row.update(_layers(ws, runner, row["cell_id"], onnx if cell.tool is not None else None))
        row["failed_stage"] = None
    except Exception as exc:  # one broken cell must not end the sweep: it becomes a row
        fault = machine_fault(exc)
        if fault:  # not a result of the cell: no row, so a re-run retries it
            raise MachineFault(f"sweep stopped at {cell.label()} ({row['failed_stage']}): {fault}; nothing was "
                               "stored for this cell: fix that, then re-run (finished cells are kept)") from exc
        row.update(status="failed", error=one_line(exc),
                   missing_extra=exc.extra if isinstance(exc, MissingDependency) else None)
    finally:
        close(runner)
    row["cell_s"] = round(time.perf_counter() - start, 3)
    row["finished_utc"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    row.update(ws.env)
    return row


def time_interleaved(ws: Workspace, cells: list[Cell]) -> None:
    """`timing.interleave`: time the cells of each model, backend and batch together, one repeat of each in
    turn, into ws.timed; a cell whose artifact cannot be opened is left for run_cell to fail with its stage.
    Their runners stay open for run_cell's evaluation (ws.held) while the artifacts held total HOLD_BYTES."""
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.model, cell.backend, cell.batch), []).append(cell)
    for (model, backend, batch), group in groups.items():
        if len(group) < 2:
            continue
        ws.log(f"timing {len(group)} cells of {model} on {backend}, batch {batch}, interleaved")
        runners, sizes, labels = {}, {}, {}
        try:
            for cell in group:
                try:
                    meta, runner, _ = open_artifact(ws, cell, {})
                except Exception:  # run_cell reports it with its stage
                    continue
                cid = cell_id(ws.exp, cell)
                runners[cid], sizes[cid], labels[cid] = runner, meta.artifact_bytes, cell.label()
            ws.timed.update(time_cell(ws, group[0], runners, labels) if runners else {})
        except Exception as exc:  # the cells are then timed one by one, where a failure becomes their row
            ws.log(f"interleaved timing failed ({one_line(exc)}); timing these cells one by one")
        finally:
            held = sum(size for _, size in ws.held.values())
            for cid, runner in runners.items():
                if cid in ws.timed and held + sizes[cid] <= HOLD_BYTES:
                    ws.held[cid] = (runner, sizes[cid])
                    held += sizes[cid]
                else:
                    close(runner)


@dataclass
class SweepResult:
    ran: int
    failed: int
    skipped: int
    table: Path | None


def work_groups(cells: list[Cell]) -> list[list[Cell]]:
    """Cells that share calibration and export, in matrix order of their first member: the unit an executor
    hands to one worker, so the shared work is done once."""
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(work_key(cell), []).append(cell)
    return list(groups.values())


def execution_order(cells: list[Cell]) -> list[Cell]:
    """Cells that share calibration and export run back to back, in matrix order of their first member."""
    return [c for group in work_groups(cells) for c in group]


def run_group(ws: Workspace, cells: list[Cell]) -> Iterator[dict]:
    """The rows of one work group's cells, each as soon as it finishes."""
    for cell in cells:
        yield run_cell(ws, cell)


def run_local(ws: Workspace, groups: list[list[Cell]]) -> Iterator[dict]:
    """The default executor: every group in this process, one after another. Each cell is claimed first, so a
    second `harness sweep` on the same folder takes other cells instead of running (and timing) the same ones."""
    cells = [cell for group in groups for cell in group]
    for cell in CellClaims(ws.store.root, ws.log).take(cells, lambda c: cell_id(ws.exp, c)):
        yield run_cell(ws, cell)


def run_sweep(ws: Workspace, cells: list[Cell], matrix: list[Cell], retry_failed: bool = False,
              executor: Callable[[Workspace, list[list[Cell]]], Iterator[dict]] = run_local) -> SweepResult:
    """Run `cells` (this shard's), skipping the finished; the tables cover every finished cell of `matrix`.

    `executor` turns work groups into rows, in any order; each row is stored the moment it arrives.
    """
    exp = ws.exp
    order = [cell_id(exp, c) for c in matrix]
    rows = ws.store.rows()
    done = {i for i, r in rows.items() if r.get("status") == "ok" or not retry_failed}
    todo = [c for c in execution_order(cells) if cell_id(exp, c) not in done]
    skipped = len(cells) - len(todo)
    if skipped:
        ws.log(f"skipped {skipped} finished cell(s) already in {ws.store.cells}")
    table = ws.store.write_tables(order)
    kinds = dict(zip((cell_id(exp, c) for c in todo), cell_kinds(todo), strict=True))
    local = executor is run_local
    progress = Progress(list(kinds.values()), ws.log, phases(exp, todo) if local else None)
    ws.progress = progress if local else None
    if exp.timing["interleave"] and local:  # workers elsewhere time their own cells
        time_interleaved(ws, [c for c in todo if c.scenario == CLOSED_LOOP])
    failed = ran = 0
    written = time.perf_counter()
    for row in executor(ws, work_groups(todo)):
        ran += 1
        ws.store.write(row)  # the row is safe from here on; the tables are derived from the stored rows
        if time.perf_counter() - written >= TABLE_EVERY_S:
            table, written = ws.store.write_tables(order), time.perf_counter()
        failed += row["status"] != "ok"
        progress.finished(Cell(**{k: row[k] for k in CELL_FIELDS}).label(), row["status"], row["cell_s"] or 0.0,
                          kinds[row["cell_id"]])
        if row["error"]:
            ws.log(f"    {row['failed_stage']}: {row['error']}")
    for runner, _ in ws.held.values():  # cells another process took
        close(runner)
    ws.held.clear()
    if todo:
        table = ws.store.write_tables(order)
    return SweepResult(ran, failed, len(cells) - ran, table)


def phases(exp: Experiment, todo: list[Cell]) -> dict[str, tuple[int, float]]:
    """The steps the cells left will take, and what one is expected to cost until one is measured: a calibration
    + export per distinct ONNX, a build, a timing (its budget's likely share) and an evaluation per cell, an FP32
    reference per model and dataset."""
    exports = {(c.model, c.precision, str(quant_config(exp, c))) for c in todo if c.backend != "torch"}
    timing = exp.timing
    per_cell = min(timing["max_s"], timing["repeats"] * (timing["warmup_s"] + timing["duration_s"]))
    build = 30.0 if any(c.backend == "tensorrt" for c in todo) else 0.2
    references = {(c.model, c.dataset) for c in todo}
    return {"export": (len(exports), 3.0), "build": (len(todo), build), "time": (len(todo), per_cell),
            "reference": (len(references), 2.0), "evaluate": (len(todo), 1.0)}
