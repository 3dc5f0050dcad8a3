"""Experiment files: the YAML that names a sweep's matrix, read strictly so a typo stops the run at once.

Every error names the file, the key and the allowed values; unknown keys are errors, never ignored.
The format is documented in experiments/README.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from harness.backends.base import PRECISIONS, backend_names, quantized_type
from harness.cuda import BINDINGS as CUDA_BINDINGS
from harness.errors import HarnessError
from harness.export.verify import LEVELS as VERIFY_LEVELS
from harness.fileio import read_user_text
from harness.measure.deploy import MODES as SCENARIO_MODES
from harness.measure.loadgen import CLOSED_LOOP, DEFAULT_BOUND_MS, DEFAULT_SAMPLES_PER_QUERY
from harness.models.registry import ModelSpec, model_names, resolve_model
from harness.quantize.config import (
    CALIBRATORS,
    FP8_CALIBRATORS,
    MODELOPT_CALIBRATORS,
    MODES,
    TOOLS,
    offered_calibrators,
)

# precisions whose cells expand over quantization tools, modes and calibrators
QUANTIZED = tuple(p for p in PRECISIONS if quantized_type(p))
CELL_KEYS = ("model", "dataset", "backend", "precision", "tool", "mode", "calibrator", "batch", "scenario")
SECTIONS = {
    "quantization": {"tools": ["pq"], "modes": ["selective"], "calibrators": ["entropy"], "percentile": 99.99,
                     "calib_batches": 4, "calib_batch_size": 32, "quantize_head": False,
                     "quantize_attention_matmul": False},
    "timing": {"warmup_s": 0.2, "iterations": 50, "duration_s": 1.0, "repeats": 3, "max_s": 10.0,
               "ci_target_pct": None, "interleave": False, "cuda_binding": "auto", "profile": False,
               "threads": "auto", "spin_wait": "auto"},
    "evaluation": {"split": "val", "limit": None},
    # The `scenarios:` axis' cells other than closed-loop (harness.measure.deploy); its keys enter those cells' ids.
    "scenario": {"duration_s": 2.0, "target_qps": None, "latency_bound_ms": DEFAULT_BOUND_MS, "find_max_qps": None,
                 "samples_per_query": DEFAULT_SAMPLES_PER_QUERY, "official": False, "concurrency": [1, 2, 4, 8]},
    "build": {"max_batch": None, "workspace_mb": 4096, "opt_level": 3, "verify": "strict"},
    # Where the cells run when the sweep is given --executor ray|slurm; no part of a cell's id.
    "executor": {"max_retries": 2, "accelerator_type": None, "partition": None, "account": None,
                 "gpus_per_task": 1, "cpus_per_task": None, "time_limit_min": 60, "array_parallelism": None,
                 "logs": None},
}
# not in a cell's id while at their defaults (harness.sweep.matrix)
LATER_TIMING_KEYS = ("cuda_binding", "profile", "threads", "spin_wait")
# The `scenario` keys that shape each scenario's result (and so its cells' ids).
SCENARIO_KEYS = {"single-stream": ("duration_s", "official"), "offline": ("duration_s", "official"),
                 "multi-stream": ("duration_s", "official", "samples_per_query"),
                 "server": ("duration_s", "official", "target_qps", "latency_bound_ms", "find_max_qps"),
                 "concurrency": ("duration_s", "concurrency")}
TOP_KEYS = ("name", "description", "models", "datasets", "backends", "precisions", "batch_sizes", "scenarios",
            *SECTIONS, "baseline", "include", "exclude")


@dataclass
class Experiment:
    """A validated experiment file; `specs` maps each model name to what rebuilds it."""

    path: Path
    name: str
    description: str
    specs: dict[str, ModelSpec]
    datasets: list[str]
    backends: list[str]
    precisions: list[str]
    batch_sizes: list[int]
    quantization: dict
    timing: dict
    evaluation: dict
    build: dict
    baseline: dict
    include: list[dict] = field(default_factory=list)
    exclude: list[dict] = field(default_factory=list)
    executor: dict = field(default_factory=lambda: dict(SECTIONS["executor"]))
    scenarios: list[str] = field(default_factory=lambda: [CLOSED_LOOP])
    scenario: dict = field(default_factory=lambda: dict(SECTIONS["scenario"]))

    @property
    def models(self) -> list[str]:
        return list(self.specs)


class _Reader:
    """Validation helpers that know which file they read, so every message starts with it."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, message: str) -> HarnessError:
        return HarnessError(f"{self.path}: {key}: {message}")

    def mapping(self, value, key: str, allowed) -> dict:
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a mapping with keys {', '.join(allowed)}")
        unknown = [k for k in value if k not in allowed]
        if unknown:
            raise self.fail(f"{key}.{unknown[0]}" if key else str(unknown[0]),
                            f"unknown key; allowed keys: {', '.join(allowed)}")
        return value

    def values(self, value, key: str, allowed=None, kind=str) -> list:
        """A scalar or a non-empty list of scalars of `kind`, each in `allowed` when given."""
        items = value if isinstance(value, list) else [value]
        if not items:
            raise self.fail(key, "must not be empty")
        for i, item in enumerate(items):
            where = f"{key}[{i}]" if isinstance(value, list) else key
            if kind is int and (isinstance(item, bool) or not isinstance(item, int) or item < 1):
                raise self.fail(where, f"{item!r} must be a positive integer")
            if kind is str and not isinstance(item, str):
                raise self.fail(where, f"{item!r} must be a string")
            if allowed is not None and item not in allowed:
                raise self.fail(where, f"{item!r} is not allowed; use one of {', '.join(map(str, allowed))}")
        return list(dict.fromkeys(items))

    def flag(self, value, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"{value!r} must be true or false")
        return value

    def number(self, value, key: str, low: float, high: float | None = None, integer: bool = False):
        ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
        if not ok or value < low or (high is not None and value > high):
            span = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise self.fail(key, f"{value!r} must be {'an integer' if integer else 'a number'} {span}")
        return value


