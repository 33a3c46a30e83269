"""torchvision classifiers by name, with a small-image variant and pretrained weights.

The small-image variant (for inputs <= 64 px) keeps torchvision's modules and names but uses a
3x3 stride-1 stem and drops the first max-pool, so a 28x28 image still has a 3x3+ latent grid.
With torchvision's pretrained weights that stem starts at random (a 7x7 kernel does not fit a
3x3 one) and every other trunk layer is pretrained; a warning names the random layers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm

from ..errors import CheckpointError, ConfigError, not_a_file
from ..registry import Registry
from .pretrained import ensure_cached, torchvision_weights, weights_name

log = logging.getLogger(__name__)

ARCHITECTURES: Registry[Callable[..., nn.Module]] = Registry("architecture")

for _name in ("resnet18", "resnet34", "resnet50"):
    ARCHITECTURES.register(_name, getattr(tvm, _name))
for _name in ("vgg11", "vgg11_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"):
    ARCHITECTURES.register(_name, getattr(tvm, _name))
ARCHITECTURES.register("densenet121", tvm.densenet121)


def family(arch: str) -> str:
    for fam in ("resnet", "vgg", "densenet"):
        if arch.startswith(fam):
            return fam
    raise ConfigError(f"unknown architecture family for {arch!r}", f"use one of {ARCHITECTURES.names()}")


def _make_small(model: nn.Module, arch: str) -> None:
    fam = family(arch)
    if fam == "resnet":
        model.conv1 = nn.Conv2d(3, model.conv1.out_channels, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    elif fam == "densenet":
        conv0 = model.features.conv0
        model.features.conv0 = nn.Conv2d(3, conv0.out_channels, 3, 1, 1, bias=False)
        model.features.pool0 = nn.Identity()
    elif fam == "vgg":
        pools = [i for i, m in enumerate(model.features) if isinstance(m, nn.MaxPool2d)]
        # drop the first and the last pool: 28 px -> 3x3 latent grid instead of < 1x1
        for i in (pools[0], pools[-1]):
            model.features[i] = nn.Identity()
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        model.classifier = nn.Sequential(
            nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(512, 1000)
        )


def _replace_head(model: nn.Module, arch: str, num_classes: int) -> None:
    fam = family(arch)
    if fam == "resnet":
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    elif fam == "densenet":
        model.classifier = nn.Linear(model.classifier.in_features, num_classes)
    else:
        last = model.classifier[-1]
        model.classifier[-1] = nn.Linear(last.in_features, num_classes)


def build_classifier(
    arch: str,
    num_classes: int,
    small_input: bool = False,
    weights: str | Path | None = None,
) -> nn.Module:
    """A torchvision classifier with `num_classes` outputs; random init unless `weights` is given.

    `weights`: torchvision weights by name (`imagenet`, `ResNet18_Weights.IMAGENET1K_V1`; from
    torch's hub cache, see `models.pretrained`), or a local file holding an ImageNet state_dict of
    the same architecture or a protoprune checkpoint's state_dict. The head is always new (the
    class count differs).
    """
    factory = ARCHITECTURES.get(arch)
    pretrained = torchvision_weights(arch, weights)
    if pretrained is not None:
        ensure_cached(pretrained)
        model = factory(weights=pretrained)  # torchvision's loader (it also renames old keys)
        loaded = {k: v.data_ptr() for k, v in model.state_dict().items()}
    else:
        model = factory(weights=None)
    if small_input:
        _make_small(model, arch)
    if pretrained is None and weights is not None:
        load_backbone_weights(model, weights, arch)
    _replace_head(model, arch, num_classes)
    if pretrained is not None:
        _warn_random_layers(model, arch, loaded, weights_name(pretrained))
    model.protoprune_arch = arch  # type: ignore[attr-defined]
    return model


def _head_prefix(model: nn.Module, arch: str) -> str:
    fam = family(arch)
    if fam == "vgg":
        return f"classifier.{len(model.classifier) - 1}."
    return "fc." if fam == "resnet" else "classifier."


def _warn_random_layers(model: nn.Module, arch: str, loaded: dict[str, int], name: str) -> None:
    """Warn about the trunk tensors that did not come from the pretrained weights (the
    small-image variant's stem: its shapes differ); the new head is expected."""
    head = _head_prefix(model, arch)
    fresh = [k for k, p in model.named_parameters()
             if not k.startswith(head) and loaded.get(k) != p.data_ptr()]  # fmt: skip
    if fresh:
        log.warning(
            "model.weights %s: %s start from random initialisation (the small-image variant, "
            "model.small_input, has other layer shapes there); every other layer is pretrained",
            name, ", ".join(fresh),
        )


def load_backbone_weights(model: nn.Module, path: str | Path, arch: str) -> None:
    """Load a local state_dict into everything but the classification head."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            not_a_file("weights file", path),
            "model.weights is imagenet, a torchvision weights name (e.g. ResNet18_Weights.IMAGENET1K_V1) "
            "or a local state_dict file; leave it empty for random init",
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, or pickled code that weights_only refuses
        raise CheckpointError(
            f"cannot read weights file {path}: {str(exc).splitlines()[0]}",
            "model.weights must be a plain state_dict saved with torch.save(model.state_dict(), PATH)",
        ) from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = model.state_dict()
    head = {"resnet": "fc.", "densenet": "classifier.", "vgg": "classifier."}[family(arch)]
    usable = {k: v for k, v in state.items() if k in own and not k.startswith(head)}
    wrong_shape = [k for k, v in usable.items() if v.shape != own[k].shape]
    missing = [k for k in own if not k.startswith(head) and k not in usable]
    if wrong_shape or len(missing) > 0.5 * len(own):
        raise CheckpointError(
            f"weights {path} do not fit architecture {arch!r} "
            f"({len(wrong_shape)} tensors of another shape, {len(missing)} missing)",
            "use weights saved from the same architecture and input variant (model.small_input)",
        )
    model.load_state_dict(usable, strict=False)


class Features(nn.Module):
    """The convolutional trunk of a classifier: image -> (B, C, H', W') feature map."""

    def __init__(self, body: nn.Module, out_channels: int, final_relu: bool = False):
        super().__init__()
        self.body = body
        self.out_channels = out_channels
        self.final_relu = final_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(x)
        return torch.relu(x) if self.final_relu else x


def feature_extractor(model: nn.Module, arch: str | None = None) -> Features:
    """The conv trunk of a `build_classifier` model, sharing its modules (no copy)."""
    arch = arch or getattr(model, "protoprune_arch", None)
    if arch is None:
        raise ConfigError("cannot tell the architecture of this model", "pass arch=... explicitly")
    fam = family(arch)
    if fam == "resnet":
        body = nn.Sequential(
            model.conv1, model.bn1, model.relu, model.maxpool,
            model.layer1, model.layer2, model.layer3, model.layer4,
        )
        last = model.layer4[-1]
        out = last.bn3.num_features if hasattr(last, "bn3") else last.bn2.num_features
        return Features(body, out)
    if fam == "densenet":
        # torchvision's DenseNet applies a ReLU after its features in forward()
        return Features(model.features, model.classifier.in_features, final_relu=True)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    return Features(model.features, convs[-1].out_channels)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
