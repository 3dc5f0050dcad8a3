"""Resolve a model name to a ready-to-run, eval-mode torch module and what feeds it."""

from __future__ import annotations

import difflib
import importlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import HarnessError, first_line

if TYPE_CHECKING:
    import torch

BUNDLED_WEIGHTS = Path(__file__).parent / "weights" / "digits_resnet.pt"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision.models.list_models(module=torchvision.models) of torchvision 0.29, written out so that naming a model
# (the CLI, an experiment file) does not import torch; a test keeps it equal to the installed torchvision's list.
TORCHVISION = (
    "alexnet", "convnext_base", "convnext_large", "convnext_small", "convnext_tiny", "densenet121", "densenet161",
    "densenet169", "densenet201", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
    "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "efficientnet_v2_l",
    "efficientnet_v2_m", "efficientnet_v2_s", "googlenet", "inception_v3", "maxvit_t", "mnasnet0_5", "mnasnet0_75",
    "mnasnet1_0", "mnasnet1_3", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "regnet_x_16gf",
    "regnet_x_1_6gf", "regnet_x_32gf", "regnet_x_3_2gf", "regnet_x_400mf", "regnet_x_800mf", "regnet_x_8gf",
    "regnet_y_128gf", "regnet_y_16gf", "regnet_y_1_6gf", "regnet_y_32gf", "regnet_y_3_2gf", "regnet_y_400mf",
    "regnet_y_800mf", "regnet_y_8gf", "resnet101", "resnet152", "resnet18", "resnet34", "resnet50",
    "resnext101_32x8d", "resnext101_64x4d", "resnext50_32x4d", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
    "shufflenet_v2_x1_5", "shufflenet_v2_x2_0", "squeezenet1_0", "squeezenet1_1", "swin_b", "swin_s", "swin_t",
    "swin_v2_b", "swin_v2_s", "swin_v2_t", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19",
    "vgg19_bn", "vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32", "wide_resnet101_2", "wide_resnet50_2",
)
NATIVE_SIZE = {"inception_v3": 299}  # input side length; every other torchvision classifier is built for 224
EXAMPLES = ("resnet50", "mobilenet_v2", "efficientnet_b0", "convnext_tiny", "vit_b_16", "swin_t")
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
    """A short list for help texts and error messages; every name in TORCHVISION is accepted."""
    return ["digits-resnet", *EXAMPLES]


def native_shape(name: str) -> tuple[int, int, int]:
    side = NATIVE_SIZE.get(name, 224)
    return (3, side, side)


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
    if weights is not None:
        from harness.fileio import expect_file

        expect_file(Path(weights), "--weights", "pass a state_dict saved with torch.save")
    shape = parse_shape(input_shape) if input_shape else None
    if shape is not None and len(shape) != 3:
        raise HarnessError(f"--input-shape {input_shape!r} must be CxHxW, like 3x224x224")
    if name == "digits-resnet":
        return ModelSpec(name, weights, DIGITS_INPUT_SHAPE, DIGITS_CLASSES, (0.5,), (0.5,))
    if name in TORCHVISION:
        return ModelSpec(name, weights, shape or native_shape(name))
    if ":" in name:
        _factory(name)  # fail now, not halfway through a sweep
        return ModelSpec(name, weights, shape or (3, 224, 224), extra={"factory": True})
    close = difflib.get_close_matches(name, ["digits-resnet", *TORCHVISION], n=3)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise HarnessError(f"unknown model {name!r}{hint}: choose digits-resnet, a torchvision classification model "
                       f"(e.g. {', '.join(EXAMPLES)}) or package.module:factory")


def _factory(name: str):
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HarnessError(f"model {name!r}: cannot import {module_name} ({exc}); check PYTHONPATH") from exc
    except Exception as exc:  # a SyntaxError or anything the module raises while it is imported
        raise HarnessError(f"model {name!r}: importing {module_name} raised {type(exc).__name__}: "
                           f"{first_line(exc)}; fix the module (harness --debug shows the traceback)") from exc
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


_LOADED: dict[tuple, torch.nn.Module] = {}


def weights_stamp(spec: ModelSpec) -> tuple | None:
    """The weights file a spec loads (path, size, mtime), so a rewritten file is never served from memory."""
    path = Path(spec.weights or (BUNDLED_WEIGHTS if spec.name == "digits-resnet" else ""))
    try:
        st = path.stat() if str(path) not in ("", ".") else None
    except OSError:
        return None
    return (str(path), st.st_size, st.st_mtime_ns) if st else None


def load_model(spec: ModelSpec) -> torch.nn.Module:
    """The float model in eval mode on CPU, built once per process and weights file: every later call gets a
    copy (callers quantize it in place), which costs a fraction of building it again (torchvision models spend
    seconds initialising weights that loading then replaces). torch is imported here, not at start-up."""
    import copy
    import json

    key = (json.dumps(spec.to_dict(), sort_keys=True, default=str), weights_stamp(spec))
    if key not in _LOADED:
        _LOADED[key] = _build(spec)
    try:
        return copy.deepcopy(_LOADED[key])
    except Exception:  # a user's module that cannot be copied is built anew
        return _build(spec)


def _build(spec: ModelSpec) -> torch.nn.Module:
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
            model = torchvision.models.get_model(spec.name, weights=None)
        if spec.weights:
            _load_state(model, spec.weights)
    else:
        factory = _factory(spec.name)
        try:
            with _seeded():
                model = factory()
        except Exception as exc:  # the user's code: a missing argument, or anything it raises
            fix = ("it must build the model with no arguments (wrap it: def build(): return make(...))"
                   if isinstance(exc, TypeError) and "argument" in str(exc) else
                   "fix it (harness --debug shows the traceback)")
            raise HarnessError(f"model {spec.name!r}: calling the factory raised {type(exc).__name__}: "
                               f"{first_line(exc)}; {fix}") from exc
        if not isinstance(model, torch.nn.Module):
            raise HarnessError(f"model {spec.name!r}: the factory returned {type(model).__name__}, not a Module")
        if spec.weights:
            _load_state(model, spec.weights)
    model.eval()
    _probe(model, spec)
    return model


_PROBED: set[str] = set()


def _probe(model: torch.nn.Module, spec: ModelSpec) -> None:
    """One forward on a zero input of the spec's shape (once per model request): a model that does not accept
    that shape, or whose forward raises, stops here with one line instead of deep inside export or calibration."""
    import json

    import torch

    key = json.dumps(spec.to_dict(), sort_keys=True, default=str)
    if key in _PROBED:
        return
    shape = "x".join(map(str, spec.input_shape))
    try:
        with torch.no_grad():
            model(torch.zeros(1, *spec.input_shape))
    except Exception as exc:  # whatever the model's forward raises
        raise HarnessError(f"model {spec.name!r}: forward on a 1x{shape} input raised {type(exc).__name__}: "
                           f"{first_line(exc)}; give the shape the model takes with --input-shape CxHxW, or fix "
                           "its forward") from exc
    _PROBED.add(key)
