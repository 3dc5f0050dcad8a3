"""Search the quantized layers for a small set to leave in float (remove their Q/DQ) that meets an accuracy target.

TensorRT 11 has no precision flags or layer precision constraints: a layer runs in float when the ONNX has no Q/DQ
on its inputs. So each step takes the calibrated model, leaves a set of layers in float exactly as --skip does
(set_float, then drop_idle: quantizers left idle go too, a residual shortcut's once its Add no longer feeds INT8),
exports the Q/DQ ONNX, builds it for the chosen backend and measures it. The search is a bisection over the layers
ordered by the sensitivity ranking (the smallest prefix that meets the target), then a pass that puts back into
INT8, least sensitive first, every layer the target does not need. Steps are cached by content, so an interrupted
search resumes where it stopped and a repeated one costs nothing.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from harness import cache_integrity
from harness.errors import HarnessError
from harness.fileio import atomic_write
from harness.progress import clock


@dataclass(frozen=True)
class Target:
    """What a step must reach; unset criteria are not checked. `check` is a shell command whose exit 0 passes."""

    max_top1_drop: float | None = None  # points below the FP32 reference's top-1
    min_top1_agreement: float | None = None  # %
    min_sqnr: float | None = None  # dB
    check: str | None = None
    check_timeout: float = 3600.0  # seconds one run of `check` may take

    def __post_init__(self):
        if all(v is None for v in (self.max_top1_drop, self.min_top1_agreement, self.min_sqnr, self.check)):
            raise HarnessError("give a target: --max-top1-drop, --min-top1-agreement, --min-sqnr or --check COMMAND")

    def describe(self) -> str:
        parts = [f"top-1 drop <= {self.max_top1_drop:g} points" if self.max_top1_drop is not None else "",
                 f"top-1 agreement >= {self.min_top1_agreement:g} %" if self.min_top1_agreement is not None else "",
                 f"SQNR >= {self.min_sqnr:g} dB" if self.min_sqnr is not None else "",
                 f"`{self.check}` exits 0" if self.check else ""]
        return ", ".join(p for p in parts if p)


@dataclass
class Step:
    """One measured fallback set; `passed` and `why` are the target's verdict on the measurement."""

    floated: list[str]
    top1: float | None = None
    top1_drop: float | None = None  # points below the FP32 reference's top-1
    top1_agreement: float | None = None
    sqnr_db: float | None = None
    latency_p50_ms: float | None = None
    checks: dict[str, int] = field(default_factory=dict)  # --check command -> its exit status on this step
    cached: bool = False
    passed: bool = False
    why: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def judge(target: Target, step: Step) -> Step:
    """Fill in the target's verdict: the criteria this measurement misses (none: it passes)."""
    why = []
    if target.max_top1_drop is not None and (step.top1_drop is None or step.top1_drop > target.max_top1_drop):
        why.append(f"top-1 drop {fmt_num(step.top1_drop)} > {target.max_top1_drop:g} points")
    if target.min_top1_agreement is not None and not (step.top1_agreement or 0) >= target.min_top1_agreement:
        why.append(f"top-1 agreement {fmt_num(step.top1_agreement)} < {target.min_top1_agreement:g} %")
    if target.min_sqnr is not None and not (step.sqnr_db if step.sqnr_db is not None else -np.inf) >= target.min_sqnr:
        why.append(f"SQNR {fmt_num(step.sqnr_db)} < {target.min_sqnr:g} dB")
    if target.check and step.checks.get(target.check) != 0:
        why.append(f"check exited {step.checks.get(target.check)}")
    step.why, step.passed = why, not why
    return step


def fmt_num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


# Exit statuses of a shell that could not run the command: a verdict on the shell, not on the step.
CANNOT_RUN = {126: "found but not executable", 127: "not found"}


