"""ProtoPNet (Chen et al., NeurIPS 2019): "this looks like that" prototype layer on any conv trunk.

image -> trunk (any `Features`) -> add-on 1x1 convs (sigmoid) -> latent z (B, D, H, W)
      -> squared L2 distance of every latent patch to every prototype (B, P, H', W')
      -> global min pooling -> similarity log((d + 1) / (d + eps)) -> last layer (no bias) -> logits

Prototypes have a fixed class identity (P = per_class x classes, prototype j belongs to class
j // per_class) and the last layer starts at +1 for a prototype's own class and -0.5 otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import RunConfig
from ..errors import ConfigError
from ..models.backbones import Features, build_classifier, feature_extractor
from ..models.factory import MODEL_TYPES, small_input


@dataclass
class ProtoPNetOutput:
    """Everything one forward pass computes (the push and the losses need more than logits)."""

    logits: torch.Tensor  # (B, C)
    min_distances: torch.Tensor  # (B, P): distance of each prototype to its nearest patch
    distances: torch.Tensor  # (B, P, H', W'): distance maps
    latent: torch.Tensor  # (B, D, H, W): add-on output, the space prototypes live in


def _add_on_layers(in_channels: int, dim: int, kind: str, output: str = "sigmoid") -> nn.Sequential:
    """The original's add-on block: 'regular' = conv-ReLU-conv-Sigmoid; 'bottleneck' halves channels.

    `output` 'linear' drops the final Sigmoid: it bounds the L2 distances of the log similarity,
    but it also keeps every latent vector in the positive orthant, where cosines crowd near 1.
    """
    if output not in ("sigmoid", "linear"):
        raise ConfigError(
            f"unknown add-on output {output!r}", "use protopnet.add_on_output: sigmoid | linear"
        )
    last = nn.Sigmoid() if output == "sigmoid" else nn.Identity()
    if kind == "regular":
        return nn.Sequential(nn.Conv2d(in_channels, dim, 1), nn.ReLU(), nn.Conv2d(dim, dim, 1), last)
    if kind != "bottleneck":
        raise ConfigError(
            f"unknown add-on type {kind!r}", "use protopnet.add_on: regular | bottleneck"
        )
    layers: list[nn.Module] = []
    current = in_channels
    while current > dim or not layers:
        out = max(dim, current // 2)
        layers += [nn.Conv2d(current, out, 1), nn.ReLU(), nn.Conv2d(out, out, 1)]
        layers.append(nn.ReLU() if out > dim else last)
        current = current // 2
    return nn.Sequential(*layers)


class PrototypeLayer(nn.Module):
    """The prototype layer: patch distances to every prototype, similarity, max over positions.

    A module of its own (no parameters: the prototypes stay the model's `prototype_vectors` and
    are passed in) so an LRP composite can give it a rule: prototypical relevance propagation
    (`lrp.prp`). `forward(z, prototypes)` -> (B, P) max similarities, the last layer's input.
    """

    def __init__(self, similarity: str = "log", epsilon: float = 1e-4, scale: float = 1.0):
        super().__init__()
        self.similarity = similarity
        self.epsilon = epsilon
        self.scale = float(scale)

    def distances(self, z: torch.Tensor, p: torch.Tensor, groups: int = 1) -> torch.Tensor:
        """Distance of every k x k patch of z to every prototype (see ProtoPNet.prototype_distances)."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float()
            p = p.float()
            ones = torch.ones((groups, *p.shape[1:]), dtype=z.dtype, device=z.device)
            z2 = F.conv2d(z * z, ones, groups=groups)  # (B, groups, H', W'): patch norms
            if groups > 1:  # one norm map per prototype, broadcast over its output channel
                z2 = z2.repeat_interleave(p.shape[0] // groups, dim=1)
            zp = F.conv2d(z, p, groups=groups)  # (B, P, H', W')
            if self.similarity == "cosine":
                p_norm = p.flatten(1).norm(dim=1).clamp_min(1e-8).view(1, -1, 1, 1)
                return 1 - zp / (z2.clamp_min(1e-16).sqrt() * p_norm)
            p2 = (p * p).sum(dim=(1, 2, 3)).view(1, -1, 1, 1)
            return F.relu(z2 - 2 * zp + p2)

    def to_similarity(self, distances: torch.Tensor) -> torch.Tensor:
        """See ProtoPNet.distance_to_similarity."""
        if self.similarity == "cosine":
            sim = 1 - distances
        else:
            sim = torch.log((distances + 1) / (distances + self.epsilon))
        return sim if self.scale == 1.0 else sim * self.scale

    def forward(self, z: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        return self.to_similarity(self.distances(z, prototypes).flatten(2).amin(dim=2))


class ProtoPNet(nn.Module):
    """A prototype classifier; `forward` returns logits only so generic evaluation code works."""

    def __init__(
        self,
        features: Features,
        num_classes: int,
        prototypes_per_class: int = 10,
        prototype_dim: int = 128,
        prototype_size: int = 1,
        add_on: str = "regular",
        similarity: str = "log",
        epsilon: float = 1e-4,
        prototype_classes: Sequence[int] | None = None,
        add_on_output: str = "sigmoid",
        similarity_scale: float = 1.0,
    ):
        """`prototype_classes` (class of each prototype) replaces `prototypes_per_class` for a model
        whose prototypes were pruned, so classes may hold different numbers of prototypes."""
        super().__init__()
        if similarity not in ("log", "cosine"):
            raise ConfigError(
                f"unknown similarity {similarity!r}", "use protopnet.similarity: log | cosine"
            )
        self.features = features
        self.num_classes = num_classes
        self.prototypes_per_class = prototypes_per_class
        if prototype_classes is None:
            classes = torch.arange(prototypes_per_class * num_classes) // prototypes_per_class
        else:
            classes = torch.as_tensor(list(prototype_classes), dtype=torch.long)
            if (
                classes.ndim != 1
                or len(classes) == 0
                or classes.min() < 0
                or classes.max() >= num_classes
            ):
                raise ConfigError(
                    f"protopnet.prototype_classes must list one class index in 0..{num_classes - 1} "
                    "per prototype",
                    "leave it unset (prototypes_per_class each) or use the list a pruned checkpoint stores",
                )
        self.num_prototypes = len(classes)
        self.prototype_size = prototype_size
        if not similarity_scale > 0:
            raise ConfigError(
                f"protopnet.similarity_scale = {similarity_scale} must be > 0", "e.g. 1 or 10"
            )
        self.prototype_layer = PrototypeLayer(similarity, epsilon, similarity_scale)
        self.add_on_layers = _add_on_layers(
            features.out_channels, prototype_dim, add_on, add_on_output
        )
        self.prototype_vectors = nn.Parameter(
            torch.rand(self.num_prototypes, prototype_dim, prototype_size, prototype_size)
        )
        # buffers: saved in checkpoints, moved with .to(device), never trained
        self.register_buffer("prototype_classes", classes)
        self.register_buffer("prototype_class_identity", F.one_hot(classes, num_classes).float())
        self.last_layer = nn.Linear(self.num_prototypes, num_classes, bias=False)
        self._init_weights()

    @property
    def prototype_shape(self) -> tuple[int, ...]:
        return tuple(self.prototype_vectors.shape)

    def _init_weights(self) -> None:
        for m in self.add_on_layers.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        self.set_last_layer_incorrect_connection(-0.5)

    @torch.no_grad()
    def set_last_layer_incorrect_connection(self, incorrect_strength: float = -0.5) -> None:
        """+1 from a prototype to its own class, `incorrect_strength` to every other class."""
        own = self.prototype_class_identity.t()
        self.last_layer.weight.copy_(own + incorrect_strength * (1 - own))

    # --- the prototype layer -------------------------------------------------------------------

    def conv_features(self, x: torch.Tensor) -> torch.Tensor:
        """The latent map z the prototypes are compared with."""
        return self.add_on_layers(self.features(x))

    def prototype_distances(self, z: torch.Tensor) -> torch.Tensor:
        """Distance of every k x k latent patch to every prototype: (B, D, H, W) -> (B, P, H', W').

        L2: ||z||^2 - 2 z.p + ||p||^2, each term one convolution over the whole batch (no unfold:
        the patch norms come from convolving z^2 with a single all-ones kernel). Cosine: 1 - cos.
        Always computed in float32 (under autocast the expansion loses too much precision).
        """
        return self._distances(z, self.prototype_vectors, groups=1)

    def paired_distances(
        self, z: torch.Tensor, prototypes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Distance map of prototype j on latent map j only: (P, D, H, W) -> (P, H', W').

        One grouped convolution for all pairs; the push uses it for the winners' heatmaps.
        """
        p = self.prototype_vectors if prototypes is None else prototypes
        n = z.shape[0]
        return self._distances(z.reshape(1, -1, *z.shape[2:]), p, groups=n)[0]

    def _distances(self, z: torch.Tensor, p: torch.Tensor, groups: int) -> torch.Tensor:
        return self.prototype_layer.distances(z, p, groups)

    def distance_to_similarity(self, distances: torch.Tensor) -> torch.Tensor:
        """log((d + 1) / (d + eps)): large for near patches; cosine: the cosine itself; both times
        `similarity_scale`, which widens the logits' range when the last layer starts at +1/-0.5
        (a cosine in [0, 1] over 10 prototypes a class leaves the softmax too flat to fit)."""
        return self.prototype_layer.to_similarity(distances)

    # the similarity settings live on the prototype layer (one source of truth)
    @property
    def similarity(self) -> str:
        return self.prototype_layer.similarity

    @property
    def epsilon(self) -> float:
        return self.prototype_layer.epsilon

    @property
    def similarity_scale(self) -> float:
        return self.prototype_layer.scale

    @similarity_scale.setter
    def similarity_scale(self, value: float) -> None:
        self.prototype_layer.scale = float(value)

    def forward_details(self, x: torch.Tensor) -> ProtoPNetOutput:
        z = self.conv_features(x)
        distances = self.prototype_distances(z)
        min_distances = distances.flatten(2).amin(dim=2)  # global max pooling of similarities
        logits = self.last_layer(self.distance_to_similarity(min_distances))
        return ProtoPNetOutput(logits, min_distances, distances, z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits through the prototype layer module (where LRP composites attach PRP)."""
        return self.last_layer(self.prototype_layer(self.conv_features(x), self.prototype_vectors))

    def similarity_vectors(self, x: torch.Tensor) -> torch.Tensor:
        """(B, P) max similarities: the last layer's input, cached by the last-layer stage."""
        return self.prototype_layer(self.conv_features(x), self.prototype_vectors)

    # --- parameter groups of the training phases -----------------------------------------------

    def set_trainable(
        self, features: bool, add_on: bool, prototypes: bool, last_layer: bool
    ) -> None:
        """Freeze/unfreeze the four parts (warm-up, joint and last-layer phases)."""
        for p in self.features.parameters():
            p.requires_grad_(features)
        for p in self.add_on_layers.parameters():
            p.requires_grad_(add_on)
        self.prototype_vectors.requires_grad_(prototypes)
        self.last_layer.weight.requires_grad_(last_layer)


class TrunkClassifier(nn.Module):
    """The trunk with a linear head on globally average-pooled features, to train the trunk as a
    plain classifier before the prototype layer is fitted to it (`protopnet.trunk_epochs`).

    The paper's prototype layer starts from an ImageNet-pretrained trunk; a random trunk gives the
    prototypes nothing to match. Shares the trunk's modules; the head is dropped afterwards.
    """

    def __init__(self, features: Features, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.head = nn.Linear(features.out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def cut_trunk(features: Features, arch: str, layers: int) -> Features:
    """A ResNet trunk up to its stage `layers` (1..4): a finer latent grid, a smaller receptive
    field per cell (`protopnet.trunk_layers`). Shares the kept modules."""
    if not arch.startswith("resnet") or not 1 <= int(layers) <= 4:
        raise ConfigError(
            f"protopnet.trunk_layers = {layers} with model.arch {arch!r}",
            "trunk_layers keeps ResNet stages 1..4; leave it unset for VGG and DenseNet trunks",
        )
    body = features.body[: 4 + int(layers)]  # conv1, bn1, relu, maxpool, layer1..layerN
    last = body[-1][-1]
    out = last.bn3.num_features if hasattr(last, "bn3") else last.bn2.num_features
    return Features(body, out)


def build_protopnet(cfg: RunConfig, num_classes: int) -> ProtoPNet:
    """The configured ProtoPNet: any baseline architecture (incl. small-image variants) as trunk."""
    backbone = build_classifier(cfg.model.arch, num_classes, small_input(cfg), cfg.model.weights)
    p = cfg.protopnet
    features = feature_extractor(backbone)
    if p.trunk_layers is not None:
        features = cut_trunk(features, cfg.model.arch, p.trunk_layers)
    return ProtoPNet(
        features,
        num_classes,
        prototypes_per_class=p.prototypes_per_class,
        prototype_dim=p.prototype_dim,
        prototype_size=p.prototype_size,
        add_on=p.add_on,
        similarity=p.similarity,
        epsilon=p.epsilon,
        prototype_classes=p.prototype_classes,
        add_on_output=p.add_on_output,
        similarity_scale=p.similarity_scale,
    )


MODEL_TYPES.register("protopnet", build_protopnet)
