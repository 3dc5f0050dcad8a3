"""harness and its test doubles against NVIDIA's published bindings (tests/conformance; no network here).

TensorRT: the committed name surfaces of the newest 10.x and 11.x binding wheels (tests/conformance/
update_surfaces.py writes them). pycuda: the surface of its sdist's wrapper source. cuda-python: the installed
`cuda.bindings` module itself, which imports without a GPU.
"""

from pathlib import Path

import pytest
from conformance.surface import HARNESS, Surface, harness_uses, offered_names, surfaces, used_names
from fakes.fake_pycuda import FakeGpu, make_pycuda
from fakes.fake_tensorrt import make_tensorrt

TENSORRT = surfaces("tensorrt")
PYCUDA = surfaces("pycuda")
# The variables that hold a binding module in harness's source, by convention.
ROOTS = {"tensorrt": {"trt"}, "pycuda": {"drv"}, "cuda-python": {"cudart"}}


def report(surface: Surface, uses: dict[str, str]) -> list[str]:
    return [f"{name} ({uses[name]}) is not in {surface.package} {surface.version}" for name in surface.missing(uses)]


def double_for(surface: Surface):
    """The TensorRT double of the same major version as a published surface."""
    return make_tensorrt(surface.version, FakeGpu())


def test_surfaces_cover_the_newest_10x_and_11x():
    majors = {s.version.split(".")[0] for s in TENSORRT}
    assert {"10", "11"} <= majors and PYCUDA
    assert all(len(s.names) > 500 for s in TENSORRT + PYCUDA)  # a whole binding, not a stub


def test_the_source_scan_finds_what_harness_calls():
    """The scan is not vacuous: the runner's and builder's calls are found (with their file and line)."""
    uses = harness_uses(ROOTS["tensorrt"])
    assert {"execute_async_v3", "set_tensor_address", "build_serialized_network", "STRONGLY_TYPED",
            "nptype", "create_engine_inspector", "node_name"} <= set(uses)
    assert uses["execute_async_v3"].startswith("harness/backends/tensorrt/runtime.py:")


@pytest.mark.parametrize("surface", TENSORRT, ids=lambda s: s.version)
def test_every_tensorrt_name_harness_uses_is_bound(surface):
    assert report(surface, harness_uses(ROOTS["tensorrt"])) == []


@pytest.mark.parametrize("surface", TENSORRT, ids=lambda s: s.version)
def test_every_name_the_tensorrt_double_offers_is_bound(surface):
    offered = offered_names(double_for(surface))
    assert surface.missing(offered) == [], f"the {surface.version} double offers names TensorRT does not bind"


def test_the_11x_double_offers_nothing_that_11x_removed():
    old = [s for s in TENSORRT if s.version.startswith("10.")][-1]
    new = [s for s in TENSORRT if s.version.startswith("11.")][-1]
    removed = {n for n in old.names if not new.binds(n)}
    assert {"EXPLICIT_BATCH", "int8_calibrator", "platform_has_fast_fp16"} <= removed  # the surfaces tell them apart
    assert sorted(offered_names(double_for(new)) & removed) == []
    assert {"EXPLICIT_BATCH", "FP16"} & offered_names(double_for(old))  # the 10.x double keeps what 10.x has


def test_a_made_up_name_in_harness_tensorrt_code_fails_with_name_and_version():
    source = (HARNESS / "backends" / "tensorrt" / "runtime.py").read_text()
    assert "execute_async_v3(" in source
    broken = source.replace("execute_async_v3(", "execute_async_v4(", 1)
    for surface in TENSORRT:
        problems = report(surface, {n: f"runtime.py:{line}" for n, line in used_names(broken, {"trt"}).items()})
        assert len(problems) == 1 and problems[0].startswith("execute_async_v4 (runtime.py:")
        assert problems[0].endswith(f"is not in {surface.package} {surface.version}")
    removed_flag = "config.set_flag(trt.BuilderFlag.FP16)\n"
    uses = used_names(removed_flag, {"trt"})
    assert [s.version for s in TENSORRT if s.missing(uses)] == [s.version for s in TENSORRT
                                                                 if s.version.startswith("11.")]


@pytest.mark.parametrize("surface", PYCUDA, ids=lambda s: s.version)
def test_pycuda_names_harness_uses_and_the_double_offers_are_bound(surface):
    _, driver = make_pycuda(FakeGpu())
    assert surface.missing(offered_names(driver)) == []
    assert report(surface, harness_uses(ROOTS["pycuda"])) == []


def test_pycuda_has_no_cuda_graph_api():
    """Why the pycuda provider captures graphs through cuda-python: pycuda binds no stream capture."""
    assert not {"begin_capture", "end_capture", "Graph"} & PYCUDA[-1].names


def test_cuda_python_names_harness_uses_and_the_double_offers_are_bound():
    bindings = pytest.importorskip("cuda.bindings", reason="cuda-python not installed: pip install -e '.[dev]'")
    from conformance.surface import module_surface
    from cuda.bindings import runtime

    surface = module_surface(runtime, "cuda-bindings", bindings.__version__)
    assert surface.binds("cudaStreamBeginCapture") and not surface.binds("cudaStreamBeginCaptureV2")
    assert report(surface, harness_uses(ROOTS["cuda-python"])) == []
    fakes = Path(__file__).parent / "fakes" / "fake_cudart.py"
    if fakes.exists():
        from fakes.fake_cudart import make_cudart

        assert surface.missing(offered_names(make_cudart(FakeGpu()))) == []


def test_torch_names_the_provider_uses_and_the_double_offers_are_bound():
    import torch
    from conformance.surface import module_surface
    from fakes.fake_torch import make_torch

    real = {name: module_surface(module, name, torch.__version__)
            for name, module in (("torch", torch), ("torch.cuda", torch.cuda))}
    both = Surface("torch", torch.__version__, "exact", real["torch"].names | real["torch.cuda"].names)
    for name, module in make_torch(FakeGpu()).items():
        assert real[name].missing(offered_names(module)) == [], name
    source = (HARNESS / "cuda" / "torch_api.py").read_text()
    uses = {n: f"harness/cuda/torch_api.py:{line}" for n, line in used_names(source, {"torch"}).items()}
    assert {"CUDAGraph", "capture_begin", "replay", "elapsed_time", "cuda_stream", "data_ptr"} <= set(uses)
    assert report(both, uses) == []