def run_check(command: str, onnx_path: Path, artifact: Path, floated: list[str], timeout: float = 3600.0,
              log=None) -> int:
    """The user's verdict on one step (0: good enough, any other exit status: not): the command sees the step's
    files in its environment. A command that cannot run (exit 126/127), dies of a signal or outlives `timeout` is
    an error, never a miss: recording it as one would send the search after layers that do not matter."""
    env = {**os.environ, "HARNESS_ONNX": str(onnx_path), "HARNESS_ENGINE": str(artifact),
           "HARNESS_SKIP": ",".join(floated)}
    quoted = shlex.quote(command)
    if log:
        log(f"waiting for --check {quoted} ({len(floated)} layer(s) in float; --check-timeout {timeout:g} s)")
    try:
        proc = subprocess.Popen(command, shell=True, env=env, start_new_session=True)
    except OSError as exc:
        raise HarnessError(f"--check {quoted} cannot run: {exc.strerror}") from exc
    try:
        status = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise HarnessError(f"--check {quoted} did not finish within {timeout:g} s; make it faster or raise "
                           "--check-timeout (the steps measured so far are cached)") from None
    except BaseException:  # Ctrl-C: the command's process group goes too
        _kill_group(proc)
        raise
    if status in CANNOT_RUN:
        raise HarnessError(f"--check {quoted}: the shell exited {status} (command {CANNOT_RUN[status]}); fix the "
                           "command (it runs under sh -c)")
    if status < 0:
        raise HarnessError(f"--check {quoted} was killed by signal {signal.Signals(-status).name}; no verdict on "
                           "this step, so the search stops (the steps measured so far are cached)")
    return status


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@dataclass
class Search:
    """The bisection's bookkeeping: every step in the order it was asked for, cache hits included.

    `measure` returns a judged Step; steps are measured once per search (a set asked for twice is reused).
    """

    order: list[str]  # candidate layers, most sensitive first
    measure: Callable[[list[str]], Step]
    steps: list[Step] = field(default_factory=list)
    log: Callable[[str], None] | None = None
    bound: int = 0  # the most steps the search can still take in all, for the ETA
    started: float = field(default_factory=time.perf_counter)

    def passes(self, floated: list[str]) -> bool:
        seen = next((s for s in self.steps if s.floated == floated), None)
        if seen is not None:
            return seen.passed
        self.steps.append(self.measure(floated))
        if self.log:
            k, elapsed = len(self.steps), time.perf_counter() - self.started
            eta = elapsed / k * max(self.bound - k, 0)
            self.log(f"step {k} (of at most {max(self.bound, k)}): {len(floated)} layer(s) in float: "
                     f"{'pass' if self.steps[-1].passed else 'fail'}  elapsed {clock(elapsed)}  ETA <= {clock(eta)}")
        return self.steps[-1].passed

    def run(self, log=None) -> list[str] | None:
        """The final fallback set, or None when even every candidate in float misses the target."""
        n = len(self.order)
        self.log = log
        self.bound = 2 + math.ceil(math.log2(max(n, 1))) + max(n - 1, 0)
        if self.passes([]):
            return []
        if not self.passes(self.order):
            return None
        lo, hi = 0, n  # the prefix of lo layers fails, of hi layers passes
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.passes(self.order[:mid]):
                hi = mid
            else:
                lo = mid
        chosen = self.order[:hi]
        self.bound = len(self.steps) + max(hi - 1, 0)
        if log:
            log(f"bisection: the {hi} most sensitive layer(s) in float meet the target; dropping those not needed")
        for name in reversed(chosen[:]):  # least sensitive first
            if len(chosen) > 1:
                trial = [c for c in chosen if c != name]
                if self.passes(trial):
                    chosen = trial
        return chosen


class StepCache:
    """One JSON file per measured fallback set, keyed by what the measurement depends on (model, quantization,
    backend, data; not the target, which is judged afresh) and the set itself. Each file (the steps, the
    ranking, the step ONNX) is reused only while it matches the integrity record written with it
    (harness.cache_integrity): an edited step is measured again, never taken as a measurement."""

    def __init__(self, folder: Path, settings: dict, log: Callable[[str], None] | None = None):
        from harness.build import sha256_json

        self.folder = Path(folder)
        self.settings = settings
        self.key = sha256_json(settings)[:16]
        self._sha = sha256_json
        self.log = log

    def path(self, floated: list[str]) -> Path:
        return self.folder / self.key / f"{self._sha(sorted(floated))[:16]}.json"

    def _read(self, path: Path):
        """The JSON of a cached file whose record still vouches for it, else None (a damaged one is removed)."""
        if cache_integrity.reuse(path, self.log) is None:
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            cache_integrity.discard(path)
            return None

    def _write(self, path: Path, text: str) -> None:
        atomic_write(path, text)
        cache_integrity.commit(path)

    def get(self, floated: list[str]) -> Step | None:
        data = self._read(self.path(floated))
        if not isinstance(data, dict):
            return None
        try:
            step = Step(**{**data, "cached": True})
        except TypeError:  # not a step's fields
            cache_integrity.discard(self.path(floated))
            return None
        return step if step.floated == list(floated) else None

    def order(self, rank: Callable[[], list[str]]) -> list[str]:
        """The sensitivity ranking of this search, computed once."""
        path = self.folder / self.key / "order.json"
        order = self._read(path)
        if isinstance(order, list) and all(isinstance(n, str) for n in order):
            return order
        order = rank()
        self._write(path, json.dumps(order))
        return order

    def onnx(self, floated: list[str], make: Callable[[], bytes]) -> Path:
        """The step's Q/DQ ONNX, made once (and again when it no longer matches its record)."""
        path = self.path(floated).with_suffix(".onnx")
        if cache_integrity.reuse(path, self.log) is None:
            atomic_write(path, make())
            cache_integrity.commit(path)
        return path

    def put(self, step: Step) -> None:
        measured = {k: v for k, v in step.to_dict().items() if k not in ("cached", "passed", "why")}
        self._write(self.path(step.floated), json.dumps(measured, indent=2))