def check_threads(r: _Reader, value, key: str) -> None:
    """ONNX Runtime's intra-op threads for CPU cells: auto (harness.backends.cpu_threads) or a count >= 1."""
    if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise r.fail(key, f"{value!r} must be auto or a number of threads >= 1")


def _dataset(r: _Reader, name: str, key: str) -> str:
    if name in ("digits", "synthetic"):
        return name
    if name.startswith("imagefolder:"):
        if not Path(name.split(":", 1)[1]).is_dir():
            raise r.fail(key, f"{name}: no such directory; give imagefolder:PATH to labelled images")
        return name
    raise r.fail(key, f"{name!r} is not allowed; use digits, synthetic or imagefolder:PATH")


def _models(r: _Reader, value) -> dict[str, ModelSpec]:
    allowed = f"digits-resnet, a torchvision classification model ({', '.join(model_names()[1:])}, ...), " \
              "package.module:factory"
    specs: dict[str, ModelSpec] = {}
    for i, item in enumerate(value if isinstance(value, list) else [value]):
        key = f"models[{i}]"
        entry = r.mapping(item, key, ("name", "weights", "input_shape")) if isinstance(item, dict) else item
        if isinstance(entry, dict):
            name, weights, shape = entry.get("name"), entry.get("weights"), entry.get("input_shape")
        else:
            name, weights, shape = entry, None, None
        if not isinstance(name, str):
            raise r.fail(key, f"{name!r} is not a model; use one of {allowed}")
        if name in specs:
            raise r.fail(key, f"model {name!r} is listed twice")
        try:
            specs[name] = resolve_model(name, None if weights is None else str(weights),
                                        None if shape is None else str(shape))
        except HarnessError as exc:
            raise r.fail(key, exc.message) from None
    if not specs:
        raise r.fail("models", f"must list at least one model: {allowed}")
    return specs


def _section(r: _Reader, raw: dict, name: str) -> dict:
    defaults = SECTIONS[name]
    given = r.mapping(raw.get(name) or {}, name, tuple(defaults))
    return {**defaults, **given}


def _rules(r: _Reader, raw: dict, key: str, allowed: dict) -> list[dict]:
    """include/exclude entries: mappings of cell keys to a value or a list of values."""
    value = raw.get(key) or []
    if not isinstance(value, list):
        raise r.fail(key, f"must be a list of mappings with keys {', '.join(CELL_KEYS)}")
    rules = []
    for i, entry in enumerate(value):
        entry = r.mapping(entry, f"{key}[{i}]", CELL_KEYS)
        if not entry:
            raise r.fail(f"{key}[{i}]", f"is empty; give some of {', '.join(CELL_KEYS)}")
        rule = {k: _cell_values(r, f"{key}[{i}].{k}", k, v, allowed) for k, v in entry.items()}
        _check_modelopt(r, f"{key}[{i}]", rule)
        rules.append(rule)
    return rules


def _check_fp8(r: _Reader, key: str, settings: dict[str, list]) -> None:
    """Settings that name FP8 precisions alone, with tool pq, may not name only calibrators FP8 does not take."""
    fp8_only = settings.get("precision") and all(quantized_type(p) == "fp8" for p in settings["precision"])
    if fp8_only and settings.get("tool", ["pq"]) == ["pq"] and "calibrator" in settings \
            and not set(settings["calibrator"]) & set(FP8_CALIBRATORS):
        raise r.fail(f"{key}.calibrator", f"FP8 calibrates with {' or '.join(FP8_CALIBRATORS)} (entropy and mse fit "
                     "INT8's evenly spaced levels)")


