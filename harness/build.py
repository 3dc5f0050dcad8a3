"""Model -> verified ONNX -> backend artifact, each step content-hashed and cached under engines/."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from harness import __version__, cache_integrity
from harness.backends.base import BuildOptions, Runner, get_backend
from harness.errors import HarnessError
from harness.export import EXPORT_REVISION
from harness.fileio import atomic_write, clean_stale_temps, locked, sha256_file
from harness.models.registry import ModelSpec

ENGINES_DIR = Path("engines")


@dataclass
class EngineMeta:
    """The JSON sidecar of an artifact: enough to rebuild, verify and evaluate it later."""

    key: str
    backend: str
    precision: str
    model: dict
    input_name: str
    input_shape: list[int]
    batch: list[int]
    onnx_path: str
    onnx_sha256: str
    artifact: str
    artifact_sha256: str
    artifact_bytes: int
    versions: dict
    device: dict
    options: dict
    build_s: float
    created_utc: str
    quant: dict | None = None
    extra: dict = field(default_factory=dict)

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec.from_dict(self.model)

    @property
    def build_options(self) -> BuildOptions:
        return BuildOptions(**self.options)

    def save(self, path: Path) -> None:
        atomic_write(path, json.dumps(asdict(self), indent=2, sort_keys=True).encode())

    @classmethod
    def load(cls, path: Path) -> EngineMeta:
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise HarnessError(f"{path}: not a harness engine sidecar ({exc}); rebuild with build-engine") from exc


def sha256_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def library_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {"harness": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}


def quantizer_versions(quant: dict | None) -> dict[str, str | None]:
    """ModelOpt's release keys the files it makes (a new one may place or calibrate differently); read from package
    metadata, so nothing is imported."""
    if not quant or quant.get("tool") != "modelopt":
        return {}
    from importlib import metadata

    try:
        return {"nvidia-modelopt": metadata.version("nvidia-modelopt")}
    except metadata.PackageNotFoundError:
        return {"nvidia-modelopt": None}


def onnx_cache_path(spec: ModelSpec, precision: str, engines_dir: Path, quant: dict | None = None,
                    verify: str = "strict") -> Path:
    """Where the ONNX for this request is kept (whether or not it exists yet): the path is its content key.

    A file kept under a weaker export check than strict is another cache entry, so it never passes for a
    strictly checked one.
    """
    weights_sha = sha256_file(Path(spec.weights)) if spec.weights else None
    request = {"model": spec.to_dict(), "weights": weights_sha, "precision": precision, "quant": quant,
               "versions": {**library_versions(), **quantizer_versions(quant)}, "export": EXPORT_REVISION}
    if verify != "strict":
        request["verify"] = verify
    key = sha256_json(request)[:16]
    return engines_dir / "onnx" / f"{spec.name.replace(':', '_').replace('/', '_')}-{precision}-{key}.onnx"


def onnx_for(spec: ModelSpec, precision: str, engines_dir: Path, quant: dict | None = None, log=None,
             verify: str = "strict") -> Path:
    """The verified ONNX for a model and precision, exported once per content key."""
    from harness.export.variants import export_variant, verify_sidecar

    out = onnx_cache_path(spec, precision, engines_dir, quant, verify)
    clean_stale_temps(out.parent)
    if cache_integrity.reuse(out, log) is not None:
        return out
    with locked(out):  # another worker may be exporting the same key: wait for it rather than race it
        if cache_integrity.check(out) is not None:
            return out
        if log:
            log(f"exporting {spec.name} ({precision}) to ONNX")
        start = time.perf_counter()
        export_variant(spec, precision, out, quant, log=log, verify=verify)
        # The ONNX, its export check and what making them cost are committed together by one record.
        cache_integrity.commit(out, [verify_sidecar(out)], prepare_s=round(time.perf_counter() - start, 3))
    return out


def prepare_seconds(onnx_path: Path) -> float | None:
    """Seconds calibration + export took when this cached ONNX was made (None for a file harness did not cache)."""
    return (cache_integrity.check(onnx_path) or {}).get("prepare_s")


def export_check(onnx_path: Path) -> dict | None:
    """The export check's figures kept beside an ONNX (None for a file harness did not export)."""
    from harness.export.variants import verify_sidecar

    try:
        return json.loads(verify_sidecar(onnx_path).read_text())
    except (OSError, ValueError):
        return None


def artifact_key(onnx_sha: str, backend, options: BuildOptions, input_shape) -> str:
    return sha256_json({"onnx": onnx_sha, "backend": backend.name, "options": options.to_dict(),
                        "input_shape": list(input_shape), "versions": backend.versions(),
                        "device": backend.device()})[:24]


def _cached(meta_path: Path, artifact: Path) -> EngineMeta | None:
    """A cache hit only if the sidecar parses and the artifact's size and hash match it."""
    if not (meta_path.is_file() and artifact.is_file()) or cache_integrity.check(meta_path) is None:
        return None
    try:
        meta = EngineMeta.load(meta_path)
    except HarnessError:
        return None
    if artifact.stat().st_size != meta.artifact_bytes or sha256_file(artifact) != meta.artifact_sha256:
        return None
    return meta


def engine_paths(spec: ModelSpec, backend, options: BuildOptions, onnx_sha: str,
                 engines_dir: Path) -> tuple[str, Path, Path]:
    """(key, artifact, sidecar) of the engine built from this ONNX with these options."""
    key = artifact_key(onnx_sha, backend, options, spec.input_shape)
    stem = f"{spec.name.replace(':', '_').replace('/', '_')}-{options.precision}-{backend.name}-{key}"
    return key, engines_dir / f"{stem}{backend.suffix}", engines_dir / f"{stem}.json"