def fallback_model(model, names: list[str]):
    """A copy of the calibrated model with `names` in float by the rules --skip applies, so that the skip list
    reproduces the step's file: each layer's own quantizer slots off, then every quantizer left idle off (a
    residual shortcut's goes once its Add no longer feeds an INT8 layer). A block's own shortcut quantizer is a
    candidate layer of its own (e.g. `layer2` beside `layer2.conv2`)."""
    from harness.quantize.replace import drop_idle, set_float

    floated = copy.deepcopy(model)
    set_float(floated, names)
    drop_idle(floated)
    return floated.eval()


def exact_pattern(name: str, layers) -> str:
    """A --skip pattern matching `name` alone: a plain name also matches the layers below it (a block's convs),
    so a block whose own shortcut quantizer is meant gets its last character bracketed ('layer[2]')."""
    if not any(other.startswith(name + ".") for other in layers) or not name:
        return name
    return f"{name[:-1]}[{name[-1]}]"


def skip_file_text(header: str, floated: list[str], layers) -> str:
    lines = [f"# {header}"]
    for name in floated:
        pattern = exact_pattern(name, layers)
        lines.append(f"{pattern}  # {'its own shortcut quantizer only' if pattern != name else 'in float'}")
    return "\n".join(lines) + "\n"


BATCH = 64  # evaluation batch; the step artifacts are built for batches up to this


def active_layers(model) -> list[str]:
    """Quantized layers that still quantize something (floating any other one changes nothing)."""
    from harness.quantize.modules import slots
    from harness.quantize.replace import quant_layers

    return [name for name, m in quant_layers(model).items() if any(not getattr(m, a)._disabled for a in slots(m))]


def ranked_candidates(qm, x: np.ndarray, log=None) -> list[str]:
    """The active layers, most sensitive first (harness sensitivity's ranking: SQNR recovered by each in float)."""
    from harness.quantize.sensitivity import analyse

    active = active_layers(qm.model)
    _, ranked = analyse(qm.model, x, None, "sqnr", skip=[n for n in qm.skipped if n not in active], reverse=False,
                        log=log)
    return [r.layer for r in ranked if r.layer in active]


def measurer(spec, make_onnx: Callable[[list[str]], object], precision: str, backend: str, engines_dir: Path, data,
             split: str, limit: int, target: Target, cache: StepCache, latency: bool,
             log=None) -> Callable[[list[str]], Step]:
    """Fallback set -> Step: the Q/DQ ONNX `make_onnx` gives for it, built for the backend, evaluated (and timed)."""
    from harness.backends.base import BuildOptions
    from harness.build import build_artifact, load_engine
    from harness.measure.evaluate import evaluate, reference_outputs

    options = BuildOptions(precision=precision, batch_max=BATCH)
    reference = reference_outputs(data, split, BATCH, limit)

    def measure(floated: list[str]) -> Step:
        hit = cache.get(floated)
        if hit is not None and (hit.latency_p50_ms is not None or not latency) and (
                not target.check or target.check in hit.checks):
            return judge(target, hit)
        onnx_path = cache.onnx(floated, lambda: make_onnx(floated).SerializeToString())
        meta, _ = build_artifact(spec, backend, options, engines_dir, onnx_path=onnx_path)
        _, runner = load_engine(Path(meta.artifact))
        result = evaluate(runner, data, split, (meta.batch[0], BATCH), limit, reference)
        step = Step(list(floated), result.top1, None if result.top1_delta is None else 0.0 - result.top1_delta,
                    result.top1_agreement, result.sqnr_db, checks=dict(hit.checks) if hit else {})
        if latency:
            x, _ = data.take(split, 1)
            step.latency_p50_ms = float(np.median(runner.time(np.repeat(x, meta.batch[1], 0), 0.05, 20,
                                                               0.2).latency_ms))
        if target.check:
            step.checks[target.check] = run_check(target.check, onnx_path, Path(meta.artifact), floated,
                                                  target.check_timeout, log)
        cache.put(step)
        return judge(target, step)

    return measure


