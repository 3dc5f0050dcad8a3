"""What to quantize and how: the one request object shared by quantize, export, build-engine and sweep."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields

from harness.errors import HarnessError

TOOLS = ("pq", "modelopt")  # pytorch-quantization (the project's placement), NVIDIA Model Optimizer's ONNX PTQ
MODES = ("naive", "hybrid", "selective")
CALIBRATORS = ("max", "percentile", "entropy", "mse")
MODELOPT_CALIBRATORS = ("max", "entropy")
DTYPES = ("int8", "fp8")  # what the Q/DQ nodes hold: INT8, or FP8 E4M3
# FP8 scales come from calibrators that pick a clipping range by the data alone. entropy and mse choose the range
# that best fits INT8's 256 evenly spaced levels, a grid FP8 (logarithmically spaced values) does not have.
FP8_CALIBRATORS = ("max", "percentile")
DEFAULT_CALIB = {"int8": "entropy", "fp8": "max"}  # max: the usual FP8 choice (ModelOpt's FP8 default)
# What ModelOpt's ONNX PTQ reads of a request; every other field is pytorch-quantization's own.
MODELOPT_FIELDS = ("tool", "calib", "calib_batches", "calib_batch_size", "dataset", "dtype")
GRANULARITIES = ("per-channel", "per-tensor")
HYBRID_AUTO_SKIP = 2  # layers left in float by hybrid mode when no --skip/--skip-from names any


@dataclass(frozen=True)
class QuantConfig:
    """Hashable into cache keys via to_dict(); equal configs share calibration and export work.

    `skip` holds layer-name patterns (fnmatch; a name also matches every layer below it). `overrides` holds
    per-layer choices as "PATTERN=VALUE[,VALUE]" where a value is a calibrator (activations of the matching
    layers) or a weight granularity (per-channel / per-tensor). `auto_skip` layers are added to the skip list
    from the sensitivity analysis; None means the mode's default (hybrid without a skip list: 2, else 0).
    `quantize_head`: selective mode keeps the classifier head (the weighted layers whose output reaches the model
    output without passing another one) in float unless this is set. `quantize_attention_matmul`: also quantize
    the inputs of the two attention MatMuls (Q @ K^T and softmax @ V), in every mode.

    `tool` picks the quantizer. ModelOpt places Q/DQ itself, so for it mode is None and the other
    pytorch-quantization fields are reset to their defaults and left out of to_dict(): they can neither change
    its result nor split its caches (the CLI refuses them when given).

    `dtype`: int8, or fp8 (E4M3; set from the precision). `calib` None means the dtype's default (entropy for
    INT8, max for FP8); FP8 takes the calibrators in offered_calibrators() only.
    """

    mode: str | None = "selective"
    calib: str | None = None
    percentile: float = 99.99
    calib_batches: int = 8
    calib_batch_size: int = 32
    dataset: str = "digits"
    skip: tuple[str, ...] = field(default_factory=tuple)
    overrides: tuple[str, ...] = field(default_factory=tuple)
    auto_skip: int | None = None
    quantize_head: bool = False
    quantize_attention_matmul: bool = False
    tool: str = "pq"
    dtype: str = "int8"

    def __post_init__(self):
        if self.tool not in TOOLS:
            raise HarnessError(f"--quantizer {self.tool!r} is unknown: use one of {', '.join(TOOLS)}")
        if self.dtype not in DTYPES:
            raise HarnessError(f"quantized type {self.dtype!r} is unknown: use one of {', '.join(DTYPES)}")
        if self.calib is None:
            object.__setattr__(self, "calib", DEFAULT_CALIB[self.dtype])
        if self.calib not in CALIBRATORS:
            raise HarnessError(f"--calib {self.calib!r} is unknown: use one of {', '.join(CALIBRATORS)}")
        offered = offered_calibrators(self.tool, self.dtype)
        if self.calib not in offered:
            if self.tool == "modelopt":
                raise HarnessError(f"--calib {self.calib} is not offered by --quantizer modelopt: use one of "
                                   f"{', '.join(offered)}")
            raise HarnessError(f"--calib {self.calib} does not apply to FP8: it fits INT8's 256 evenly spaced levels; "
                               f"use {' or '.join(offered)} (max is the usual FP8 choice)")
        if self.tool == "modelopt":
            for f in fields(self):
                if f.name not in MODELOPT_FIELDS:
                    default = f.default if f.default is not MISSING else f.default_factory()
                    object.__setattr__(self, f.name, None if f.name == "mode" else default)
        elif self.mode not in MODES:
            raise HarnessError(f"--mode {self.mode!r} is unknown: use one of {', '.join(MODES)}")
        if not 0 < self.percentile <= 100:
            raise HarnessError(f"--percentile {self.percentile} must be in (0, 100], e.g. 99.99")
        if self.calib_batches < 1 or self.calib_batch_size < 1:
            raise HarnessError("--calib-batches and the calibration batch size must be at least 1")
        if self.auto_skip is not None and self.auto_skip < 0:
            raise HarnessError(f"--auto-skip {self.auto_skip} must be 0 or more")
        for text in self.overrides:
            calib = parse_override(text)[1].get("calib")
            if calib is not None and calib not in offered:
                raise HarnessError(f"--override {text!r}: {calib} does not apply to FP8 (it fits INT8's evenly spaced "
                                   f"levels); use {' or '.join(offered)}")

    @property
    def skip_count(self) -> int:
        """How many layers the sensitivity analysis adds to the skip list."""
        if self.auto_skip is not None:
            return self.auto_skip
        return HYBRID_AUTO_SKIP if self.mode == "hybrid" and not self.skip else 0

    def layer_overrides(self) -> list[tuple[str, dict]]:
        return [parse_override(text) for text in self.overrides]

    def to_dict(self) -> dict:
        """The request as cache keys hash it; pq's leaves `tool` out, so keys and checkpoints from before the
        choice existed still match (INT8 leaves `dtype` out for the same reason)."""
        d = asdict(self)
        if self.dtype == "int8":  # left out, so INT8 keys and checkpoints from before FP8 existed still match
            del d["dtype"]
        if self.tool == "modelopt":
            return {k: d[k] for k in MODELOPT_FIELDS if k in d}
        del d["tool"]
        d["skip"] = list(self.skip)
        d["overrides"] = list(self.overrides)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> QuantConfig:
        return cls(**{**d, "skip": tuple(d.get("skip", ())), "overrides": tuple(d.get("overrides", ()))})


def offered_calibrators(tool: str, dtype: str) -> tuple[str, ...]:
    """The activation calibrators a tool offers for a quantized type. ModelOpt's FP8 calibrates in INT8 (max or
    entropy, ONNX Runtime's calibrators) and converts the scales to FP8, so it takes both."""
    if tool == "modelopt":
        return MODELOPT_CALIBRATORS
    return FP8_CALIBRATORS if dtype == "fp8" else CALIBRATORS