def backend_for(name: str, cuda_binding: str = "auto", cpu: dict | None = None):
    """The backend; TensorRT's runs through the CUDA binding asked for (the others use no CUDA layer), the CPU
    backend's sessions with the `cpu` settings given (threads, spin_wait; harness.backends.cpu_threads)."""
    if name == "tensorrt":
        return get_backend(name, cuda_binding=cuda_binding)
    return get_backend(name, **cpu) if name == "cpu" and cpu else get_backend(name)


def cached_engine(spec: ModelSpec, backend_name: str, options: BuildOptions, onnx_path: Path,
                  engines_dir: Path, cuda_binding: str = "auto") -> EngineMeta | None:
    """The verified cache entry build_artifact would reuse, without building anything."""
    backend = backend_for(backend_name, cuda_binding)
    _, artifact, meta_path = engine_paths(spec, backend, options, sha256_file(onnx_path), engines_dir)
    return _cached(meta_path, artifact)


def build_artifact(
    spec: ModelSpec,
    backend_name: str,
    options: BuildOptions,
    engines_dir: Path = ENGINES_DIR,
    quant: dict | None = None,
    onnx_path: Path | None = None,
    log=None,
    verify: str = "strict",
    cuda_binding: str = "auto",
    cpu: dict | None = None,
) -> tuple[EngineMeta, bool]:
    """Return (metadata, cache_hit); a truncated or mismatched artifact is rebuilt, never loaded."""
    backend = backend_for(backend_name, cuda_binding, cpu)
    if options.precision not in backend.precisions:
        raise HarnessError(
            f"--precision {options.precision} is not supported by backend {backend_name}: "
            f"use one of {', '.join(backend.precisions)}"
        )
    if not 1 <= options.batch_min <= options.batch_opt <= options.batch_max:
        raise HarnessError(f"batch profile {options.batch_min}/{options.batch_opt}/{options.batch_max} "
                           "must satisfy 1 <= min <= opt <= max")
    # Backends that run the PyTorch model, not the ONNX, key on the fp32 ONNX: its bytes hash graph and weights,
    # and no other precision's export or calibration is made for them.
    build_from_spec = getattr(backend, "build_from_spec", None)
    if build_from_spec:
        onnx_path = onnx_path or onnx_for(spec, "fp32", engines_dir, None, log, verify)
    else:
        onnx_path = onnx_path or onnx_for(spec, options.precision, engines_dir, quant, log, verify)
    onnx_sha = sha256_file(onnx_path)
    key, artifact, meta_path = engine_paths(spec, backend, options, onnx_sha, engines_dir)
    clean_stale_temps(engines_dir)
    meta = _cached(meta_path, artifact)
    if meta is not None:
        return meta, True
    with locked(artifact):  # two workers building one key: the second waits and takes the first's
        meta = _cached(meta_path, artifact)
        if meta is not None:
            return meta, True
        if log:
            log(f"building {backend_name} artifact {artifact.name}")
        start = time.perf_counter()
        if build_from_spec:
            atomic_write(artifact, lambda tmp: build_from_spec(spec, tmp, options))
        else:
            atomic_write(artifact, lambda tmp: backend.build(Path(onnx_path), tmp, options))
        meta = EngineMeta(
            key=key, backend=backend_name, precision=options.precision, model=spec.to_dict(),
            input_name="input", input_shape=list(spec.input_shape),
            batch=[options.batch_min, options.batch_opt, options.batch_max],
            onnx_path=str(onnx_path), onnx_sha256=onnx_sha, artifact=str(artifact),
            artifact_sha256=sha256_file(artifact), artifact_bytes=artifact.stat().st_size,
            versions={**library_versions(), **backend.versions()}, device=backend.device(),
            options=options.to_dict(), build_s=round(time.perf_counter() - start, 3),
            created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"), quant=quant,
            extra={"export_check": export_check(Path(onnx_path))},
        )
        meta.save(meta_path)
        cache_integrity.commit(meta_path)
        return meta, False


def sidecar_of(path: Path) -> Path:
    path = Path(path)
    return path if path.suffix == ".json" else path.with_suffix(".json")


def load_engine(path: Path, cuda_binding: str = "auto", cpu: dict | None = None) -> tuple[EngineMeta, Runner]:
    """Open an artifact (or its sidecar), verifying its hash so a corrupt file fails with a clear line."""
    from harness.fileio import expect_file

    path = expect_file(Path(path), "engine", "build one with harness build-engine")
    meta_path = sidecar_of(path)
    if not meta_path.is_file():
        raise HarnessError(f"engine {path}: its sidecar {meta_path.name} is missing; rebuild with build-engine")
    meta = EngineMeta.load(meta_path)
    artifact = Path(meta.artifact) if path.suffix == ".json" else path
    if not artifact.is_file() or _cached(meta_path, artifact) is None:
        raise HarnessError(f"engine {artifact}: missing, truncated or modified since it was built; "
                           "rebuild with harness build-engine")
    return meta, backend_for(meta.backend, cuda_binding, cpu).load(artifact, meta.build_options)


def check_input_shape(meta: EngineMeta, shape: tuple[int, ...], option: str = "--shape") -> None:
    """Reject a shape the artifact was not built for before it reaches the runtime's own error."""
    want = tuple(meta.input_shape)
    bmin, _, bmax = meta.batch
    if len(shape) != 4 or tuple(shape[1:]) != want:
        raise HarnessError(f"{option} {'x'.join(map(str, shape))} does not fit {meta.spec.name}: "
                           f"expected Nx{'x'.join(map(str, want))}")
    if not bmin <= shape[0] <= bmax:
        raise HarnessError(f"{option}: batch {shape[0]} is outside the engine's profile {bmin}..{bmax}; "
                           "rebuild with --max-batch")
