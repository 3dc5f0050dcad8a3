"""Energy per inference and average power over a measured window, from hardware energy counters only.

- NVIDIA GPUs (runners on a GPU): NVML's total-energy counter (nvmlDeviceGetTotalEnergyConsumption, millijoules
  since the driver loaded; Volta and newer), read before and after the window. It counts the whole board: idle
  time inside the window and other processes on the GPU are included.
- CPUs (runners on the host): the RAPL package counters the kernel exposes under /sys/class/powercap
  (intel-rapl:N/energy_uj, wrapping at max_energy_range_uj): the whole package, other processes included.

Where neither can be read (a CPU virtual machine has neither), every figure is None and `energy_note` says why;
nothing is estimated.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

COLUMNS = ("energy_j", "energy_j_per_inference", "avg_power_w", "energy_note")
POWERCAP = Path("/sys/class/powercap")


class Unavailable(Exception):
    """No counter to read here; the message is the row's energy_note."""


def nvml_counter(index: int = 0) -> tuple[Callable[[], float], str]:
    """(read joules, what it counts) from NVML's total-energy counter of GPU `index`."""
    from harness.measure.gpu_state import open_nvml

    opened = open_nvml(index)
    if opened is None:
        raise Unavailable("no NVML here (nvidia-ml-py or the NVIDIA driver is missing): energy not measured")
    nvml, handle = opened
    try:
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception as exc:  # NVMLError_NotSupported before Volta, NoPermission, ...
        raise Unavailable(f"GPU {index} has no readable total-energy counter ({exc}): energy not measured") from exc
    name = nvml.nvmlDeviceGetName(handle)
    name = name.decode() if isinstance(name, bytes) else name
    return (lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3), \
        f"NVML total energy of GPU {index} ({name}) over the run: the whole board, idle time and other processes " \
        "on it included"


def rapl_counter(root: Path = POWERCAP) -> tuple[Callable[[], float], str]:
    """(read joules, what it counts) from the RAPL package domains (intel-rapl:N, not their sub-zones)."""
    zones = sorted(p for p in Path(root).glob("intel-rapl:*") if p.name.count(":") == 1)
    if not zones:
        raise Unavailable(f"no CPU energy counter (no RAPL under {root}; virtual machines have none): energy not "
                          "measured")
    try:
        ranges = [int((z / "max_energy_range_uj").read_text()) for z in zones]
        [int((z / "energy_uj").read_text()) for z in zones]
    except PermissionError as exc:
        raise Unavailable(f"the RAPL counters under {root} are readable by root only: run as root to measure "
                          "energy") from exc
    except (OSError, ValueError) as exc:
        raise Unavailable(f"the RAPL counters under {root} cannot be read ({exc}): energy not measured") from exc
    last: list[int | None] = [None] * len(zones)
    total = [0]

    def read() -> float:
        """Joules since the first read, each domain's wrap-around added back."""
        for i, zone in enumerate(zones):
            now = int((zone / "energy_uj").read_text())
            if last[i] is not None:
                total[0] += now - last[i] if now >= last[i] else now + ranges[i] - last[i]
            last[i] = now
        return total[0] / 1e6

    return read, f"RAPL energy of {len(zones)} CPU package(s) over the run: the whole package, other processes " \
        "included"


class EnergyMeter:
    """`with EnergyMeter(on_gpu) as meter: <the measured run>`, then meter.columns(inferences)."""

    def __init__(self, on_gpu: bool, index: int = 0, powercap: Path = POWERCAP):
        try:
            self.read, self.note = nvml_counter(index) if on_gpu else rapl_counter(powercap)
        except Unavailable as exc:
            self.read, self.note = None, str(exc)
        self.joules: float | None = None
        self.seconds = 0.0

    def __enter__(self) -> EnergyMeter:
        self._start = self._sample()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t0
        end = self._sample()
        if self._start is not None and end is not None:
            self.joules = end - self._start

    def _sample(self) -> float | None:
        if self.read is None:
            return None
        try:
            return self.read()
        except Exception as exc:  # the counter went away mid-run: say so, invent nothing
            self.read, self.note = None, f"the energy counter could not be read ({exc}): energy not measured"
            return None

    def columns(self, inferences: float) -> dict:
        """energy_j, energy_j_per_inference (the window's energy over the inferences completed in it),
        avg_power_w, energy_note (what the figures include, or why they are None)."""
        if self.joules is None:
            return {"energy_j": None, "energy_j_per_inference": None, "avg_power_w": None, "energy_note": self.note}
        return {"energy_j": self.joules,
                "energy_j_per_inference": self.joules / inferences if inferences else None,
                "avg_power_w": self.joules / self.seconds if self.seconds > 0 else None, "energy_note": self.note}


def closed_loop_energy(meter: EnergyMeter, throughput_ips: float, cells: int = 1) -> dict:
    """A closed-loop cell's energy columns: its window holds warm-ups and repeats at the same load, so energy per
    inference is the window's average power over the timed throughput. Cells timed in turns share one window
    (timing.interleave), so none of them is given its energy."""
    if cells > 1 and meter.joules is not None:
        return {**meter.columns(0), "energy_j": None, "avg_power_w": None,
                "energy_note": f"{cells} cells timed in turns (timing.interleave) share the measured window: energy "
                               "not attributed to one"}
    return meter.columns(throughput_ips * meter.seconds)
