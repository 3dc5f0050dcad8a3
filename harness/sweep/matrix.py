"""Expand an experiment into cells, give each a content-hashed id, and split the cells into shards."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, replace

from harness.backends.base import quantized_type
from harness.build import sha256_json
from harness.errors import HarnessError
from harness.measure.loadgen import CLOSED_LOOP
from harness.quantize.config import QuantConfig, offered_calibrators
from harness.sweep.experiment import LATER_TIMING_KEYS, QUANTIZED, SCENARIO_KEYS, SECTIONS, Experiment


@dataclass(frozen=True)
class Cell:
    """One point of the matrix; tool, mode and calibrator are None for unquantized precisions, mode for ModelOpt
    (it places Q/DQ itself)."""

    model: str
    dataset: str
    backend: str
    precision: str
    tool: str | None
    mode: str | None
    calibrator: str | None
    batch: int
    scenario: str = CLOSED_LOOP  # how it is measured: harness's timed loop, a LoadGen scenario, or concurrency

    def settings(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        quant = f" {self.mode or self.tool}/{self.calibrator}" if self.tool else ""
        how = "" if self.scenario == CLOSED_LOOP else f" {self.scenario}"
        return f"{self.model} {self.dataset} {self.backend} {self.precision}{quant} b{self.batch}{how}"


def quant_config(exp: Experiment, cell: Cell) -> QuantConfig | None:
    if cell.precision not in QUANTIZED:
        return None
    q = exp.quantization
    return QuantConfig(tool=cell.tool, mode=cell.mode, calib=cell.calibrator, percentile=float(q["percentile"]),
                       calib_batches=q["calib_batches"], calib_batch_size=q["calib_batch_size"],
                       dataset=cell.dataset, quantize_head=q["quantize_head"],
                       quantize_attention_matmul=q["quantize_attention_matmul"],
                       dtype=quantized_type(cell.precision))


def cell_id(exp: Experiment, cell: Cell) -> str:
    """Hash of everything that shapes the cell's result, so shards and resumed runs name it alike."""
    quant = quant_config(exp, cell)
    # Timing keys added after the first release count only when set, so stored results keep their ids.
    timing = {k: v for k, v in exp.timing.items() if k not in LATER_TIMING_KEYS or v != SECTIONS["timing"][k]}
    # Closed-loop cells hash as they did before scenarios existed; the others with the settings of their scenario.
    settings, extra = cell.settings(), {}
    if settings.pop("scenario") != CLOSED_LOOP:
        settings["scenario"] = cell.scenario
        extra["scenario"] = {k: exp.scenario[k] for k in SCENARIO_KEYS[cell.scenario]}
    return sha256_json({"cell": settings, "model": exp.specs[cell.model].to_dict(),
                        "quant": quant.to_dict() if quant else None, "timing": timing,
                        "evaluation": exp.evaluation, "build": exp.build, **extra})[:16]


def _cells(exp: Experiment, axes: dict[str, list]) -> list[Cell]:
    """The product of the axes; quantized precisions also take every tool with its modes x calibrators (pq: all
    of them, for FP8 those that apply to FP8; modelopt: no mode, the calibrators it offers), others none."""
    cells = []
    for model, dataset, backend, precision, batch, scenario in itertools.product(
        axes["model"], axes["dataset"], axes["backend"], axes["precision"], axes["batch"], axes["scenario"]
    ):
        if precision not in QUANTIZED:
            cells.append(Cell(model, dataset, backend, precision, None, None, None, batch, scenario))
            continue
        for tool in axes["tool"]:
            modes = [None] if tool == "modelopt" else axes["mode"]
            offered = offered_calibrators(tool, quantized_type(precision))
            calibrators = [c for c in axes["calibrator"] if c in offered]
            for mode, calibrator in itertools.product(modes, calibrators):
                cells.append(Cell(model, dataset, backend, precision, tool, mode, calibrator, batch, scenario))
    return cells


def _matches(cell: Cell, rule: dict) -> bool:
    return all(getattr(cell, key) in values for key, values in rule.items())


def expand(exp: Experiment) -> list[Cell]:
    """Axes product minus `exclude`, plus `include` slices (each a sub-matrix over the keys it leaves out)."""
    axes = {"model": exp.models, "dataset": exp.datasets, "backend": exp.backends, "precision": exp.precisions,
            "batch": exp.batch_sizes, "tool": exp.quantization["tools"], "mode": exp.quantization["modes"],
            "calibrator": exp.quantization["calibrators"], "scenario": exp.scenarios}
    cells = [c for c in _cells(exp, axes) if not any(_matches(c, rule) for rule in exp.exclude)]
    for rule in exp.include:
        implied = {"tool": ["pq"]} if "mode" in rule else {}  # modes are pq's: a rule naming one adds pq cells
        cells += _cells(exp, {**axes, **implied, **rule})
    return list(dict.fromkeys(cells))


def baseline_of(exp: Experiment, cell: Cell) -> Cell:
    """The cell this one is compared against: itself with the experiment's baseline keys substituted."""
    base = replace(cell, **exp.baseline)
    if base.precision not in QUANTIZED:
        return replace(base, tool=None, mode=None, calibrator=None)
    if base.tool is None or ("mode" in exp.baseline and "tool" not in exp.baseline):  # modes are pq's
        base = replace(base, tool="pq")
    return replace(base, mode=None) if base.tool == "modelopt" else base


def check_baseline(exp: Experiment, cells: list[Cell]) -> None:
    if not cells:
        raise HarnessError(f"{exp.path}: the matrix is empty: the exclude rules remove every cell of the axes"
                           f"{' and include adds none' if exp.include else ''}; remove an exclude rule or add values "
                           "to an axis")
    present = set(cells)
    if not any(baseline_of(exp, c) in present for c in cells):
        wanted = ", ".join(f"{k}: {v}" for k, v in exp.baseline.items())
        raise HarnessError(f"{exp.path}: baseline: {{{wanted}}} matches no cell of the matrix; add it to the "
                           "matrix or change the baseline")


def parse_shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        k = n = 0
    if not 1 <= k <= n:
        raise HarnessError(f"--shard {text!r} must be K/N with 1 <= K <= N, like 1/4")
    return k, n


def work_key(cell: Cell) -> tuple:
    """Cells with the same work key share calibration and export, so they stay on one shard."""
    return cell.model, cell.dataset, cell.precision, cell.tool, cell.mode, cell.calibrator


def shard(cells: list[Cell], k: int, n: int) -> list[Cell]:
    """Whole work groups go, largest first, to the least loaded shard: every runner computes the same split.
    More shards than cells is refused: the extra ones would run nothing."""
    if n > len(cells):
        raise HarnessError(f"--shard {k}/{n}: the matrix has {len(cells)} cell(s), so at most {len(cells)} "
                           "shard(s)")
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(work_key(cell), []).append(cell)
    load = [0] * n
    mine = set()
    for key in sorted(groups, key=lambda g: (-len(groups[g]), str(g))):
        target = min(range(n), key=lambda i: (load[i], i))
        load[target] += len(groups[key])
        if target == k - 1:
            mine.update(groups[key])
    return [c for c in cells if c in mine]

