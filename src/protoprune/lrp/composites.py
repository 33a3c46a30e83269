"""LRP rules and composites for protoprune's models, from zennit's (one place for the filter
scores of `prune` and the heatmaps of `explain`).

The default rule set is the one of the reference implementation of Yeom et al. (2021)
(github seulkiyeom/LRP_pruning, `prune_resnet.py`'s `lrp_params_def1` / `lrp_layer2method`):
BatchNorm fused into the conv before it, z+ (positive contributions, any-sign inputs) with biases
ignored for every conv, the z^B box rule (bounds of the normalised input range, biases ignored)
for the first conv, epsilon = 1e-6 for linear layers, and the z rule (stabiliser 1e-6) for the
residual sum and average pooling: `yeom2021_composite`. Every composite gets the prototype layer's
PRP rule (`lrp.prp`), so a ProtoPNet is explained by LRP end to end.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from zennit.canonizers import Canonizer, NamedMergeBatchNorm
from zennit.composites import COMPOSITES, Composite, SpecialFirstLayerMapComposite, layer_map_base
from zennit.core import ParamMod
from zennit.rules import Epsilon, ZBox, ZPlus
from zennit.torchvision import ResNetCanonizer, VGGCanonizer
from zennit.types import Convolution

from ..errors import ConfigError
from .prp import with_prototype_rule


def _leaves(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    children = list(module.named_children())
    if not children:
        yield prefix, module
    for name, child in children:
        yield from _leaves(child, f"{prefix}.{name}" if prefix else name)


def batchnorm_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv name, BN name) for every BatchNorm that directly normalises one conv's output.

    Adjacent leaves with matching channel counts, i.e. zennit's SequentialMergeBatchNorm rule plus a
    shape check: DenseNet's pre-activation BNs follow a conv in module order but normalise the
    concatenation of many layers, and must not be merged.
    """
    pairs = []
    leaves = list(_leaves(model))
    for (name_a, a), (name_b, b) in zip(leaves, leaves[1:]):
        if (
            isinstance(a, nn.Conv2d)
            and isinstance(b, nn.BatchNorm2d)
            and a.out_channels == b.num_features
        ):
            pairs.append((name_a, name_b))
    return pairs


def canonizers_for(model: nn.Module) -> list[Canonizer]:
    """zennit canonizers for a torchvision ResNet / VGG / DenseNet (or any conv-BN network)."""
    if any(isinstance(m, (BasicBlock, Bottleneck)) for m in model.modules()):
        return [ResNetCanonizer()]
    arch = getattr(model, "protoprune_arch", "")
    if arch.startswith("vgg"):
        return [VGGCanonizer()]
    pairs = batchnorm_pairs(model)
    return [NamedMergeBatchNorm([((conv,), bn) for conv, bn in pairs])] if pairs else []


DEFAULT_COMPOSITE = "yeom2021"
DEFAULT_BOUNDS = (-3.0, 3.0)  # input bounds for z^B when the data's normalisation is not known


def input_bounds(mean: Sequence[float], std: Sequence[float]) -> tuple[float, float]:
    """Lowest and highest value a normalised pixel can take: the z^B rule's box.

    As the reference (`conv2d_zbeta_wrapper_class`: min over channels of -mean/std, max of
    (1 - mean)/std, there for ImageNet's constants), from the run's own normalisation.
    """
    low = min(-m / s for m, s in zip(mean, std))
    high = max((1 - m) / s for m, s in zip(mean, std))
    return float(low), float(high)


class ZPlusOnReLUInputs(ZPlus):
    """zennit's ZPlus (the reference's z+: positive contributions of any-sign inputs) that skips the
    negative-input branch when the layer's input has no negative entry, as for every conv after a
    ReLU: that branch is then exactly zero. One modified pass a conv instead of two (LRP scoring of
    a ResNet18 on 70 images: 2.8-3.0x -> 2.1-2.3x a plain forward+backward, measured on 1 thread
    of a loaded machine); `tests/prune/test_reference_port.py` checks it against the reference.

    That one pass is written out (`_positive_relevance`) rather than run through `BasicHook`, whose
    general form costs four passes over the activations that are exact no-ops here: two copies of
    the input (a clone, then the clamp at 0 of an input already >= 0) and zennit's sign-matched
    stabiliser, which for the outputs of non-negative inputs and weights (z >= 0) is exactly z + eps.
    The relevance is bit-identical (`tests/lrp/test_composites.py`).
    """

    def __init__(self, stabilizer=1e-6, zero_params=None):
        super().__init__(stabilizer=stabilizer, zero_params=zero_params)
        self._args = (stabilizer, zero_params)
        self._epsilon = stabilizer if isinstance(stabilizer, float) else None

    def backward(self, module, grad_input, grad_output):
        x = self.stored_tensors["input"][0]
        if self._epsilon is None or bool((x < 0).any()):
            return super().backward(module, grad_input, grad_output)
        relevance = self._positive_relevance(module, x, grad_output[0])
        return tuple(relevance if g.shape == relevance.shape else None for g in grad_input)

    def _positive_relevance(self, module, x, relevance_out):
        """R_in = x * (W+)^T (R_out / (W+ x + eps)): z+ of an input with no negative entry."""
        x = x.detach().requires_grad_()
        with ParamMod.ensure(self.param_modifiers[0])(module) as modified, torch.enable_grad():
            z = modified.forward(x)
        (grad,) = torch.autograd.grad(
            z, x, grad_outputs=relevance_out / (z + self._epsilon),
            create_graph=relevance_out.requires_grad,
        )  # fmt: skip
        return x * grad

    def copy(self):
        return type(self)(*self._args)


