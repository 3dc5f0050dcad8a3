"""What a scheduler needs to know of a work group: whether its cells time on a GPU or on the CPU."""

from __future__ import annotations

from harness.sweep.matrix import Cell

GPU_BACKENDS = ("tensorrt",)  # torch cells time on whatever device the worker is given: CPU unless it holds a GPU


def is_gpu(cell: Cell) -> bool:
    return cell.backend in GPU_BACKENDS


def split_by_device(group: list[Cell]) -> list[list[Cell]]:
    """A work group's GPU cells and CPU cells as separate units, so each asks for one kind of resource; the
    calibration and export they share is made once, in the engine cache, by whichever unit comes first."""
    units = [[c for c in group if is_gpu(c)], [c for c in group if not is_gpu(c)]]
    return [u for u in units if u]
