"""Where a row was measured: host, hardware and library versions, so merged runner results stay comparable.

Nothing here needs an optional dependency: versions come from package metadata and `nvidia-smi`, maximum
clocks from NVML when it is there, and a missing piece reads "n/a".
"""

from __future__ import annotations

import platform
import shutil
import socket
import subprocess
from importlib import metadata
from pathlib import Path

from harness import __version__

NA = "n/a"


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def _version(*dists: str) -> str:
    """The first installed distribution's version (TensorRT ships as tensorrt or tensorrt-cuXX)."""
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return NA


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# Instruction-set features that change what ONNX Runtime's integer kernels compute and how fast (8-bit dot
# products saturate on x86 without VNNI); /proc/cpuinfo flag -> name in the row.
ISA_FLAGS = {"avx2": "avx2", "avx512f": "avx512f", "avx512_vnni": "avx512-vnni", "avx_vnni": "avx-vnni",
             "amx_int8": "amx-int8", "asimddp": "arm-dotprod", "i8mm": "arm-i8mm"}


def cpu_isa() -> str:
    """The features of ISA_FLAGS this CPU has, space-separated ('none' when none; n/a off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return NA
    flags = set()
    for line in text.splitlines():
        if line.split(":", 1)[0].strip() in ("flags", "Features"):
            flags.update(line.split(":", 1)[1].split())
    return " ".join(name for flag, name in ISA_FLAGS.items() if flag in flags) or "none"


def _gpu() -> tuple[str, str, str]:
    """(GPU names, driver, CUDA version the driver supports) from nvidia-smi, when there is one."""
    if not shutil.which("nvidia-smi"):
        return NA, NA, NA
    query = _run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
    rows = [line.split(", ") for line in query.splitlines() if ", " in line]
    header = _run(["nvidia-smi"])
    cuda = header.split("CUDA Version:")[1].split()[0] if "CUDA Version:" in header else NA
    if not rows:
        return NA, NA, cuda
    return "; ".join(dict.fromkeys(r[0] for r in rows)), rows[0][1], cuda


def _git_commit() -> str:
    """The commit of the harness checkout (with -dirty when it has local changes), or n/a for an install."""
    repo = Path(__file__).resolve().parents[2]
    commit = _run(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo)
    if not commit:
        return NA
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo)
    return f"{commit}-dirty" if dirty else commit


def capture() -> dict[str, str]:
    from harness.measure.gpu_state import clocks_summary

    gpu, driver, cuda = _gpu()
    return {
        "env_host": socket.gethostname(),
        "env_cpu": _cpu(),
        "env_cpu_isa": cpu_isa(),
        "env_gpu": gpu,
        "env_driver": driver,
        "env_cuda": cuda,
        "env_gpu_clocks": (clocks_summary() or NA) if gpu != NA else NA,
        "env_tensorrt": _version("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-cu11"),
        "env_torch": _version("torch"),
        "env_onnxruntime": _version("onnxruntime"),
        "env_modelopt": _version("nvidia-modelopt"),
        "env_harness": __version__,
        "env_git_commit": _git_commit(),
        "env_python": platform.python_version(),
    }
