"""CPU reference backend: ONNX Runtime's CPU execution provider runs the same ONNX TensorRT would.

Two ways to run one file, kept apart on purpose:
- as written (`infer`, `infer_all`, every accuracy figure): every float fusion on, but Q/DQ executed as the graph
  says. ONNX Runtime otherwise fuses `Q -> DQ -> MatMul` into integer kernels (MatMulIntegerToFloat, QLinear*)
  whose results depend on the CPU: on x86 without VNNI its 8-bit kernels saturate, and a ViT's file reads 15 dB
  instead of 32 dB. A reference must give the same answer on every CPU.
- deployed (`time`): what a user deploying the file on ONNX Runtime gets, Q/DQ fusions included. Its outputs are
  checked against the as-written run (harness.measure.evaluate.check_deployed), so a fast-but-wrong kernel is
  reported, not hidden.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np

from harness.backends.base import Backend, BuildOptions, Runner, Timing, quantized_type, timed_loop
from harness.errors import HarnessError

# ONNX Runtime's errors only: its graph optimizer warns, once per session and node, about work it skips on the CPU
# (e.g. it cannot constant-fold the FP16 bias scales of ModelOpt's int8-fp16 files), which says nothing about the file.
QUIET = 3
AS_WRITTEN = "as written (ORT_ENABLE_ALL, Q/DQ not fused)"
DEPLOYED = "deployed (ORT_ENABLE_ALL, Q/DQ fused into integer kernels)"


def session_options(as_written: bool = True, threads: int = 0, spin_wait: bool = True):
    """ONNX Runtime session options; `as_written` keeps every QuantizeLinear/DequantizeLinear as the graph has it."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    if not spin_wait:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = QUIET
    if as_written:
        so.add_session_config_entry("session.disable_quant_qdq", "1")  # no Q/DQ -> integer-kernel fusion
        so.add_session_config_entry("session.disable_double_qdq_remover", "1")  # Q/DQ pairs stay as written
    return so


# ONNX Runtime's "ReluQuantRewrite" drops a Relu before a QuantizeLinear whose zero point it takes for the type's
# minimum; it checks only INT8 (-128) and UINT8 (0), so it drops the Relu before every FP8 QuantizeLinear (zero point
# 0.0, and FP8 goes down to -448): a digits-resnet FP8 file read -10 dB instead of 31 dB. Never in a reference run.
AS_WRITTEN_DISABLED = ["ReluQuantRewrite"]


def open_session(model: str | bytes | Path, so, as_written: bool = True):
    import onnxruntime as ort

    src = str(model) if isinstance(model, Path) else model
    try:
        return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=AS_WRITTEN_DISABLED if as_written else None)
    except Exception as exc:  # ORT raises its own exception types
        where = model if isinstance(model, (str, Path)) else "the ONNX"
        missing = re.search(r"NOT_IMPLEMENTED : Could not find an implementation for (\w+)\(\d+\) node with name "
                            r"'([^']*)'", str(exc))
        if missing and _holds_bf16(model):
            raise HarnessError(f"ONNX Runtime's CPU provider has no BF16 kernel for {missing.group(1)} (node "
                               f"'{missing.group(2)}' of {where}): run bf16 on --backend tensorrt (an Ampere or newer "
                               "GPU); its export check scored it on the CPU through an FP32 emulation with BF16 "
                               "rounding") from exc
        raise HarnessError(f"ONNX Runtime cannot load {where}: {str(exc).splitlines()[0]}") from exc


def _holds_bf16(model: str | bytes | Path) -> bool:
    import onnx

    from harness.export.precision import holds_bf16

    try:
        proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model))
    except Exception:  # not readable as ONNX: the generic message applies
        return False
    return holds_bf16(proto)


def reference_session(model: str | bytes | Path):
    """A session that computes the file as written: for every accuracy figure harness reports."""
    return open_session(model, session_options(as_written=True))


