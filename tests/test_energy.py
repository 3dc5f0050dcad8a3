"""Energy per inference from hardware counters (a double of NVML's total-energy counter; RAPL files in a temp
folder), and None with the reason where there is no counter, never an estimate."""

import json
import sys
import time
from pathlib import Path

import pytest
from fakes.fake_nvml import fake_pynvml
from fakes.tiny_onnx import tiny_onnx

from harness.backends.base import BuildOptions
from harness.build import build_artifact
from harness.measure.energy import EnergyMeter, closed_loop_energy, rapl_counter
from harness.models.registry import resolve_model


def test_nvml_energy_over_a_window_gives_joules_per_inference_and_average_power(monkeypatch):
    nvml = fake_pynvml(watts=300.0)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    with EnergyMeter(on_gpu=True) as meter:
        time.sleep(0.2)
    cols = meter.columns(inferences=100)
    assert cols["avg_power_w"] == pytest.approx(300.0, rel=0.02)
    assert cols["energy_j"] == pytest.approx(300.0 * meter.seconds, rel=0.02)
    assert cols["energy_j_per_inference"] == pytest.approx(cols["energy_j"] / 100)
    assert "NVML total energy of GPU 0 (NVIDIA H200)" in cols["energy_note"] and "whole board" in cols["energy_note"]
    assert nvml.energy_reads == 3  # the check when opened, before and after: nothing is sampled in between
    # a closed-loop window holds warm-ups at the same load: its power over the throughput
    assert closed_loop_energy(meter, 1000.0)["energy_j_per_inference"] == pytest.approx(0.3, rel=0.02)
    assert closed_loop_energy(meter, 1000.0, cells=2)["energy_j_per_inference"] is None


@pytest.mark.parametrize("module, reason", [(None, "no NVML here"), (fake_pynvml(energy=False),
                                                                      "no readable total-energy counter")])
def test_without_a_counter_the_figures_are_empty_with_the_reason(monkeypatch, module, reason):
    monkeypatch.setitem(sys.modules, "pynvml", module)
    with EnergyMeter(on_gpu=True) as meter:
        pass
    cols = meter.columns(inferences=100)
    assert cols["energy_j"] is cols["energy_j_per_inference"] is cols["avg_power_w"] is None
    assert reason in cols["energy_note"] and "not measured" in cols["energy_note"]


def test_rapl_package_counters_are_summed_across_their_wrap_around(tmp_path):
    for zone, start in (("intel-rapl:0", 999_000_000), ("intel-rapl:1", 5_000_000)):
        (tmp_path / zone).mkdir()
        (tmp_path / zone / "max_energy_range_uj").write_text("1000000000\n")
        (tmp_path / zone / "energy_uj").write_text(f"{start}\n")
    (tmp_path / "intel-rapl:0:0").mkdir()  # a sub-zone (core) inside package 0: not counted twice
    (tmp_path / "intel-rapl:0:0" / "energy_uj").write_text("7\n")
    read, what = rapl_counter(tmp_path)
    assert read() == 0.0 and "2 CPU package(s)" in what
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("2000000\n")  # wrapped: 1 J to the top, then 2 J
    (tmp_path / "intel-rapl:1" / "energy_uj").write_text("8000000\n")  # 3 J
    assert read() == pytest.approx(6.0)
    with pytest.raises(Exception, match="no RAPL under"):
        rapl_counter(tmp_path / "nothing")


def test_bench_on_a_gpu_engine_reports_energy_per_inference(fake_gpu, monkeypatch, run_cli, tmp_path):
    """A TensorRT engine (the double) on a GPU with an energy counter (the NVML double)."""
    fake_gpu("10.9.0")
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(watts=250.0))
    meta, _ = build_artifact(resolve_model("digits-resnet"), "tensorrt", BuildOptions(batch_max=8),
                             tmp_path / "engines", onnx_path=tiny_onnx(tmp_path / "tiny.onnx"))
    result = run_cli("bench", meta.artifact, "--concurrency", "1,2", "--duration", "0.2", "--json", "e.json")
    assert result.exit_code == 0, result.output
    for row in json.loads(Path("e.json").read_text()):
        assert row["avg_power_w"] == pytest.approx(250.0, rel=0.05)
        assert row["energy_j_per_inference"] == pytest.approx(250.0 / row["throughput_ips"], rel=0.05)
    closed = run_cli("bench", meta.artifact, "--iterations", "20", "--duration", "0.1", "--json", "c.json")
    row = json.loads(Path("c.json").read_text())
    assert closed.exit_code == 0 and row["scenario"] == "closed-loop"
    assert row["energy_j_per_inference"] == pytest.approx(250.0 / row["throughput_ips"], rel=0.05)
