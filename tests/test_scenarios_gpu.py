"""On a real GPU (`nox -s gpu`): LoadGen's server scenario on the torch backend on CUDA, a concurrency sweep, and
NVML's total-energy counter. Skipped with the reason where there is no CUDA GPU or no mlcommons-loadgen."""

import time

import numpy as np
import pytest

from harness.backends.base import BuildOptions
from harness.build import build_artifact, load_engine
from harness.measure.deploy import DeployRequest, measure
from harness.measure.energy import EnergyMeter
from harness.measure.serving import library_for
from harness.models.registry import resolve_model

pytestmark = pytest.mark.gpu
SPEC = resolve_model("digits-resnet")


@pytest.fixture(scope="module")
def cuda_runner(tmp_path_factory):
    meta, _ = build_artifact(SPEC, "torch", BuildOptions(precision="fp16", batch_max=64),
                             tmp_path_factory.mktemp("gpu-scenario-engines"))
    meta, runner = load_engine(meta.artifact)
    assert runner.on_gpu, "the torch artifact was built for the CPU although CUDA is visible"
    return runner, library_for(meta.spec)


def test_nvml_energy_counter_reads_the_real_gpu():
    import torch

    x = torch.randn(4096, 4096, device="cuda")
    with EnergyMeter(on_gpu=True) as meter:
        end = time.perf_counter() + 1.0
        while time.perf_counter() < end:
            x = torch.tanh(x @ x)
        torch.cuda.synchronize()
    cols = meter.columns(inferences=1)
    if cols["energy_j"] is None:
        pytest.skip(f"this GPU has no readable energy counter: {cols['energy_note']}")
    assert 20.0 < cols["avg_power_w"] < 1500.0 and cols["energy_j"] > 10.0, cols
    assert "NVML total energy of GPU 0" in cols["energy_note"]


def test_server_scenario_on_cuda_torch_is_valid_at_a_fifth_of_offline_with_energy(cuda_runner, tmp_path):
    pytest.importorskip("mlperf_loadgen", reason="mlcommons-loadgen is not installed: pip install "
                                                 "'mlcommons-loadgen==6.0.*'")
    runner, library = cuda_runner
    offline = measure(runner, library, DeployRequest("offline", max_batch=64, duration_s=2.0), tmp_path).rows[0]
    assert offline["throughput_ips"] > 1000, offline  # a GPU answers thousands of digits a second
    runs = []
    for _ in range(3):
        runs.append(measure(runner, library, DeployRequest("server", max_batch=64, duration_s=2.0,
                                                           target_qps=0.2 * offline["throughput_ips"]),
                            tmp_path).rows[0])
        if runs[-1]["valid"]:
            break
    served = runs[-1]
    assert served["valid"] is True and served["latency_p99_ms"] <= 10.0, [r["latency_p99_ms"] for r in runs]
    assert served["qps"] == pytest.approx(0.2 * offline["throughput_ips"], rel=0.15)
    overloaded = measure(runner, library, DeployRequest("server", max_batch=64, duration_s=1.0,
                                                        target_qps=3 * offline["throughput_ips"]), tmp_path).rows[0]
    assert overloaded["valid"] is False
    if served["energy_note"].startswith("NVML"):
        assert 0 < served["energy_j_per_inference"] < 1.0 and served["avg_power_w"] > 20.0, served
    print(f"\noffline {offline['throughput_ips']:.0f} samples/s; server at {served['target_qps']:.0f} QPS: "
          f"p99 {served['latency_p99_ms']:.3g} ms, {served['energy_j_per_inference']} J/inference, "
          f"{served['avg_power_w']} W; at 3x: p99 {overloaded['latency_p99_ms']:.3g} ms")


def test_concurrency_on_cuda_torch_raises_throughput_with_requests_in_flight(cuda_runner, tmp_path):
    runner, library = cuda_runner
    rows = measure(runner, library, DeployRequest("concurrency", max_batch=64, duration_s=1.0,
                                                  concurrency=(1, 8, 32)), tmp_path).rows
    throughput = [r["throughput_ips"] for r in rows]
    assert throughput[2] > 2 * throughput[0], throughput  # batching 32 requests beats one at a time on a GPU
    assert all(np.isfinite(r["latency_p99_ms"]) for r in rows)
    print("\n" + ", ".join(f"concurrency {r['concurrency']}: {r['throughput_ips']:.0f} samples/s, p99 "
                           f"{r['latency_p99_ms']:.3g} ms, {r['energy_j_per_inference']} J/inference" for r in rows))
