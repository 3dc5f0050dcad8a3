"""Resolve a model name to a ready-to-run, eval-mode torch module and what feeds it."""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import HarnessError

if TYPE_CHECKING:
    import torch

BUNDLED_WEIGHTS = Path(__file__).parent / "weights" / "digits_resnet.pt"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION = ("resnet18", "resnet50", "mobilenet_v2")
DIGITS_INPUT_SHAPE, DIGITS_CLASSES = (1, 32, 32), 10


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the same model later (the sidecar JSON stores it)."""

    name: str
    weights: str | None = None
    input_shape: tuple[int, int, int] = (3, 224, 224)
    num_classes: int = 1000
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        d = dict(d)
        for key in ("input_shape", "mean", "std"):
            d[key] = tuple(d[key])
        return cls(**d)


def model_names() -> list[str]:
    return ["digits-resnet", *TORCHVISION]


def parse_shape(text: str, option: str = "--input-shape") -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.lower().replace(",", "x").split("x"))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise HarnessError(f"{option} {text!r} is not a shape: write it like 3x224x224")
    return dims


def resolve_model(name: str, weights: str | None = None, input_shape: str | None = None) -> ModelSpec:
    """Validate a model request up front so a typo fails before any work starts."""
    if weights is not None and not Path(weights).is_file():
        raise HarnessError(f"--weights {weights}: no such file; pass a state_dict saved with torch.save")
    shape = parse_shape(input_shape) if input_shape else None
    if shape is not None and len(shape) != 3:
        raise HarnessError(f"--input-shape {input_shape!r} must be CxHxW, like 3x224x224")
    if name == "digits-resnet":
        return ModelSpec(name, weights, DIGITS_INPUT_SHAPE, DIGITS_CLASSES, (0.5,), (0.5,))
    if name in TORCHVISION:
        return ModelSpec(name, weights, shape or (3, 224, 224))
    if ":" in name:
        _factory(name)  # fail now, not halfway through a sweep
        return ModelSpec(name, weights, shape or (3, 224, 224), extra={"factory": True})
    raise HarnessError(
        f"unknown model {name!r}: choose one of {', '.join(model_names())} or give package.module:factory"
    )


def _factory(name: str):
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HarnessError(f"model {name!r}: cannot import {module_name} ({exc}); check PYTHONPATH") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise HarnessError(f"model {name!r}: {module_name} has no callable {attr!r}")
    return factory


def _load_state(model: torch.nn.Module, path: str | Path) -> None:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise HarnessError(f"--weights {path}: not a loadable state_dict ({type(exc).__name__})") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise HarnessError(f"--weights {path}: holds a {type(state).__name__}, not a state_dict")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshapen = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or misshapen:
        problems = [f"{len(v)} {what} (first: {v[0]})" for what, v in
                    (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", misshapen)) if v]
        raise HarnessError(f"--weights {path}: does not fit the model: {'; '.join(problems)}")
    model.load_state_dict(state)


@contextmanager
def _seeded(seed: int = 0):
    """Random initial weights are seeded so the exported model and the eval reference are the same model."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def load_model(spec: ModelSpec) -> torch.nn.Module:
    """Build the float model in eval mode on CPU (torch is imported here, not at start-up, to keep the CLI quick)."""
    import torch

    if spec.name == "digits-resnet":
        from harness.models.digits_resnet import DigitsResNet

        model = DigitsResNet()
        weights = spec.weights or BUNDLED_WEIGHTS
        if not Path(weights).is_file():
            raise HarnessError(f"bundled weights {weights} are missing: run `harness train` to recreate them")
        _load_state(model, weights)
    elif spec.name in TORCHVISION:
        import torchvision

        with _seeded():
            model = getattr(torchvision.models, spec.name.replace("-", "_"))(weights=None)
        if spec.weights:
            _load_state(model, spec.weights)
    else:
        with _seeded():
            model = _factory(spec.name)()
        if not isinstance(model, torch.nn.Module):
            raise HarnessError(f"model {spec.name!r}: the factory returned {type(model).__name__}, not a Module")
        if spec.weights:
            _load_state(model, spec.weights)
    return model.eval()