def _check_modelopt(r: _Reader, key: str, settings: dict[str, list]) -> None:
    """Settings that name tool modelopt alone may not name what ModelOpt does not offer."""
    _check_fp8(r, key, settings)
    if settings.get("tool") != ["modelopt"]:
        return
    if "mode" in settings:
        raise r.fail(f"{key}.mode", "does not apply to tool modelopt (ModelOpt places Q/DQ itself); drop it")
    if "calibrator" in settings and not set(settings["calibrator"]) & set(MODELOPT_CALIBRATORS):
        raise r.fail(f"{key}.calibrator", f"tool modelopt calibrates with {' or '.join(MODELOPT_CALIBRATORS)}")


def _scenario(r: _Reader, raw: dict, scenarios: list[str]) -> dict:
    """The `scenario` section, checked; find_max_qps defaults to true when no target_qps is given."""
    section = _section(r, raw, "scenario")
    r.number(section["duration_s"], "scenario.duration_s", 0)
    r.number(section["latency_bound_ms"], "scenario.latency_bound_ms", 0)
    r.number(section["samples_per_query"], "scenario.samples_per_query", 1, integer=True)
    r.flag(section["official"], "scenario.official")
    section["concurrency"] = sorted(r.values(section["concurrency"], "scenario.concurrency", kind=int))
    if section["target_qps"] is not None:
        r.number(section["target_qps"], "scenario.target_qps", 0)
        if section["target_qps"] == 0:
            raise r.fail("scenario.target_qps", "0 must be a positive rate (queries per second)")
    if section["find_max_qps"] is None:
        section["find_max_qps"] = section["target_qps"] is None
    r.flag(section["find_max_qps"], "scenario.find_max_qps")
    if "server" in scenarios and not section["find_max_qps"] and section["target_qps"] is None:
        raise r.fail("scenario.find_max_qps", "false needs scenario.target_qps: the server cells need a rate")
    return section


def _cell_values(r: _Reader, key: str, cell_key: str, value, allowed: dict) -> list:
    if cell_key == "batch":
        return r.values(value, key, kind=int)
    if cell_key == "dataset":
        return [_dataset(r, v, key) for v in r.values(value, key)]
    return r.values(value, key, allowed[cell_key])


def _executor(r: _Reader, raw: dict) -> dict:
    executor = _section(r, raw, "executor")
    r.number(executor["max_retries"], "executor.max_retries", 0, integer=True)
    r.number(executor["gpus_per_task"], "executor.gpus_per_task", 1, integer=True)
    r.number(executor["time_limit_min"], "executor.time_limit_min", 1, integer=True)
    for key in ("cpus_per_task", "array_parallelism"):
        if executor[key] is not None:
            r.number(executor[key], f"executor.{key}", 1, integer=True)
    for key in ("accelerator_type", "partition", "account", "logs"):
        if executor[key] is not None and (not isinstance(executor[key], str) or not executor[key]):
            raise r.fail(f"executor.{key}", f"{executor[key]!r} must be a non-empty string")
    return executor


