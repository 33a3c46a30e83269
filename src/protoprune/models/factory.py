"""Build the configured model: `model.type` picks a builder from MODEL_TYPES."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..config import RunConfig
from ..names import MODEL_TYPE_NAMES
from ..registry import Registry
from .backbones import build_classifier

# ProtoPNet registers its builder in protopnet.model, a layer above this one
MODEL_TYPES: Registry[Callable[[RunConfig, int], nn.Module]] = Registry(
    "model type", MODEL_TYPE_NAMES, plugins=("protoprune.protopnet.model",)
)


def small_input(cfg: RunConfig) -> bool:
    """The small-image variant is used for inputs <= 64 px unless the config says otherwise."""
    return cfg.model.small_input if cfg.model.small_input is not None else cfg.data.image_size <= 64


@MODEL_TYPES.register("classifier")
def _classifier(cfg: RunConfig, num_classes: int) -> nn.Module:
    return build_classifier(cfg.model.arch, num_classes, small_input(cfg), cfg.model.weights)


def build_model(cfg: RunConfig, num_classes: int) -> nn.Module:
    return MODEL_TYPES.get(cfg.model.type)(cfg, num_classes)
