"""What to quantize and how: the one request object shared by quantize, export, build-engine and sweep."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from harness.errors import HarnessError

MODES = ("naive", "hybrid", "selective")
CALIBRATORS = ("max", "percentile", "entropy", "mse")


@dataclass(frozen=True)
class QuantConfig:
    """Hashable into cache keys via to_dict(); equal configs share calibration and export work."""

    mode: str = "selective"
    calib: str = "entropy"
    percentile: float = 99.99
    calib_batches: int = 8
    calib_batch_size: int = 32
    dataset: str = "digits"
    skip: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.mode not in MODES:
            raise HarnessError(f"--mode {self.mode!r} is unknown: use one of {', '.join(MODES)}")
        if self.calib not in CALIBRATORS:
            raise HarnessError(f"--calib {self.calib!r} is unknown: use one of {', '.join(CALIBRATORS)}")
        if not 0 < self.percentile <= 100:
            raise HarnessError(f"--percentile {self.percentile} must be in (0, 100], e.g. 99.99")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["skip"] = list(self.skip)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> QuantConfig:
        return cls(**{**d, "skip": tuple(d.get("skip", ()))})