def calibration_data(spec, cfg: QuantConfig):
    """The request's calibration batches: `calib_batches` x `calib_batch_size` of its dataset's calib split,
    the same images whichever tool calibrates on them."""
    from harness.data.datasets import resolve_dataset

    data = resolve_dataset(cfg.dataset, spec)
    return data.batches("calib", cfg.calib_batch_size, limit=cfg.calib_batches * cfg.calib_batch_size)


def calibration_batches(spec, cfg: QuantConfig) -> int:
    """How many batches calibration_data gives (fewer than asked when the split is smaller)."""
    from harness.data.datasets import resolve_dataset

    used = min(cfg.calib_batches * cfg.calib_batch_size, resolve_dataset(cfg.dataset, spec).size("calib"))
    return -(-used // cfg.calib_batch_size)


def calibration_summary(spec, cfg: QuantConfig) -> str:
    """What calibration reads, said plainly when the split holds fewer images than asked for."""
    from harness.data.datasets import resolve_dataset

    asked, size = cfg.calib_batches * cfg.calib_batch_size, cfg.calib_batch_size
    have = resolve_dataset(cfg.dataset, spec).size("calib")
    used = min(asked, have)
    text = f"{cfg.dataset}: {used} calib images, {-(-used // size)} batch(es) of up to {size}"
    if have < asked:
        text += f"; asked for {cfg.calib_batches} x {size} = {asked}, the calib split has {have}"
    return text


def parse_override(text: str) -> tuple[str, dict]:
    """'layer3.*=max,per-tensor' -> ('layer3.*', {'calib': 'max', 'weights': 'per-tensor'})."""
    pattern, sep, values = text.partition("=")
    choice: dict = {}
    for value in values.split(",") if sep else ():
        value = value.strip()
        if value in CALIBRATORS:
            choice["calib"] = value
        elif value in GRANULARITIES:
            choice["weights"] = value
        else:
            choice = {}
            break
    if not pattern.strip() or not choice:
        raise HarnessError(f"--override {text!r}: write PATTERN=VALUE[,VALUE] with values from "
                           f"{', '.join(CALIBRATORS + GRANULARITIES)}, e.g. 'layer3.*=max,per-tensor'")
    return pattern.strip(), choice


def read_skip_file(path) -> tuple[str, ...]:
    """A skip list as written by `harness sensitivity`: one pattern a line, '#' starts a comment."""
    from harness.fileio import read_user_text

    lines = read_user_text(path, "--skip-from", "write one layer pattern a line").splitlines()
    return tuple(p for p in (line.split("#", 1)[0].strip() for line in lines) if p)
