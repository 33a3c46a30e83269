"""Build the configured model: `model.type` picks a builder from MODEL_TYPES."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..config import RunConfig
from ..names import MODEL_TYPE_NAMES
from ..registry import Registry
from .backbones import build_classifier

MODEL_TYPES: Registry[Callable[[RunConfig, int], nn.Module]] = Registry("model type", MODEL_TYPE_NAMES)


def small_input(cfg: RunConfig) -> bool:
    """The small-image variant is used for inputs <= 64 px unless the config says otherwise."""
    return cfg.model.small_input if cfg.model.small_input is not None else cfg.data.image_size <= 64


@MODEL_TYPES.register("classifier")
def _classifier(cfg: RunConfig, num_classes: int) -> nn.Module:
    return build_classifier(cfg.model.arch, num_classes, small_input(cfg), cfg.model.weights)


def build_model(cfg: RunConfig, num_classes: int) -> nn.Module:
    _load_plugins()
    return MODEL_TYPES.get(cfg.model.type)(cfg, num_classes)


def _load_plugins() -> None:
    """Import the modules that register further model types (kept lazy to avoid import cycles)."""
    import importlib

    try:
        importlib.import_module(f"{__package__}.protopnet")
    except ModuleNotFoundError as exc:  # pragma: no cover - only while ProtoPNet is absent
        if exc.name != f"{__package__}.protopnet":
            raise
