"""The backend interface: build an artifact from ONNX, load it, infer, and time it."""

from __future__ import annotations

import importlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from harness.errors import HarnessError

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int8-fp16", "fp8", "fp8-fp16")
QUANTIZED_TYPES = ("int8", "fp8")  # the Q/DQ types a precision's name starts with (FP8 = E4M3)


def quantized_type(precision: str) -> str | None:
    """'int8' for int8 / int8-fp16, 'fp8' for fp8 / fp8-fp16 (what the Q/DQ nodes hold), None for a float one."""
    head = precision.split("-")[0]
    return head if head in QUANTIZED_TYPES else None


def float_type(precision: str) -> str:
    """What the parts outside Q/DQ compute in: fp32, fp16 or bf16 (fp16 for int8-fp16 / fp8-fp16)."""
    if quantized_type(precision) is None:
        return precision
    return precision.partition("-")[2] or "fp32"


@dataclass(frozen=True)
class BuildOptions:
    """What shapes and builder settings an artifact is built for; part of the engine cache key."""

    precision: str = "fp32"
    batch_min: int = 1
    batch_opt: int = 1
    batch_max: int = 32
    workspace_mb: int = 4096
    opt_level: int = 3
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Timing:
    """Per-query latencies of a timed loop and what they include.

    `latency_ms` is the figure a user waits for (named by `includes`); `components` holds the parts a backend
    can separate, such as gpu_compute_ms, h2d_ms, d2h_ms, enqueue_ms. `convention` names the timing defaults
    that applied (TensorRT: "trtexec 10" or "trtexec 11"); `streams` how many ran queries at once.
    """

    latency_ms: np.ndarray
    wall_s: float
    batch: int
    includes: str
    components: dict[str, np.ndarray] = field(default_factory=dict)
    convention: str = ""
    streams: int = 1

    @property
    def queries(self) -> int:
        return len(self.latency_ms)


class Runner(ABC):
    """A loaded artifact ready to infer on numpy batches."""

    @abstractmethod
    def infer(self, x: np.ndarray) -> np.ndarray: ...

    def infer_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by name, for comparisons; a runner of one unnamed output calls it what harness exports."""
        return {"logits": self.infer(x)}

    @abstractmethod
    def time(self, x: np.ndarray, warmup_s: float, iterations: int, duration_s: float, **opts) -> Timing: ...

    def serving(self, workers: int, streams: int = 1) -> list[Callable[[np.ndarray], np.ndarray]]:
        """One batch-answering callable per serving thread (harness.measure.serving); they run at the same time.

        ONNX Runtime's session.run and an eager torch forward may be called from several threads, so the threads
        share infer; TensorRT gives each its own buffers (TensorRTRunner.serving).
        """
        return [self.infer] * workers


class Backend(ABC):
    name: str = ""
    suffix: str = ""
    precisions: tuple[str, ...] = PRECISIONS

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """Library versions that change what an artifact contains (part of the cache key)."""

    def device(self) -> dict[str, str]:
        """The hardware an artifact is tied to (part of the cache key)."""
        return {}

    @abstractmethod
    def build(self, onnx_path: Path, artifact: Path, options: BuildOptions) -> None:
        """Write the artifact; raise HarnessError with the reason when the ONNX cannot be built."""

    @abstractmethod
    def load(self, artifact: Path, options: BuildOptions) -> Runner: ...


_BACKENDS = {
    "cpu": "harness.backends.cpu:CpuBackend",
    "tensorrt": "harness.backends.tensorrt:TensorRTBackend",
    "torch": "harness.backends.torch_backend:TorchBackend",
}


def backend_names() -> list[str]:
    return list(_BACKENDS)


def get_backend(name: str, **kwargs) -> Backend:
    """Import the backend's module only when asked, so optional dependencies stay optional."""
    if name not in _BACKENDS:
        raise HarnessError(f"unknown backend {name!r}: choose one of {', '.join(_BACKENDS)}")
    module, _, cls = _BACKENDS[name].partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("harness"):
            raise HarnessError(f"backend {name!r} is not available in this version of harness") from exc
        raise
    return getattr(mod, cls)(**kwargs)


def timed_loop(step, warmup_s: float, iterations: int, duration_s: float) -> tuple[np.ndarray, float]:
    """Run `step` for a warm-up time, then until both `iterations` and `duration_s` are reached.

    Returns per-call latencies (ms, perf_counter) and the wall time of the timed part. The loop does nothing
    but call and read the clock, so its overhead stays well inside run-to-run noise.
    """
    clock = time.perf_counter
    end = clock() + warmup_s
    step()
    while clock() < end:
        step()
    stamps = [clock()]
    deadline = stamps[0] + duration_s
    n = 0
    while n < iterations or stamps[-1] < deadline:
        step()
        stamps.append(clock())
        n += 1
    t = np.asarray(stamps)
    return np.diff(t) * 1e3, float(t[-1] - t[0])