def yeom2021_composite(
    low: float, high: float, canonizers: Sequence[Canonizer] = ()
) -> SpecialFirstLayerMapComposite:
    """The reference implementation's LRP rules (see the module docstring), from zennit's rules.

    The reference's stabilisers differ in the last digits (its z+ adds 1e-12 only to exact zeros,
    zennit adds 1e-6 * sign); `tests/prune/test_reference_port.py` compares the scores with a port.
    """
    layer_map = layer_map_base(1e-6) + [
        (Convolution, ZPlusOnReLUInputs(stabilizer=1e-6, zero_params="bias")),
        (nn.Linear, Epsilon(epsilon=1e-6)),
    ]
    first_map = [(Convolution, ZBox(low=low, high=high, stabilizer=1e-6, zero_params="bias"))]
    return SpecialFirstLayerMapComposite(
        layer_map=layer_map, first_map=first_map, canonizers=list(canonizers)
    )


def composite_names() -> list[str]:
    return sorted({DEFAULT_COMPOSITE, *COMPOSITES})


def check_composite(name: str) -> None:
    if name != DEFAULT_COMPOSITE and name not in COMPOSITES:
        raise ConfigError(
            f"unknown LRP composite {name!r}",
            f"set prune_filters.lrp_composite to one of: {', '.join(composite_names())}",
        )


# layers whose output multiplies two branches of the same input (squeeze-excitation's gating):
# zennit has no LRP rule for the product, and measured on torchvision's MobileNetV3 and
# EfficientNet-B0 no relevance reaches the input through them (sum 0.0 of 1.0). Matched by class
# name, so timm's SqueezeExcite and SEModule are caught as well as torchvision's.
UNEXPLAINED_LAYERS = ("SqueezeExcitation", "SqueezeExcite", "SEModule", "EffectiveSEModule")


def require_explainable(model: nn.Module) -> None:
    """Refuse, before any work, a model with a layer LRP cannot explain yet, naming it."""
    for name, module in model.named_modules():
        if type(module).__name__ in UNEXPLAINED_LAYERS:
            raise ConfigError(
                f"LRP cannot explain layer {name} ({type(module).__name__}) yet: its gating "
                "multiplies two branches, for which zennit has no rule, and no relevance reaches "
                "the input through it",
                "score this model with a criterion without LRP (weight, grad, taylor), or use a "
                "network without squeeze-excitation (ResNet, VGG, DenseNet)",
            )


def build_composite(
    name: str, model: nn.Module, bounds: tuple[float, float] = DEFAULT_BOUNDS
) -> Composite:
    """A zennit composite by name (`yeom2021` or zennit's registry, e.g. epsilon_plus_flat),
    canonized for `model`; `bounds` are the input range for box rules."""
    check_composite(name)
    require_explainable(model)
    if name == DEFAULT_COMPOSITE:
        composite = yeom2021_composite(*bounds, canonizers=canonizers_for(model))
    elif name == "epsilon_gamma_box":
        composite = COMPOSITES[name](low=bounds[0], high=bounds[1], canonizers=canonizers_for(model))
    else:
        composite = COMPOSITES[name](canonizers=canonizers_for(model))
    return with_prototype_rule(composite)  # PRP through a ProtoPNet's prototype layer, if any


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (BatchNorm uses running statistics: needed to merge it) restored on exit."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[nn.Module]:
    """Parameters without gradients (restored on exit): the scores need gradients at the layer
    outputs only, and autograd then skips every weight gradient (about 10 % of LRP's time)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
