"""A test double of the pynvml calls harness makes: the GPU's state (clocks, power, temperature, clock-event
reasons; harness.measure.gpu_state) and the total-energy counter (harness.measure.energy)."""

from __future__ import annotations

import importlib.machinery
import itertools
import time
import types


def fake_pynvml(sm_clocks=(1980,), reasons=(0,), watts: float = 350.0, energy: bool = True) -> types.ModuleType:
    """Scripted SM clocks and clock-event reason masks (cycled per read), and an energy counter (mJ since the
    'driver loaded') that a board drawing `watts` shows; energy=False raises as a GPU without the counter does."""
    nvml = types.ModuleType("pynvml")
    nvml.__spec__ = importlib.machinery.ModuleSpec("pynvml", None)
    nvml.NVML_CLOCK_SM, nvml.NVML_CLOCK_MEM, nvml.NVML_TEMPERATURE_GPU = 1, 2, 0
    for bit, name in enumerate(["GpuIdle", "ApplicationsClocksSetting", "SwPowerCap", "HwSlowdown", "SyncBoost",
                                "SwThermalSlowdown", "HwThermalSlowdown", "HwPowerBrakeSlowdown",
                                "DisplayClockSetting"]):
        setattr(nvml, f"nvmlClocksEventReason{name}", 1 << bit)
    sm, masks = itertools.cycle(sm_clocks), itertools.cycle(reasons)
    loaded = time.perf_counter() - 1000.0
    nvml.energy_reads = 0

    def total_energy(handle):
        if not energy:
            raise RuntimeError("Not Supported")
        nvml.energy_reads += 1
        return int((time.perf_counter() - loaded) * watts * 1e3)

    nvml.nvmlInit = lambda: None
    nvml.nvmlDeviceGetHandleByIndex = lambda index: ("gpu", index)
    nvml.nvmlDeviceGetName = lambda handle: b"NVIDIA H200"
    nvml.nvmlDeviceGetClockInfo = lambda h, clock: next(sm) if clock == 1 else 2619
    nvml.nvmlDeviceGetMaxClockInfo = lambda h, clock: 1980 if clock == 1 else 2619
    nvml.nvmlDeviceGetPowerUsage = lambda h: int(watts * 1000)
    nvml.nvmlDeviceGetEnforcedPowerLimit = lambda h: 700_000
    nvml.nvmlDeviceGetTemperature = lambda h, sensor: 61
    nvml.nvmlDeviceGetCurrentClocksEventReasons = lambda h: next(masks)
    nvml.nvmlDeviceGetTotalEnergyConsumption = total_energy
    return nvml
