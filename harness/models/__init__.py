"""Models by name: the bundled digits-resnet, torchvision classics, and users' own factories."""

from harness.models.registry import ModelSpec, load_model, model_names, resolve_model

__all__ = ["ModelSpec", "load_model", "model_names", "resolve_model"]
