"""The TensorRT runner serving LoadGen and concurrency requests, through the TensorRT and CUDA doubles: its own
buffers per serving thread, its streams, one batch enqueued while the one before is waited on, right answers."""

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from fakes import CUDA_BINDINGS
from fakes.tiny_onnx import tiny_onnx

from harness.backends.base import BuildOptions
from harness.build import build_artifact, load_engine
from harness.measure.deploy import DeployRequest
from harness.measure.loadgen import ScenarioSettings, run_scenario
from harness.measure.serving import BatchServer
from harness.models.registry import resolve_model

LIBRARY = np.random.default_rng(0).standard_normal((40, 1, 32, 32)).astype(np.float32)


def expected_logits(x):
    return x.reshape(len(x), -1).mean(axis=1, keepdims=True) * np.arange(1, 11)


@pytest.fixture(params=CUDA_BINDINGS)
def trt_runner(fake_gpu, tmp_path, request):
    gpu, _ = fake_gpu("10.9.0", request.param)
    meta, _ = build_artifact(resolve_model("digits-resnet"), "tensorrt", BuildOptions(batch_max=16),
                             tmp_path / "engines", onnx_path=tiny_onnx(tmp_path / "tiny.onnx"))
    _, runner = load_engine(meta.artifact)
    yield gpu, runner, meta
    runner.close()


@pytest.mark.parametrize("streams", [1, 2])
def test_every_request_gets_its_own_answer_on_the_runners_streams(trt_runner, streams):
    gpu, runner, _ = trt_runner
    answers = {}

    def answer(requests, out):
        for r, row in zip(requests, out, strict=True):
            answers[r.tag] = (r.index, row)

    with BatchServer(runner, LIBRARY, max_batch=4, answer=answer, workers=streams + 1, streams=streams) as server:
        for start in range(0, 200, 7):  # uneven bursts: batches of every size up to 4
            server.submit((i % len(LIBRARY), i) for i in range(start, min(start + 7, 200)))
    assert sorted(answers) == list(range(200)) and server.error is None
    for index, row in answers.values():
        np.testing.assert_allclose(row, expected_logits(LIBRARY[index:index + 1])[0], rtol=1e-5)
    enqueued = {c[1] for c in gpu.calls if c[0] == "execute_async_v3"}
    assert len(enqueued) == streams and 0 not in enqueued and runner.stream.handle not in enqueued
    before = len(gpu.calls)
    for slot in runner.serving(streams + 1, streams):
        slot(LIBRARY[:2])
    inputs = {c[2] for c in gpu.calls[before:] if c[0] == "set_tensor_address" and c[1] == "input"}
    assert len(inputs) == streams + 1  # one buffer set per serving thread
    shapes = {c[2][0] for c in gpu.calls if c[0] == "set_input_shape" and c[3]}
    assert max(shapes) == 16 and 4 in shapes  # the profile's largest batch sizes the buffers; batches up to 4 run
    x = LIBRARY[:3]  # serving used lanes of its own: infer is as before
    np.testing.assert_allclose(runner.infer(x), expected_logits(x), rtol=1e-5)
    # pycuda: every serving call pushed the context in its thread and popped it; the runner holds its own until close
    assert gpu.count("ctx.push") - gpu.count("ctx.pop") == (runner.cuda_binding == "pycuda")
    assert (gpu.count("ctx.push") > 50) == (runner.cuda_binding == "pycuda")


def test_a_batch_is_enqueued_while_the_one_before_is_waited_on(trt_runner, monkeypatch):
    """The first thread's wait is held until the second thread has enqueued and answered its batch: with the lane
    locked while waiting this would never finish."""
    gpu, runner, _ = trt_runner
    made = []
    real_event = runner.cuda.event
    monkeypatch.setattr(runner.cuda, "event", lambda blocking=True: made.append(real_event(blocking)) or made[-1])
    first, second = runner.serving(2, streams=1)
    waiting, second_done = threading.Event(), threading.Event()
    held = made[0].synchronize

    def hold():
        waiting.set()
        assert second_done.wait(5)
        held()

    made[0].synchronize = hold
    results = {}
    a = threading.Thread(target=lambda: results.__setitem__("a", first(LIBRARY[:2])))
    a.start()
    assert waiting.wait(5)
    b = threading.Thread(target=lambda: (results.__setitem__("b", second(LIBRARY[2:5])), second_done.set()))
    b.start()
    b.join(5)
    assert not b.is_alive(), "the second batch waited for the first one's answer"
    a.join(5)
    np.testing.assert_allclose(results["a"], expected_logits(LIBRARY[:2]), rtol=1e-5)
    np.testing.assert_allclose(results["b"], expected_logits(LIBRARY[2:5]), rtol=1e-5)
    handles = [c[1] for c in gpu.calls if c[0] == "execute_async_v3"]
    assert len(set(handles[-2:])) == 1  # both on the one stream: enqueued ahead, not in parallel


def test_loadgen_scenarios_and_bench_run_on_the_tensorrt_runner(trt_runner, tmp_path, run_cli):
    gpu, runner, meta = trt_runner
    offline = run_scenario(runner, LIBRARY, ScenarioSettings("offline", 0.3), tmp_path / "off", max_batch=16,
                           streams=2, workers=3)
    assert offline.samples > 0 and offline.mean_batch > 1 and offline.throughput_ips > 0
    result = run_cli("bench", meta.artifact, "--scenario", "server", "--target-qps", "200", "--duration", "0.3",
                     "--streams", "2", "--batch", "8", "--json", "s.json")
    assert result.exit_code == 0, result.output
    row = json.loads(Path("s.json").read_text())
    assert row["streams"] == 2 and row["max_batch"] == 8 and row["samples"] > 0 and row["valid"] in (True, False)
    assert "tensorrt" in result.output and "batches up to 8" in result.output
    # N streams serve with N + 1 threads: one batch enqueued ahead of each stream's
    assert DeployRequest("server", 8, streams=2).workers == 3 and DeployRequest("server", 8).workers == 2
