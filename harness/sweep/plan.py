"""What a sweep would do, without doing it: each cell's stored result and the caches it would hit."""

from __future__ import annotations

from dataclasses import dataclass

from harness import cache_integrity
from harness.build import cached_engine, onnx_cache_path
from harness.sweep.matrix import Cell, cell_id, quant_config
from harness.sweep.runner import Workspace, build_options, execution_order, one_line


@dataclass
class Planned:
    cell: Cell
    cell_id: str
    result: str  # done | failed | to run
    onnx: str  # hit | miss | shared (made by an earlier cell of this run)
    engine: str  # hit | miss | the reason the backend cannot run here


def plan(ws: Workspace, cells: list[Cell], retry_failed: bool = False) -> list[Planned]:
    rows = ws.store.rows()
    made: set = set()
    out = []
    for cell in execution_order(cells):
        cid = cell_id(ws.exp, cell)
        status = rows.get(cid, {}).get("status")
        result = "to run" if status is None or (status != "ok" and retry_failed) else (
            "done" if status == "ok" else "failed")
        spec, quant = ws.exp.specs[cell.model], quant_config(ws.exp, cell)
        try:
            from_spec = hasattr(ws.backend(cell), "build_from_spec")
            ws.quantizer(cell)
        except Exception as exc:  # the same reason run_cell would record
            out.append(Planned(cell, cid, result, "-", f"cannot run: {one_line(exc)}"))
            continue
        onnx_path = onnx_cache_path(spec, "fp32" if from_spec else cell.precision, ws.engines_dir,
                                    None if from_spec or not quant else quant.to_dict())
        onnx = "hit" if cache_integrity.check(onnx_path) is not None else ("shared" if onnx_path in made else "miss")
        made.add(onnx_path)
        engine = "miss"
        if onnx == "hit" and cached_engine(spec, cell.backend, build_options(ws.exp, cell), onnx_path,
                                           ws.engines_dir, ws.exp.timing["cuda_binding"]):
            engine = "hit"
        out.append(Planned(cell, cid, result, onnx, engine))
    return out