def model_fallback(qm, precision: str) -> Callable[[list[str]], object]:
    """Fallback set -> Q/DQ ONNX of the calibrated model with those layers in float (what --skip would export)."""
    from harness.data.datasets import SyntheticDataset
    from harness.export.variants import qdq_proto

    sample, _ = SyntheticDataset(qm.spec).take("val", 2)
    return lambda floated: qdq_proto(fallback_model(qm.model, floated), sample, precision)


# --- a quantized ONNX alone: the layers are its weighted nodes, a fallback removes their Q/DQ in the file ---

_CARRY = {"BatchNormalization", "Relu", "Clip", "LeakyRelu", "Identity", "Reshape", "Transpose", "Flatten"}


def onnx_layers(model) -> dict[str, object]:
    """Layer name (the PyTorch module the node name scopes, else the node name) -> weighted node with a Q/DQ input."""
    from harness.debug.layers import module_name
    from harness.quantize.onnx_graph import Graph

    graph = Graph(model)
    found = {}
    for node in graph.nodes:
        if graph.weighted(node) and any(graph.quantized(i) for i in node.input[:2]):
            name = (module_name(node.name) if node.name.startswith("/") else "") or node.name or node.output[0]
            found.setdefault(name, node)
    return found


def _float_source(graph, name: str) -> str | None:
    """The float tensor behind a DequantizeLinear(QuantizeLinear(x)) pair, or None."""
    dq = graph.producer.get(name)
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    q = graph.producer.get(dq.input[0])
    return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else None


def _residual_add(graph, node):
    """(Add, index of the node's side) when the node's output reaches a two-input Add through ops TensorRT fuses
    into it (BatchNorm, activations, reshapes), else None."""
    tensor = node.output[0]
    while True:
        readers = graph.consumers.get(tensor, [])
        if len(readers) != 1:
            return None
        reader = readers[0]
        if reader.op_type == "Add" and len(graph.data_inputs(reader)) == 2:
            return reader, list(reader.input).index(tensor)
        if reader.op_type not in _CARRY:
            return None
        tensor = reader.output[0]


def onnx_fallback(model, floated: list[str]):
    """A copy of a Q/DQ ONNX with the named layers reading float tensors: their activation and weight inputs skip
    the Q/DQ pairs (other readers of the same pair keep them). A residual Add fed by such a layer also loses the
    Q/DQ on its shortcut: TensorRT fuses the Add in INT8 into the branch's last layer only when that layer runs in
    INT8, so without it the shortcut's Q/DQ only adds rounding."""
    import onnx

    from harness.quantize.onnx_graph import Graph, drop_unused

    copy_ = onnx.ModelProto()
    copy_.CopyFrom(model)
    layers = onnx_layers(copy_)
    graph = Graph(copy_)
    for name in floated:
        node = layers[name]
        for i, tensor in enumerate(node.input):
            source = _float_source(graph, tensor)
            if source is not None:
                node.input[i] = source
        residual = _residual_add(graph, node)
        if residual is not None:
            add, side = residual
            other = 1 - side
            source = _float_source(graph, add.input[other])
            if source is not None:
                add.input[other] = source
    return drop_unused(copy_)


def onnx_ranking(model, x: np.ndarray) -> list[str]:
    """The file's layers, most sensitive first: the SQNR each loses itself (debug layers' drop) between the file
    and its twin with every layer's Q/DQ removed."""
    from harness.debug.layers import divergence

    layers = onnx_layers(model)
    rows = {r.layer: r.drop_db or 0.0 for r in divergence(onnx_fallback(model, list(layers)), model, x)}
    return sorted(layers, key=lambda n: -rows.get(f"{n} ({layers[n].op_type})", 0.0))
