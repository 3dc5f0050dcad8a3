"""NVML columns: the GPU's state around timing, through a double of pynvml; empty (None) without NVML."""

import sys
import time

import pandas as pd
import pytest
from fakes.fake_nvml import fake_pynvml

from harness.measure.gpu_state import COLUMNS, GpuMonitor, clocks_summary
from harness.report.compare import compare


def test_without_nvml_every_column_is_empty(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with GpuMonitor() as gpu:
        pass
    assert gpu.columns() == dict.fromkeys(COLUMNS) and clocks_summary() is None


def test_a_cpu_cell_reads_no_gpu_state(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    with GpuMonitor(enabled=False) as gpu:
        pass
    assert set(gpu.columns().values()) == {None}


def test_steady_gpu_state_is_recorded_without_a_note(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(reasons=(1,)))  # idle before: not throttling
    with GpuMonitor(interval_s=0.01) as gpu:
        time.sleep(0.05)
    cols = gpu.columns()
    assert cols["gpu_sm_clock_mhz_before"] == cols["gpu_sm_clock_mhz_after"] == 1980
    assert cols["gpu_mem_clock_mhz_after"] == 2619 and cols["gpu_power_w_after"] == 350.0
    assert cols["gpu_power_limit_w"] == 700.0 and cols["gpu_temp_c_before"] == 61
    assert cols["gpu_throttle_before"] == "" and cols["gpu_state_note"] == ""
    assert clocks_summary() == "SM max 1980 MHz, memory max 2619 MHz"


def test_throttling_and_moving_clocks_are_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(sm_clocks=(1980, 1980, 1755), reasons=(0, 4, 32)))
    with GpuMonitor(interval_s=0.01) as gpu:
        time.sleep(0.05)
    note = gpu.columns()["gpu_state_note"]
    assert "GPU throttled during timing (SwPowerCap, SwThermalSlowdown)" in note
    assert "SM clock changed during timing (1755-1980 MHz" in note


def test_report_compare_names_the_gpu_state_of_a_flagged_cell():
    cell = {"model": "m", "dataset": "digits", "backend": "tensorrt", "precision": "fp16", "tool": None,
            "mode": None, "calibrator": None, "batch": 8, "status": "ok", "latency_spread_pct": 1.0,
            "top1_pct": 99.0}
    base = pd.DataFrame([{**cell, "latency_p50_ms": 1.0, "gpu_state_note": ""}])
    cur = pd.DataFrame([{**cell, "latency_p50_ms": 1.5, "gpu_state_note": "GPU throttled during timing (SwPowerCap)"}])
    verdict = compare(base, cur, 5.0, 1.0).table["verdict"].iloc[0]
    assert verdict == "REGRESSION: latency (current: GPU throttled during timing (SwPowerCap))"
    steady = compare(base, base.assign(gpu_state_note=None), 5.0, 1.0).table["verdict"].iloc[0]
    assert steady == "ok"


@pytest.mark.gpu
def test_nvml_reads_the_real_gpu():
    """On a GPU machine with nvidia-ml-py: real clocks and power, not invented ones."""
    with GpuMonitor(interval_s=0.01) as gpu:
        time.sleep(0.05)
    cols = gpu.columns()
    if cols["gpu_sm_clock_mhz_before"] is None:
        pytest.skip("NVML not usable here: pip install nvidia-ml-py")
    assert cols["gpu_sm_clock_mhz_after"] > 0 and cols["gpu_power_limit_w"] > 0