def _refuse_non_finite(r: _Reader, value, key: str) -> None:
    """YAML reads .nan and .inf as numbers that pass every range check: refuse them wherever they are."""
    if isinstance(value, float) and not math.isfinite(value):
        raise r.fail(key or "(top)", f"{value} is not a finite number; give a number")
    if isinstance(value, dict):
        for k, v in value.items():
            _refuse_non_finite(r, v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _refuse_non_finite(r, v, f"{key}[{i}]")


def load_experiment(path: Path) -> Experiment:
    import yaml

    path = Path(path)
    text = read_user_text(path, "experiment file", "give an experiment file (YAML; see experiments/README.md)")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise HarnessError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    r = _Reader(path)
    raw = r.mapping(raw if raw is not None else {}, "", TOP_KEYS)
    _refuse_non_finite(r, raw, "")
    for required in ("models", "precisions"):
        if required not in raw:
            raise r.fail(required, "is required")
    specs = _models(r, raw["models"])
    quant = _section(r, raw, "quantization")
    allowed = {"model": list(specs), "backend": backend_names(), "precision": PRECISIONS, "tool": TOOLS,
               "mode": MODES, "calibrator": CALIBRATORS, "scenario": SCENARIO_MODES}
    scenarios = r.values(raw.get("scenarios", [CLOSED_LOOP]), "scenarios", SCENARIO_MODES)
    quant["tools"] = r.values(quant["tools"], "quantization.tools", TOOLS)
    quant["modes"] = r.values(quant["modes"], "quantization.modes", MODES)
    quant["calibrators"] = r.values(quant["calibrators"], "quantization.calibrators", CALIBRATORS)
    if "modelopt" in quant["tools"] and not set(quant["calibrators"]) & set(MODELOPT_CALIBRATORS):
        raise r.fail("quantization.tools", f"modelopt calibrates with {' or '.join(MODELOPT_CALIBRATORS)} and "
                     "quantization.calibrators lists neither; add one")
    fp8 = [p for p in r.values(raw["precisions"], "precisions", PRECISIONS) if quantized_type(p) == "fp8"]
    if fp8 and not any(set(quant["calibrators"]) & set(offered_calibrators(t, "fp8")) for t in quant["tools"]):
        raise r.fail("quantization.calibrators", f"precisions lists {', '.join(fp8)}, and FP8 calibrates with "
                     f"{' or '.join(FP8_CALIBRATORS)} (entropy and mse fit INT8's evenly spaced levels); add one")
    r.number(quant["percentile"], "quantization.percentile", 0, 100)
    r.number(quant["calib_batches"], "quantization.calib_batches", 1, integer=True)
    r.number(quant["calib_batch_size"], "quantization.calib_batch_size", 1, integer=True)
    r.flag(quant["quantize_head"], "quantization.quantize_head")
    r.flag(quant["quantize_attention_matmul"], "quantization.quantize_attention_matmul")
    timing = _section(r, raw, "timing")
    r.number(timing["warmup_s"], "timing.warmup_s", 0)
    r.number(timing["iterations"], "timing.iterations", 1, integer=True)
    r.number(timing["duration_s"], "timing.duration_s", 0)
    r.number(timing["repeats"], "timing.repeats", 1, integer=True)
    r.flag(timing["profile"], "timing.profile")
    if timing["cuda_binding"] not in CUDA_BINDINGS:
        raise r.fail("timing.cuda_binding", f"{timing['cuda_binding']!r}: choose one of {', '.join(CUDA_BINDINGS)}")
    r.number(timing["max_s"], "timing.max_s", 0)
    if timing["ci_target_pct"] is not None:
        r.number(timing["ci_target_pct"], "timing.ci_target_pct", 0)
    r.flag(timing["interleave"], "timing.interleave")
    check_threads(r, timing["threads"], "timing.threads")
    if timing["spin_wait"] != "auto":
        r.flag(timing["spin_wait"], "timing.spin_wait")
    evaluation = _section(r, raw, "evaluation")
    r.values(evaluation["split"], "evaluation.split", ("val", "calib", "train"))
    if evaluation["limit"] is not None:
        r.number(evaluation["limit"], "evaluation.limit", 1, integer=True)
    build = _section(r, raw, "build")
    for key, low in (("workspace_mb", 1), ("opt_level", 0)):
        r.number(build[key], f"build.{key}", low, 5 if key == "opt_level" else None, integer=True)
    r.values(build["verify"], "build.verify", VERIFY_LEVELS)
    if isinstance(build["verify"], list):
        raise r.fail("build.verify", f"takes one value: {', '.join(VERIFY_LEVELS)}")
    executor = _executor(r, raw)
    include = _rules(r, raw, "include", allowed)
    exclude = _rules(r, raw, "exclude", allowed)
    batch_sizes = r.values(raw.get("batch_sizes", [1]), "batch_sizes", kind=int)
    largest = max([*batch_sizes, *(b for rule in include for b in rule.get("batch", []))])
    if build["max_batch"] is None:
        build["max_batch"] = max(32, largest)
    elif r.number(build["max_batch"], "build.max_batch", 1, integer=True) < largest:
        raise r.fail("build.max_batch", f"{build['max_batch']} is below the largest batch size {largest}")
    baseline = r.mapping(raw.get("baseline") or {"precision": "fp32"}, "baseline",
                         ("backend", "precision", "tool", "mode", "calibrator"))
    for key, value in baseline.items():
        if value not in allowed[key]:
            raise r.fail(f"baseline.{key}", f"{value!r} is not allowed; use one of {', '.join(allowed[key])}")
    _check_modelopt(r, "baseline", {k: [v] for k, v in baseline.items()})
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise r.fail("name", f"{name!r} must be a folder name for reports/<name>/ (no spaces or slashes)")
    return Experiment(
        path=path, name=name, description=str(raw.get("description", "")), specs=specs,
        datasets=[_dataset(r, d, "datasets") for d in r.values(raw.get("datasets", ["digits"]), "datasets")],
        backends=r.values(raw.get("backends", ["cpu"]), "backends", backend_names()),
        precisions=r.values(raw["precisions"], "precisions", PRECISIONS),
        batch_sizes=batch_sizes, quantization=quant, timing=timing, evaluation=evaluation, build=build,
        baseline=baseline, include=include, exclude=exclude, executor=executor, scenarios=scenarios,
        scenario=_scenario(r, raw, scenarios + [s for rule in include for s in rule.get("scenario", [])]),
    )
