"""The TensorRT backend on CPU, through test doubles of tensorrt 10.x/11.x and pycuda (tests/fakes)."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fakes import CUDA_BINDINGS
from fakes.tiny_onnx import tiny_onnx

from harness.backends.base import BuildOptions, Timing, get_backend
from harness.build import build_artifact, load_engine, sha256_file
from harness.errors import HarnessError
from harness.measure.latency import latency_stats
from harness.models.registry import resolve_model

VERSIONS = ["10.9.0", "11.0.0"]
OPTIONS = BuildOptions(batch_min=1, batch_opt=8, batch_max=32, workspace_mb=512, opt_level=4)


@pytest.fixture
def onnx_file(tmp_path):
    return tiny_onnx(tmp_path / "tiny.onnx")


def build(tmp_path, onnx_file, options=OPTIONS):
    return build_artifact(resolve_model("digits-resnet"), "tensorrt", options, tmp_path / "engines",
                        onnx_path=onnx_file)


def expected_logits(x):
    return x.reshape(len(x), -1).mean(axis=1, keepdims=True) * np.arange(1, 11)


@pytest.mark.parametrize("version, flags", [("10.9.0", 1 << 1), ("11.0.0", 1 << 0)])
def test_strong_typing_is_requested_by_flag_name(fake_gpu, tmp_path, onnx_file, version, flags):
    gpu, trt = fake_gpu(version)
    get_backend("tensorrt").build(onnx_file, tmp_path / "a.engine", OPTIONS)
    assert ("create_network", flags) in gpu.calls
    assert flags == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


@pytest.mark.parametrize("version", VERSIONS)
def test_builder_sets_profile_workspace_level_verbosity_and_timing_cache(fake_gpu, tmp_path, onnx_file, version):
    gpu, trt = fake_gpu(version)
    get_backend("tensorrt").build(onnx_file, tmp_path / "a.engine", OPTIONS)
    assert ("set_shape", "input", (1, 1, 32, 32), (8, 1, 32, 32), (32, 1, 32, 32)) in gpu.calls
    assert ("set_memory_pool_limit", trt.MemoryPoolType.WORKSPACE, 512 << 20) in gpu.calls
    assert (tmp_path / "tensorrt-timing.cache").read_bytes().startswith(b"FAKETC")
    plan = trt.Runtime(None).deserialize_cuda_engine((tmp_path / "a.engine").read_bytes())._plan
    assert plan["strongly_typed"]


def test_builder_config_values(fake_gpu, tmp_path, onnx_file, monkeypatch):
    """The config object itself: opt level and DETAILED verbosity (needed for the inspector's per-layer JSON)."""
    gpu, trt = fake_gpu("11.0.0")
    seen = {}
    original = trt.Builder.build_serialized_network

    def spy(self, network, config):
        seen.update(level=config.builder_optimization_level, verbosity=config.profiling_verbosity)
        return original(self, network, config)

    monkeypatch.setattr(trt.Builder, "build_serialized_network", spy)
    get_backend("tensorrt").build(onnx_file, tmp_path / "a.engine", OPTIONS)
    assert seen == {"level": 4, "verbosity": trt.ProfilingVerbosity.DETAILED}


def test_fakes_lack_the_removed_apis_and_harness_never_names_them(fake_gpu):
    _, trt10 = fake_gpu("10.9.0")
    _, trt11 = fake_gpu("11.0.0")
    config = trt10.Builder(trt10.Logger()).create_builder_config()
    with pytest.raises(AttributeError):
        config.max_workspace_size = 1 << 30
    assert not hasattr(trt10.Builder, "build_engine") and not hasattr(trt10.ICudaEngine, "num_bindings")
    assert not hasattr(trt10.IExecutionContext, "execute_async_v2")
    assert not hasattr(trt11.BuilderFlag, "FP16") and not hasattr(trt11.BuilderFlag, "INT8")
    assert not hasattr(trt11.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    assert hasattr(trt10.BuilderFlag, "FP16")  # the 10.x double still has what 10.x has

    # The before-stop hook's list of TensorRT APIs removed in 10/11.
    banned = re.compile(r"execute_async_v2|get_binding_(index|shape|dtype|name)|max_workspace_size|build_engine\(|"
                        r"num_bindings|binding_is_input|EXPLICIT_BATCH|IInt8\w*Calibrator|int8_calibrator|"
                        r"BuilderFlag\.(FP16|INT8|BF16|FP8|OBEY_PRECISION)|platform_has_fast")
    package = Path(__file__).resolve().parents[1] / "harness"
    hits = [f"{p}:{m.group()}" for p in package.rglob("*.py") for m in banned.finditer(p.read_text())]
    assert hits == []


def test_parser_failure_names_the_node_and_the_reason(fake_gpu, tmp_path):
    fake_gpu("10.9.0")
    bad = tiny_onnx(tmp_path / "bad.onnx", unsupported=True)
    with pytest.raises(HarnessError, match=r"node '/custom/FakeUnsupported' \(FakeUnsupported\): No importer"):
        get_backend("tensorrt").build(bad, tmp_path / "a.engine", OPTIONS)


def test_without_a_gpu_the_errors_say_so(fake_gpu, tmp_path, onnx_file):
    gpu, _ = fake_gpu("10.9.0")
    gpu.present = False
    backend = get_backend("tensorrt")
    with pytest.raises(HarnessError, match="no usable CUDA GPU"):
        backend.device()
    with pytest.raises(HarnessError, match="needs a CUDA GPU"):
        backend.build(onnx_file, tmp_path / "a.engine", OPTIONS)


@pytest.mark.parametrize("binding, hidden, line", [
    ("pycuda", "pycuda", "pycuda is not installed: install it with pip install -e '.[pycuda]'"),
    ("cuda-python", "cuda.bindings", "cuda-python is not installed: install it with pip install -e '.[gpu]'"),
    ("auto", "tensorrt", "tensorrt is not installed: install it with pip install -e '.[gpu]'"),
])
def test_a_missing_provider_is_one_line_naming_its_extra(fake_gpu, monkeypatch, run_cli, binding, hidden, line):
    fake_gpu("10.9.0")
    monkeypatch.setitem(sys.modules, hidden, None)
    result = run_cli("build-engine", "--backend", "tensorrt", "--cuda-binding", binding)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == f"Error: {line}"


def test_auto_takes_pycuda_then_cuda_python(fake_gpu):
    from harness.cuda import resolve_binding

    fake_gpu("10.9.0", binding="pycuda")
    assert resolve_binding("auto") == "pycuda"
    fake_gpu("10.9.0", binding="cuda-python")
    assert resolve_binding("auto") == "cuda-python"


def test_cuda_binding_and_trtexec_flags_are_refused_for_other_backends(run_cli, digits_engine):
    result = run_cli("bench", digits_engine.artifact, "--cuda-binding", "torch", "--duration", 0)
    assert result.exit_code == 2 and "--cuda-binding torch applies to tensorrt engines only" in result.output
    result = run_cli("bench", digits_engine.artifact, "--no-cuda-graph", "--streams", 2, "--duration", 0)
    assert result.exit_code == 2 and "--no-cuda-graph, --streams apply to tensorrt engines only" in result.output


@pytest.mark.parametrize("version", VERSIONS)
def test_same_request_hits_the_cache_and_damaged_engines_are_rebuilt(fake_gpu, tmp_path, onnx_file, version):
    gpu, _ = fake_gpu(version)
    meta, hit = build(tmp_path, onnx_file)
    assert not hit and meta.versions["tensorrt"] == version
    assert meta.device == {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    assert build(tmp_path, onnx_file)[1] and gpu.count("build_serialized_network") == 1

    engine = Path(meta.artifact)
    good = engine.read_bytes()
    engine.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(HarnessError, match="truncated or modified"):
        load_engine(engine)
    assert not build(tmp_path, onnx_file)[1] and engine.read_bytes() == good

    engine.write_bytes(good[:-1] + b"!")  # same size, other bytes
    assert not build(tmp_path, onnx_file)[1] and sha256_file(engine) == meta.artifact_sha256
    assert gpu.count("build_serialized_network") == 3


def test_key_covers_tensorrt_version_and_gpu(fake_gpu, tmp_path, onnx_file):
    fake_gpu("10.9.0")
    a, _ = build(tmp_path, onnx_file)
    fake_gpu("11.0.0")
    b, _ = build(tmp_path, onnx_file)
    fake_gpu("11.0.0", name="NVIDIA L4", capability=(8, 9))
    c, _ = build(tmp_path, onnx_file)
    assert len({a.artifact, b.artifact, c.artifact}) == 3


def test_timing_cache_is_reused_and_a_foreign_one_replaced(fake_gpu, tmp_path, onnx_file):
    gpu, _ = fake_gpu("10.9.0")
    build(tmp_path, onnx_file)
    build(tmp_path, onnx_file, BuildOptions(batch_max=16))
    loaded = [c[1] for c in gpu.calls if c[0] == "create_timing_cache"]
    assert loaded[0] == b"" and loaded[1] == b'FAKETC1'
    (tmp_path / "engines" / "tensorrt-timing.cache").write_bytes(b"another GPU's cache")
    build(tmp_path, onnx_file, BuildOptions(batch_max=8))
    assert (tmp_path / "engines" / "tensorrt-timing.cache").read_bytes() == b"FAKETC1"


@pytest.mark.parametrize("binding", CUDA_BINDINGS)
@pytest.mark.parametrize("version", VERSIONS)
def test_runtime_binds_every_tensor_by_name_and_runs_on_its_own_stream(fake_gpu, tmp_path, onnx_file, version,
                                                                        binding):
    gpu, _ = fake_gpu(version, binding)
    meta, _ = build(tmp_path, onnx_file)
    _, runner = load_engine(meta.artifact)
    assert runner.cuda_binding == binding
    x = np.random.default_rng(0).standard_normal((3, 1, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(runner.infer(x), expected_logits(x), rtol=1e-5)

    assert {c[1] for c in gpu.calls if c[0] == "set_tensor_address"} == {"input", "logits"}
    assert ("set_input_shape", "input", (3, 1, 32, 32), True) in gpu.calls
    handles = {c[1] for c in gpu.calls if c[0] == "execute_async_v3"}
    assert handles == {runner.stream.handle} and 0 not in handles
    assert {c[1] for c in gpu.calls if c[0] in ("htod", "dtoh")} == handles
    runner.close()
    assert gpu.count("ctx.push") == gpu.count("ctx.pop") and (gpu.count("ctx.push") > 0) == (binding == "pycuda")


def test_a_batch_outside_the_profile_and_a_foreign_engine_are_refused(fake_gpu, tmp_path, onnx_file):
    fake_gpu("10.9.0")
    meta, _ = build(tmp_path, onnx_file)
    _, runner = load_engine(meta.artifact)
    with pytest.raises(HarnessError, match="outside the engine's profile"):
        runner.infer(np.zeros((33, 1, 32, 32), np.float32))
    fake_gpu("11.0.0")  # a 10.x plan does not deserialize on 11.x
    with pytest.raises(HarnessError, match="cannot deserialize"):
        get_backend("tensorrt").load(Path(meta.artifact), OPTIONS)


@pytest.fixture(params=CUDA_BINDINGS)
def runner_for(fake_gpu, tmp_path, onnx_file, request):
    """A loaded engine on each CUDA binding with a double: the timing code is written once for all of them."""

    def make(**kwargs):
        gpu, _ = fake_gpu("10.9.0", request.param, **kwargs)
        meta, _ = build(tmp_path, onnx_file)
        return gpu, load_engine(meta.artifact)[1]

    return make


X = np.ones((8, 1, 32, 32), np.float32)


def test_timing_reports_compute_apart_from_copies_and_host(runner_for):
    gpu, runner = runner_for(compute_ms=(1.0,), copy_ms=0.1)
    t = runner.time(X, warmup_s=0.0, iterations=25, duration_s=0.0)
    assert t.queries == 25 and t.batch == 8 and t.wall_s > 0
    np.testing.assert_allclose(t.components["gpu_compute_ms"], 1.0)
    np.testing.assert_allclose(t.components["h2d_ms"], 0.1)
    np.testing.assert_allclose(t.components["d2h_ms"], 0.1)
    np.testing.assert_allclose(t.latency_ms, 1.2)
    assert (t.components["enqueue_ms"] > 0).all() and (t.components["host_ms"] > 0).all()
    assert "latency = H2D + GPU compute + D2H" in t.includes and "throughput = samples / host wall" in t.includes
    assert {c[1] for c in gpu.calls if c[0] == "Event"} == {1} and gpu.count("event.query") == 0  # BLOCKING_SYNC


def test_no_data_transfers_times_the_engine_alone(runner_for):
    gpu, runner = runner_for()
    t = runner.time(X, warmup_s=0.0, iterations=10, duration_s=0.0, no_data_transfers=True)
    assert "h2d_ms" not in t.components and "d2h_ms" not in t.components
    np.testing.assert_allclose(t.latency_ms, t.components["gpu_compute_ms"])
    assert gpu.count("htod") == 1 and gpu.count("dtoh") == 0  # the input, once
    assert "GPU compute only" in t.includes


def test_cuda_graph_is_captured_after_one_plain_enqueue(runner_for):
    gpu, runner = runner_for()
    t = runner.time(X, warmup_s=0.0, iterations=10, duration_s=0.0, cuda_graph=True)
    names = [c[0] for c in gpu.calls]
    first_capture = names.index("begin_capture")
    assert "execute_async_v3" in names[:first_capture]
    assert names[first_capture + 1:first_capture + 3] == ["execute_async_v3", "end_capture"]
    assert gpu.count("graph.launch") >= 10 and gpu.count("execute_async_v3") == 2
    np.testing.assert_allclose(t.components["gpu_compute_ms"], 1.0)
    assert "CUDA graph launch" in t.includes
    np.testing.assert_allclose(runner.buffers.host["logits"], expected_logits(X), rtol=1e-5)


def test_failed_capture_falls_back_to_plain_enqueue(runner_for):
    gpu, runner = runner_for()
    gpu.capture_fails = True
    t = runner.time(X, warmup_s=0.0, iterations=10, duration_s=0.0, cuda_graph=True)
    assert re.search(r"CUDA graph capture failed \((cudaStreamEndCapture failed: cudaErrorStreamCaptureInvalidated|"
                     r"CUDA error: operation failed due to a previous error during capture)\)", t.includes)
    assert gpu.count("graph.launch") == 0 and gpu.count("execute_async_v3") >= 11
    np.testing.assert_allclose(t.components["gpu_compute_ms"], 1.0)


def test_spin_wait_polls_events_instead_of_blocking(runner_for):
    gpu, runner = runner_for()
    runner.time(X, warmup_s=0.0, iterations=10, duration_s=0.0, spin_wait=True)
    assert {c[1] for c in gpu.calls if c[0] == "Event"} == {0}
    assert gpu.count("event.query") >= 2 * 10 and gpu.count("event.synchronize") == 0


def test_warmup_and_duration_bound_the_loop(runner_for):
    _, runner = runner_for()
    t = runner.time(X, warmup_s=0.05, iterations=1, duration_s=0.1)
    assert t.wall_s >= 0.1 and t.queries > 1


def test_trtexec_cv_threshold_and_warnings(runner_for):
    _, runner = runner_for(compute_ms=(1.0, 1.1))
    stats = latency_stats(runner.time(X, warmup_s=0.0, iterations=40, duration_s=0.0))
    assert 0.025 < stats.latency_cv < 0.05 and runner.cv_warn == 0.025
    assert any("> 2.5 %" in w for w in stats.warnings(runner.cv_warn))
    assert stats.warnings() == []  # the CPU default (5 %) would not have warned

    steady = np.full(10, 1.0)
    enqueue_bound = Timing(steady, 1.0, 1, "", {"gpu_compute_ms": steady, "enqueue_ms": steady * 0.9})
    assert any("--cuda-graph" in w for w in latency_stats(enqueue_bound).warnings())
    transfer_bound = Timing(steady, 1.0, 1, "", {"gpu_compute_ms": steady, "h2d_ms": steady * 2})
    assert any("--no-data-transfers" in w for w in latency_stats(transfer_bound).warnings())


def test_warnings_name_the_flags_of_the_convention_that_ran():
    steady, wobbly = np.full(10, 1.0), np.tile([1.0, 1.1], 5)
    components = {"gpu_compute_ms": wobbly, "enqueue_ms": steady * 0.9, "h2d_ms": steady * 2}
    v10 = latency_stats(Timing(steady, 1.0, 1, "", components, convention="trtexec 10")).warnings(0.025)
    v11 = latency_stats(Timing(steady, 1.0, 1, "", components, convention="trtexec 11", streams=2)).warnings(0.025)
    assert any("GPU compute time is unstable" in w and "lock the GPU clocks" in w and "--spin-wait" in w for w in v10)
    assert any("try --cuda-graph" in w for w in v10) and any("--no-data-transfers times" in w for w in v10)
    assert any("drop --no-cuda-graph" in w for w in v11) and any("drop --include-data-transfers" in w for w in v11)
    assert any("2 streams" in w and "latencies are not reliable" in w for w in v11)
    assert not any("streams" in w for w in v10)


def test_tensorrt_11_times_as_trtexec_11_by_default(fake_gpu, tmp_path, onnx_file):
    gpu, _ = fake_gpu("11.0.0")
    meta, _ = build(tmp_path, onnx_file)
    _, runner = load_engine(meta.artifact)
    t = runner.time(X, warmup_s=0.0, iterations=10, duration_s=0.0)
    assert t.convention == "trtexec 11" and t.includes.startswith("trtexec 11 convention")
    assert "h2d_ms" not in t.components and "CUDA graph launch" in t.includes and "spin wait" in t.includes
    assert gpu.count("graph.launch") >= 10 and {c[1] for c in gpu.calls if c[0] == "Event"} == {0}
    opted_out = runner.time(X, 0.0, 10, 0.0, cuda_graph=False, no_data_transfers=False, spin_wait=False)
    assert "h2d_ms" in opted_out.components and "execute_async_v3" in opted_out.includes
    assert "blocking-sync events" in opted_out.includes


def test_one_query_is_in_flight_ahead_of_the_one_waited_on(runner_for):
    gpu, runner = runner_for()
    runner.time(X, warmup_s=0.0, iterations=20, duration_s=0.0)
    names = [c[0] for c in gpu.calls if c[0] in ("execute_async_v3", "event.synchronize")]
    ahead = sum(names[:i].count("execute_async_v3") >= names[:i].count("event.synchronize") + 2
                for i, n in enumerate(names) if n == "event.synchronize")
    assert ahead >= 19  # every wait but the last of each phase has the next query already enqueued


def test_streams_run_one_context_per_stream(runner_for):
    gpu, runner = runner_for()
    t = runner.time(X, warmup_s=0.0, iterations=20, duration_s=0.0, streams=3)
    handles = [c[1] for c in gpu.calls if c[0] == "execute_async_v3"]
    assert len(set(handles)) == 3 and t.streams == 3 and "3 streams, one execution context each" in t.includes
    assert max(handles.count(h) for h in set(handles)) - min(handles.count(h) for h in set(handles)) <= 1
    np.testing.assert_allclose(t.components["gpu_compute_ms"], 1.0)
    assert len(runner.lanes) == 3 and len({id(lane.context) for lane in runner.lanes}) == 3


def test_bench_follows_the_installed_tensorrt(fake_gpu, run_cli, tmp_path, onnx_file):
    fake_gpu("11.0.0")
    engine = build(tmp_path, onnx_file)[0].artifact
    quick = ["--warmup", 0, "--iterations", 10, "--duration", 0]
    v11 = run_cli("bench", engine, *quick)
    assert v11.exit_code == 0 and v11.output.splitlines()[0].endswith(
        "trtexec 11 convention; latency = GPU compute only (no data transfers: input and output stay on the GPU); "
        "gpu_compute = the engine's enqueued work (CUDA events, non-default stream); enqueue = host time of CUDA "
        "graph launch; host = host wall time per query including synchronization; throughput = samples / host "
        "wall time, one query in flight ahead; events polled (spin wait)")
    out = run_cli("bench", engine, *quick, "--no-cuda-graph", "--include-data-transfers", "--no-spin-wait",
                  "--cuda-graph", "--streams", 2)
    assert out.exit_code != 0 and "--cuda-graph and --no-cuda-graph contradict each other" in out.output
    out = run_cli("bench", engine, *quick, "--include-data-transfers", "--spin-wait", "--streams", 2)
    assert out.exit_code == 0, out.output
    assert "h2d_ms p50_ms" in out.output and "2 streams" in out.output
    assert "note: --spin-wait is the default with TensorRT 11" in out.output
    assert "latencies are not reliable" in out.output
    fake_gpu("10.9.0")
    engine = build(tmp_path, onnx_file)[0].artifact
    v10 = run_cli("bench", engine, *quick)
    assert "trtexec 10 convention; latency = H2D + GPU compute + D2H" in v10.output.splitlines()[0]


def test_cli_build_bench_eval_on_tensorrt(fake_gpu, run_cli, digits_engine, engines_dir):
    fake_gpu("10.9.0", compute_ms=(1.0, 1.1))
    args = ["build-engine", "--backend", "tensorrt", "--engines-dir", engines_dir, "--max-batch", 64]
    built = run_cli(*args)
    assert built.exit_code == 0 and "built in" in built.output
    again = run_cli(*args)
    engine = again.output.strip().split()[-1]
    assert again.output.startswith("cache hit") and engine.endswith(".engine")

    bench = run_cli("bench", engine, "--warmup", 0, "--iterations", 20, "--duration", 0, "--cuda-graph",
                    "--json", "bench.json")
    assert bench.exit_code == 0, bench.output
    assert "(tensorrt, fp32, cuda-binding pycuda)" in bench.output.splitlines()[0]
    assert json.loads(Path("bench.json").read_text())["cuda_binding"] == "pycuda"
    assert "latency = H2D + GPU compute + D2H" in bench.output and "gpu_compute_ms p50_ms" in bench.output
    assert "h2d_ms p99_ms" in bench.output and "CUDA graph launch" in bench.output and "> 2.5 %" in bench.output
    evaluated = run_cli("eval", engine, "--limit", 64)
    assert evaluated.exit_code == 0 and "top1 agreement with fp32 torch" in evaluated.output


@pytest.mark.parametrize("version", VERSIONS)
def test_cli_builds_fp8_and_bf16_engines_strongly_typed(fake_gpu, run_cli, engines_dir, version):
    """build-engine --precision fp8|bf16 on 10.x and 11.x: the verified FP8 Q/DQ / BF16 ONNX, a strongly typed
    network, and the inspector shows the convolutions the FP8 plan meant running in FP8 and BF16 layers."""
    gpu, trt = fake_gpu(version)
    for precision, runs in (("fp8", "FP8"), ("bf16", "BF16")):
        built = run_cli("build-engine", "--backend", "tensorrt", "--precision", precision, "--engines-dir",
                        engines_dir)
        assert built.exit_code == 0, built.output
        engine = built.output.strip().split()[-1]
        plan = trt.Runtime(None).deserialize_cuda_engine(Path(engine).read_bytes())._plan
        assert plan["strongly_typed"] and runs in {layer["Inputs"][0][1] for layer in plan["layers"]}
        inspected = run_cli("inspect-engine", engine, "--out", engines_dir / "inspect")
        assert inspected.exit_code == 0, inspected.output
        assert re.search(rf"layers with {runs} input +[1-9]", inspected.output)
        if precision == "fp8":  # layer2.conv2 and layer3's three convolutions, all that FP8 placement quantized
            assert re.search(r"planned FP8 \(Q/DQ before a weighted node\) +4\n", inspected.output)
            assert re.search(r"planned FP8 but not running FP8 +0\n", inspected.output)


@pytest.mark.parametrize("precision, capability, needs", [("fp8", (8, 0), "8.9"), ("fp8-fp16", (8, 6), "8.9"),
                                                          ("bf16", (7, 5), "8.0")])
def test_fp8_and_bf16_on_an_older_gpu_are_one_line(fake_gpu, tmp_path, precision, capability, needs):
    fake_gpu("10.9.0", name="NVIDIA A100", capability=capability)
    onnx_path = tiny_onnx(tmp_path / "q.onnx", qdq=precision.startswith("fp8"), fp8=precision.startswith("fp8"))
    with pytest.raises(HarnessError, match=rf"--precision {precision} needs (FP8|BF16) kernels, which a GPU of compute "
                                           rf"capability {needs} or newer has; NVIDIA A100 is "
                                           rf"{capability[0]}.{capability[1]}"):
        build(tmp_path, onnx_path, BuildOptions(precision=precision))


def test_the_double_finds_no_fp8_kernel_on_an_ampere_gpu_as_tensorrt(fake_gpu, tmp_path):
    """The double is faithful where harness's own check is bypassed: no FP8 kernel below compute capability 8.9."""
    gpu, trt = fake_gpu("11.0.0", capability=(8, 0))
    logger = trt.Logger()
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert trt.OnnxParser(network, logger).parse_from_file(str(tiny_onnx(tmp_path / "q.onnx", qdq=True, fp8=True)))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 1, 32, 32), (1, 1, 32, 32), (1, 1, 32, 32))
    config.add_optimization_profile(profile)
    assert builder.build_serialized_network(network, config) is None


TRACE = {"Reformatting CopyNode for Input Tensor 0 to /conv1/Conv": (0.05,), "/conv1/Conv": (0.2,),
         "/conv2/Conv": (0.3, 0.5), "/fc/Gemm": (0.35,)}


@pytest.mark.parametrize("version", VERSIONS)
def test_profile_joins_the_profiler_trace_to_the_layer_table(fake_gpu, run_cli, tmp_path, version):
    """A synthetic profiler trace through the double: shares by precision and type, files, the caveat."""
    gpu, _ = fake_gpu(version)
    gpu.layer_trace.update(TRACE)
    engine = build(tmp_path, tiny_onnx(tmp_path / "qdq.onnx", qdq=True))[0].artifact
    result = run_cli("profile", engine, "--iterations", 10, "--duration", 0, "--out", tmp_path / "prof")
    assert result.exit_code == 0, result.output
    stem = Path(engine).stem
    table = pd.read_csv(tmp_path / "prof" / f"{stem}.profile.csv").set_index("name")
    assert table.loc["/conv2/Conv", "mean_ms"] == pytest.approx(0.4) and table.loc["/conv2/Conv", "runs"] == 10
    assert table.loc["/conv2/Conv", "precision"] == "INT8" and table.loc["/fc/Gemm", "precision"] == "FP32"
    assert table.loc["/conv1/Conv", "type"] == "CaskConvolution" and "i8i8" in table.loc["/conv1/Conv", "tactic"]
    assert table["share_pct"].sum() == pytest.approx(100.0)
    summary = json.loads((tmp_path / "prof" / f"{stem}.summary.json").read_text())
    assert summary["profile_int8_pct"] == pytest.approx(60.0) and summary["profile_fp32_pct"] == pytest.approx(35.0)
    assert summary["profile_reformat_pct"] == pytest.approx(5.0) and summary["profile_layers_sum_ms"] == 1.0
    by_type = pd.read_csv(tmp_path / "prof" / f"{stem}.by_type.csv").set_index("type")
    assert by_type.loc["CaskConvolution", "share_pct"] == pytest.approx(60.0)
    assert (tmp_path / "prof" / f"{stem}.profile.png").read_bytes().startswith(b"\x89PNG")
    assert "INT8" in result.output and "60.0 %" in result.output
    assert "sum of layers 1 ms vs whole-engine GPU compute p50 1 ms" in result.output
    assert "the sum of the layers exceeds the whole engine's GPU compute" in result.output
    # the profiled run is a context of its own, and the timed one ran without a profiler
    contexts = {c[1] for c in gpu.calls if c[0] == "set_tensor_address"}
    assert contexts == {"input", "logits"}


def test_profile_refuses_other_backends(run_cli, digits_engine):
    result = run_cli("profile", digits_engine.artifact)
    assert result.exit_code == 2 and "profile reads TensorRT engines" in result.output


def test_sweep_profiles_tensorrt_cells_and_the_report_shows_them(fake_gpu, run_cli, engines_dir, tmp_path,
                                                                 monkeypatch):
    fake_gpu("11.0.0", "cuda-python")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # no NVML: the GPU columns are empty, not invented
    (tmp_path / "trt.yaml").write_text(
        "name: trt\nmodels: [digits-resnet]\nbackends: [tensorrt]\nprecisions: [fp32]\nbatch_sizes: [2]\n"
        "timing: {warmup_s: 0, iterations: 3, duration_s: 0, repeats: 1, profile: true, cuda_binding: auto}\n"
        "evaluation: {limit: 32}\n")
    result = run_cli("sweep", tmp_path / "trt.yaml", "--engines-dir", engines_dir)
    assert result.exit_code == 0, result.output
    row = pd.read_parquet(Path("reports/trt/results.parquet")).iloc[0]
    assert row["status"] == "ok", row["error"]
    assert row["cuda_binding"] == "cuda-python" and row["timing_convention"] == "trtexec 11"
    assert row["profile_fp32_pct"] + row["profile_reformat_pct"] == pytest.approx(100.0)
    assert row["profile_layers"] > 1 and row["gpu_compute_p50_ms"] == pytest.approx(1.0)
    assert (Path("reports/trt") / row["profile_table"]).is_file()  # relative to the sweep folder, as layer_table
    assert "Per-layer profile" in Path("reports/trt/report.html").read_text()
    assert row[["gpu_sm_clock_mhz_before", "gpu_power_w_after", "gpu_throttle_after", "gpu_state_note"]].isna().all()
