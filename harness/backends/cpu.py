"""CPU reference backend: ONNX Runtime's CPU execution provider runs the same ONNX TensorRT would."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from harness.backends.base import Backend, BuildOptions, Runner, Timing, timed_loop
from harness.errors import HarnessError

# ONNX Runtime's errors only: its graph optimizer warns, once per session and node, about work it skips on the CPU
# (e.g. it cannot constant-fold the FP16 bias scales of ModelOpt's int8-fp16 files), which says nothing about the file.
QUIET = 3


class CpuRunner(Runner):
    def __init__(self, artifact: Path, threads: int = 0, spin_wait: bool = True):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads
        if not spin_wait:  # idle intra-op threads sleep instead of holding their core (harness.backends.cpu_threads)
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = QUIET
        self.artifact = artifact
        try:
            self.session = ort.InferenceSession(str(artifact), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types
            raise HarnessError(f"ONNX Runtime cannot load {artifact}: {str(exc).splitlines()[0]}") from exc
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self.output_names = [o.name for o in self.session.get_outputs()]

    def infer(self, x: np.ndarray) -> np.ndarray:
        try:
            out = self.session.run(self.output_names[:1], {self.input_name: x.astype(self.input_dtype, copy=False)})
        except Exception as exc:  # ORT's errors span lines ("... index: 1 Got: 1 Expected: 3\n Please fix ...")
            shape = "x".join(map(str, x.shape))
            raise HarnessError(f"ONNX Runtime cannot run {self.artifact} on a {shape} input: "
                               f"{' '.join(line.strip() for line in str(exc).splitlines() if line.strip())}") from exc
        return out[0].astype(np.float32, copy=False)

    def infer_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, {self.input_name: x.astype(self.input_dtype, copy=False)})
        return {name: out.astype(np.float32, copy=False) for name, out in zip(self.output_names, outs, strict=True)}

    def time(self, x: np.ndarray, warmup_s: float, iterations: int, duration_s: float, **opts) -> Timing:
        self.infer(x)  # a file that does not fit the input fails here in one line, not in the timed loop
        run, names, feed = self.session.run, self.output_names[:1], {self.input_name: x.astype(self.input_dtype)}
        lat, wall = timed_loop(lambda: run(names, feed), warmup_s, iterations, duration_s)
        return Timing(lat, wall, len(x), includes="host latency of session.run (input in host memory)")


# The session build() opened to check the last artifact, which load() takes over when it opens that same file with the
# same settings: one ONNX Runtime session per artifact in a process that builds then runs it (a sweep).
_CHECKED: dict[tuple, CpuRunner] = {}


def _identity(path: Path, threads: int, spin_wait: bool) -> tuple:
    """The file (a rename keeps device, inode, size and mtime) and the session settings."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, threads, spin_wait


class CpuBackend(Backend):
    """The artifact is the verified ONNX itself; building checks that ONNX Runtime accepts it."""

    name, suffix = "cpu", ".onnx"

    def __init__(self, threads: int = 0, spin_wait: bool = True):
        self.threads, self.spin_wait = threads, spin_wait

    def versions(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__}

    def device(self) -> dict[str, str]:
        import platform

        return {"cpu": platform.processor() or platform.machine()}

    def build(self, onnx_path: Path, artifact: Path, options: BuildOptions) -> None:
        shutil.copyfile(onnx_path, artifact)
        runner = CpuRunner(artifact, self.threads, self.spin_wait)
        _CHECKED.clear()
        _CHECKED[_identity(artifact, self.threads, self.spin_wait)] = runner

    def load(self, artifact: Path, options: BuildOptions) -> Runner:
        runner = _CHECKED.pop(_identity(artifact, self.threads, self.spin_wait), None)
        if runner is None:
            return CpuRunner(artifact, self.threads, self.spin_wait)
        runner.artifact = artifact  # it was checked under its temporary name
        return runner
