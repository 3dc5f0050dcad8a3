"""The GPU's state around a timed run, from NVML (`nvidia-ml-py`): clocks, power, temperature, throttling.

TensorRT's performance guide asks for it with every measurement: a run whose GPU throttled or changed clocks is
not comparable with one that did not. NVML is read before and after the timed part and sampled every 0.1 s in
between from a background thread (cheap calls, no GPU work). Without NVML (no package, no driver: a CPU
machine) every column is None: nothing is invented.
"""

from __future__ import annotations

import threading

STATE = ("sm_clock_mhz", "mem_clock_mhz", "power_w", "temp_c", "throttle")
COLUMNS = (*(f"gpu_{k}_{when}" for k in STATE for when in ("before", "after")), "gpu_power_limit_w",
           "gpu_sm_clock_min_mhz", "gpu_sm_clock_max_mhz", "gpu_state_note")
# Clock-event reasons that mean the GPU ran slower than it could (idle and application clocks do not).
THROTTLE_REASONS = ("SwPowerCap", "HwSlowdown", "SyncBoost", "SwThermalSlowdown", "HwThermalSlowdown",
                    "HwPowerBrakeSlowdown", "DisplayClockSetting")
CLOCK_CHANGE = 0.02  # SM clock range above 2 % of its minimum: the clocks moved during the run


def open_nvml(index: int = 0):
    """(pynvml, device handle), or None where NVML cannot be used."""
    try:
        import pynvml as nvml

        nvml.nvmlInit()
        return nvml, nvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:  # ImportError, NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded, ...: no NVML here
        return None


def _reasons(nvml, handle) -> list[str]:
    read = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
        nvml.nvmlDeviceGetCurrentClocksThrottleReasons
    mask = read(handle)
    names = []
    for name in THROTTLE_REASONS:
        bit = getattr(nvml, f"nvmlClocksEventReason{name}", None) or getattr(nvml, f"nvmlClocksThrottleReason{name}")
        if mask & bit:
            names.append(name)
    return names


def sample(nvml, handle) -> dict:
    return {"sm_clock_mhz": nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM),
            "mem_clock_mhz": nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM),
            "power_w": nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
            "temp_c": nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
            "throttle": _reasons(nvml, handle)}


def state_note(before: dict, during: list[dict], after: dict) -> str:
    """What a reader must know about the run: throttling seen, or SM clocks that moved ('' when neither)."""
    seen = [s for s in (before, *during, after) if s]
    reasons = list(dict.fromkeys(r for s in seen for r in s["throttle"]))
    clocks = [s["sm_clock_mhz"] for s in (*during, after) if s]
    notes = []
    if reasons:
        notes.append(f"GPU throttled during timing ({', '.join(reasons)})")
    if clocks and min(clocks) > 0 and max(clocks) / min(clocks) - 1 > CLOCK_CHANGE:
        notes.append(f"SM clock changed during timing ({min(clocks)}-{max(clocks)} MHz; lock clocks with "
                     "nvidia-smi --lock-gpu-clocks)")
    return "; ".join(notes)


class GpuMonitor:
    """`with GpuMonitor(enabled) as gpu: <timed run>`, then gpu.columns(): the row's gpu_* columns."""

    def __init__(self, enabled: bool = True, index: int = 0, interval_s: float = 0.1):
        self.nvml = open_nvml(index) if enabled else None
        self.interval_s = interval_s
        self.before: dict = {}
        self.after: dict = {}
        self.during: list[dict] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> dict:
        return sample(*self.nvml)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.during.append(self._sample())

    def __enter__(self) -> GpuMonitor:
        if self.nvml is not None:
            self.before = self._sample()
            self._thread = threading.Thread(target=self._poll, name="nvml-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.nvml is not None:
            self._stop.set()
            self._thread.join()
            self.after = self._sample()

    def columns(self) -> dict:
        out = dict.fromkeys(COLUMNS)
        if self.nvml is None:
            return out
        nvml, handle = self.nvml
        for key in STATE:
            for when, s in (("before", self.before), ("after", self.after)):
                value = s[key]
                out[f"gpu_{key}_{when}"] = ",".join(value) if key == "throttle" else value
        clocks = [s["sm_clock_mhz"] for s in (*self.during, self.after)]
        out.update(gpu_power_limit_w=nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0,
                   gpu_sm_clock_min_mhz=min(clocks), gpu_sm_clock_max_mhz=max(clocks),
                   gpu_state_note=state_note(self.before, self.during, self.after))
        return out


def clocks_summary(index: int = 0) -> str | None:
    """'SM max 1980 MHz, memory max 2619 MHz' for the environment table (None without NVML)."""
    opened = open_nvml(index)
    if opened is None:
        return None
    nvml, handle = opened
    return (f"SM max {nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM)} MHz, memory max "
            f"{nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_MEM)} MHz")