class CpuRunner(Runner):
    """`qdq`: the file holds Q/DQ, so the deployed session (timing) differs from the as-written one (accuracy).
    `spin_wait` False: idle intra-op threads sleep instead of holding their core (harness.backends.cpu_threads)."""

    def __init__(self, artifact: Path, threads: int = 0, spin_wait: bool = True, qdq: bool = False):
        self.artifact, self.threads, self.spin_wait, self.qdq = artifact, threads, spin_wait, qdq
        self.session = open_session(artifact, session_options(True, threads, spin_wait))
        self._deployed = None if qdq else self.session
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def deployed(self):
        """The session a user deploying on ONNX Runtime gets: opened when first timed."""
        if self._deployed is None:
            self._deployed = open_session(self.artifact, session_options(False, self.threads, self.spin_wait),
                                          as_written=False)
        return self._deployed

    @property
    def timed_graph(self) -> str:
        return DEPLOYED if self.qdq else AS_WRITTEN

    def _run(self, session, names: list[str], x: np.ndarray) -> list[np.ndarray]:
        try:
            outs = session.run(names, {self.input_name: x.astype(self.input_dtype, copy=False)})
        except Exception as exc:  # ORT's errors span lines ("... index: 1 Got: 1 Expected: 3\n Please fix ...")
            shape = "x".join(map(str, x.shape))
            raise HarnessError(f"ONNX Runtime cannot run {self.artifact} on a {shape} input: "
                               f"{' '.join(line.strip() for line in str(exc).splitlines() if line.strip())}") from exc
        return [out.astype(np.float32, copy=False) for out in outs]

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self._run(self.session, self.output_names[:1], x)[0]

    def infer_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self._run(self.session, self.output_names, x), strict=True))

    def time(self, x: np.ndarray, warmup_s: float, iterations: int, duration_s: float, **opts) -> Timing:
        self._run(self.deployed, self.output_names[:1], x)  # a file that does not fit fails here in one line
        run, names, feed = self.deployed.run, self.output_names[:1], {self.input_name: x.astype(self.input_dtype)}
        lat, wall = timed_loop(lambda: run(names, feed), warmup_s, iterations, duration_s)
        return Timing(lat, wall, len(x), includes=f"host latency of session.run (input in host memory); "
                                                  f"graph {self.timed_graph}")

    def serving(self, workers: int, streams: int = 1) -> list:
        """Serving is deployment: the deployed session answers (harness.measure.serving)."""
        return [(self.deployed_runner() or self).infer] * workers

    def deployed_runner(self) -> Runner | None:
        """The timed session as a Runner, for checking its outputs; None when it is the as-written one."""
        return _Deployed(self) if self.qdq else None


class _Deployed(Runner):
    def __init__(self, runner: CpuRunner):
        self.runner = runner

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.runner._run(self.runner.deployed, self.runner.output_names[:1], x)[0]

    def time(self, *args, **kwargs) -> Timing:
        return self.runner.time(*args, **kwargs)


# The session build() opened to check the last artifact, which load() takes over when it opens that same file with the
# same settings: one ONNX Runtime session per artifact in a process that builds then runs it (a sweep).
_CHECKED: dict[tuple, CpuRunner] = {}


def _identity(path: Path, threads: int, spin_wait: bool, qdq: bool) -> tuple:
    """The file (a rename keeps device, inode, size and mtime) and the session settings."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, threads, spin_wait, qdq


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
        qdq = quantized_type(options.precision) is not None
        # ONNX Runtime must accept the file (an error names the user's file); that session then serves the artifact
        runner = CpuRunner(Path(onnx_path), self.threads, self.spin_wait, qdq)
        shutil.copyfile(onnx_path, artifact)
        runner.artifact = artifact
        _CHECKED.clear()
        _CHECKED[_identity(artifact, self.threads, self.spin_wait, qdq)] = runner

    def load(self, artifact: Path, options: BuildOptions) -> Runner:
        qdq = quantized_type(options.precision) is not None
        runner = _CHECKED.pop(_identity(artifact, self.threads, self.spin_wait, qdq), None)
        if runner is None:
            return CpuRunner(artifact, self.threads, self.spin_wait, qdq)
        runner.artifact = artifact  # it was checked under its temporary name
        return runner
