"""harness.cuda, the CUDA layer under the TensorRT runner: each provider through its double on the CPU, and for
real on a GPU (`nox -s gpu`; no TensorRT needed). The GPU tests assert relations between measurements (a copy
takes longer than a copy a quarter its size; the provider's events and torch.cuda.Event agree on the same copy),
never a figure.
"""

import sys

import numpy as np
import pytest
from fakes import CUDA_BINDINGS

from harness.cuda import BINDINGS, CudaError, installed, open_cuda
from harness.errors import HarnessError

RNG = np.random.default_rng(0)


@pytest.fixture(params=CUDA_BINDINGS)
def fake_cuda(fake_gpu, request):
    """(FakeGpu, provider) for each provider with a double; closed after the test."""
    gpu, _ = fake_gpu("10.9.0", request.param, copy_ms=0.25)
    cuda = open_cuda(request.param)
    yield gpu, cuda
    cuda.close()


def round_trip(cuda, data: np.ndarray) -> np.ndarray:
    stream = cuda.stream()
    host_in, host_out = cuda.host_empty(data.shape, data.dtype), cuda.host_empty(data.shape, data.dtype)
    host_in[...] = data
    dev = cuda.device_empty(host_in.nbytes)
    cuda.h2d_async(dev, host_in, stream)
    cuda.d2h_async(host_out, dev, stream)
    stream.synchronize()
    return host_out


def test_fake_copy_round_trip_names_the_device(fake_cuda):
    _, cuda = fake_cuda
    data = RNG.standard_normal((3, 5)).astype(np.float16)
    np.testing.assert_array_equal(round_trip(cuda, data), data)
    assert cuda.device() == {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def test_fake_events_time_the_work_between_them(fake_cuda):
    gpu, cuda = fake_cuda
    stream, host = cuda.stream(), cuda.host_empty((4,), np.float32)
    dev = cuda.device_empty(host.nbytes)
    start, end = cuda.event(), cuda.event(blocking=False)
    start.record(stream)
    for _ in range(3):
        cuda.h2d_async(dev, host, stream)
    end.record(stream)
    assert not end.query() and end.query()  # the double finishes on the second poll: spinning must retry
    end.synchronize()
    assert start.elapsed_ms(end) == pytest.approx(3 * 0.25)
    assert [c[1] for c in gpu.calls if c[0] == "Event"] == [1, 0]  # blocking-sync, then default (spin) flags


def test_fake_graph_replays_the_captured_copies(fake_cuda):
    gpu, cuda = fake_cuda
    stream = cuda.stream()
    host_in, host_out = cuda.host_empty((8,), np.int32), cuda.host_empty((8,), np.int32)
    dev = cuda.device_empty(host_in.nbytes)
    host_out[...] = 0  # page-locked memory comes uninitialised
    stream.begin_capture()
    cuda.h2d_async(dev, host_in, stream)
    cuda.d2h_async(host_out, dev, stream)
    graph = stream.end_capture()
    assert gpu.count("htod") == 1 and not host_out.any()  # recorded, not run
    for value in (7, 9):
        host_in[...] = value
        graph.launch(stream)
        stream.synchronize()
        np.testing.assert_array_equal(host_out, value)
    assert gpu.count("graph.launch") == 2 and gpu.clock == pytest.approx(4 * 0.25)


def test_pycuda_graphs_need_cuda_python(fake_gpu, monkeypatch):
    fake_gpu("10.9.0", "pycuda")
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    cuda = open_cuda("pycuda")
    with pytest.raises(CudaError, match=r"pycuda binds no CUDA graph API.*pip install -e '\.\[gpu\]'"):
        cuda.stream().begin_capture()
    cuda.close()


@pytest.mark.parametrize("binding", CUDA_BINDINGS)
def test_no_gpu_is_one_line(fake_gpu, binding):
    gpu, _ = fake_gpu("10.9.0", binding)
    gpu.present = False
    with pytest.raises(HarnessError, match="no usable CUDA GPU"):
        open_cuda(binding)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message of a CPU-only torch")
def test_torch_without_cuda_is_one_line():
    with pytest.raises(HarnessError, match=r"no usable CUDA GPU \(torch .* sees none\): --cuda-binding torch needs"):
        open_cuda("torch")


# --- on a GPU, no TensorRT: every provider installed here ---

GPU_BINDINGS = [b for b in BINDINGS[1:] if installed(b)]


@pytest.fixture(params=GPU_BINDINGS)
def real_cuda(request):
    cuda = open_cuda(request.param)
    yield cuda
    cuda.close()


@pytest.mark.gpu
def test_gpu_allocate_and_copy_round_trip(real_cuda):
    data = RNG.standard_normal((64, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(round_trip(real_cuda, data), data)
    assert real_cuda.device()["gpu"]


def timed_copies(cuda, stream, dev, host, copies: int, blocking: bool = True) -> float:
    start, end = cuda.event(blocking), cuda.event(blocking)
    start.record(stream)
    for _ in range(copies):
        cuda.h2d_async(dev, host, stream)
    end.record(stream)
    if blocking:
        end.synchronize()
    else:
        while not end.query():
            pass
    return start.elapsed_ms(end)


@pytest.mark.gpu
@pytest.mark.parametrize("blocking", [True, False])
def test_gpu_events_around_known_work(real_cuda, blocking):
    """Four times the copies take more time (3x at least: fixed costs are small next to 64 MB copies)."""
    stream, host = real_cuda.stream(), real_cuda.host_empty((16 << 20,), np.float32)  # 64 MB
    dev = real_cuda.device_empty(host.nbytes)
    timed_copies(real_cuda, stream, dev, host, 2, blocking)  # warm-up
    one, four = (min(timed_copies(real_cuda, stream, dev, host, n, blocking) for _ in range(3)) for n in (1, 4))
    assert one > 0 and 3.0 < four / one < 5.0, (one, four)


@pytest.mark.gpu
def test_gpu_event_timing_agrees_with_torch_cuda_event(real_cuda):
    """The same 64 MB pinned H2D copy timed by the provider's events and by torch.cuda.Event."""
    import torch

    stream, host = real_cuda.stream(), real_cuda.host_empty((16 << 20,), np.float32)
    dev = real_cuda.device_empty(host.nbytes)
    ours = min(timed_copies(real_cuda, stream, dev, host, 1) for _ in range(5))
    src = torch.empty(host.nbytes, dtype=torch.uint8, pin_memory=True)
    dst = torch.empty(host.nbytes, dtype=torch.uint8, device="cuda")
    times = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src, non_blocking=True)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    assert 0.5 < ours / min(times) < 2.0, (ours, min(times))


@pytest.mark.gpu
def test_gpu_graph_capture_and_replay(real_cuda):
    stream = real_cuda.stream()
    host_in, host_out = real_cuda.host_empty((1 << 16,), np.int32), real_cuda.host_empty((1 << 16,), np.int32)
    dev = real_cuda.device_empty(host_in.nbytes)
    host_in[...] = 1
    round_trip(real_cuda, host_in)  # initialise lazily created state outside the capture, as trtexec does
    stream.begin_capture()
    real_cuda.h2d_async(dev, host_in, stream)
    real_cuda.d2h_async(host_out, dev, stream)
    graph = stream.end_capture()
    for value in (7, -3):
        host_in[...] = value
        graph.launch(stream)
        stream.synchronize()
        np.testing.assert_array_equal(host_out, value)
