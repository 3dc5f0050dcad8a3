"""Eager PyTorch (fp32/fp16/bf16, CPU or CUDA): the baseline row beside TensorRT in every comparison.

The artifact is a small JSON naming the model spec, precision and device; loading rebuilds the module, so
what is timed is exactly what a PyTorch user would run. Built from the ModelSpec (build_from_spec), not the ONNX.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

from harness.backends.base import Backend, BuildOptions, Runner, Timing, timed_loop
from harness.errors import HarnessError
from harness.models.registry import ModelSpec, load_model


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TorchRunner(Runner):
    def __init__(self, spec: ModelSpec, precision: str, device: str):
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise HarnessError("this torch artifact was built for CUDA but no CUDA GPU is visible; rebuild it "
                               "here with build-engine --backend torch")
        self.torch = torch
        self.device = torch.device(device)
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
        self.model = load_model(spec).to(self.device, self.dtype)

    @property
    def on_gpu(self) -> bool:
        """A CUDA run's rows carry the GPU's state (harness.measure.gpu_state)."""
        return self.device.type == "cuda"

    def _forward(self, x):
        with self.torch.inference_mode():
            return self.model(x)

    def infer(self, x: np.ndarray) -> np.ndarray:
        t = self.torch.from_numpy(np.ascontiguousarray(x)).to(self.device, self.dtype)
        return self._forward(t).float().cpu().numpy()

    def time(self, x: np.ndarray, warmup_s: float, iterations: int, duration_s: float, **opts) -> Timing:
        torch = self.torch
        if self.device.type == "cpu":
            t = torch.from_numpy(np.ascontiguousarray(x)).to(self.dtype)
            lat, wall = timed_loop(lambda: self._forward(t), warmup_s, iterations, duration_s)
            return Timing(lat, wall, len(x), includes="host latency of the eager forward (input in memory)")
        pinned = torch.from_numpy(np.ascontiguousarray(x)).to(self.dtype).pin_memory()
        events = []

        def step():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t = pinned.to(self.device, non_blocking=True)
            start.record()
            out = self._forward(t)
            end.record()
            out.cpu()  # D2H on the same stream: synchronizes, so both events have completed
            events.append(start.elapsed_time(end))

        lat, wall = timed_loop(step, warmup_s, iterations, duration_s)
        compute = np.asarray(events[-len(lat):], dtype=np.float64)
        return Timing(lat, wall, len(x), components={"gpu_compute_ms": compute},
                      includes="host latency of H2D copy + eager forward + D2H copy (synchronous); "
                               "gpu_compute = the forward alone (CUDA events); throughput = samples / host wall "
                               "time")


class TorchBackend(Backend):
    name, suffix = "torch", ".torch"
    precisions = ("fp32", "fp16", "bf16")

    def __init__(self, device: str | None = None):
        self.device_type = device or default_device()

    def versions(self) -> dict[str, str]:
        import torch

        return {"torch": torch.__version__}

    def device(self) -> dict[str, str]:
        if self.device_type == "cuda":
            import torch

            major, minor = torch.cuda.get_device_capability(0)
            return {"gpu": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}
        return {"cpu": platform.processor() or platform.machine()}

    def build(self, onnx_path: Path, artifact: Path, options: BuildOptions) -> None:
        raise HarnessError("the torch backend runs the PyTorch model itself, not an ONNX: build it with "
                           "harness build-engine --backend torch")

    def build_from_spec(self, spec: ModelSpec, artifact: Path, options: BuildOptions) -> None:
        """Record what to rebuild, after checking that the model loads and runs at this precision and device."""
        record = {"model": spec.to_dict(), "precision": options.precision, "device": self.device_type}
        sample = np.zeros((options.batch_min, *spec.input_shape), dtype=np.float32)
        TorchRunner(spec, options.precision, self.device_type).infer(sample)
        Path(artifact).write_text(json.dumps(record, indent=2, sort_keys=True))

    def load(self, artifact: Path, options: BuildOptions) -> Runner:
        try:
            record = json.loads(Path(artifact).read_text())
            spec = ModelSpec.from_dict(record["model"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise HarnessError(f"{artifact}: not a torch artifact ({exc}); rebuild with build-engine") from exc
        return TorchRunner(spec, record["precision"], record["device"])
