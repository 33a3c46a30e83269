"""Per-filter activations, gradients and LRP relevance, read at the output map of each filter.

LRP (Bach et al. 2015) comes from zennit: a composite attaches the rules to the layers and a
canonizer first merges each BatchNorm into the convolution before it (and, for ResNets, turns the
residual addition into a module so it gets a rule). zennit implements LRP as a modified gradient:
with the output gradient set to `one_hot(target) * logit`, the gradient that arrives at any tensor
IS that tensor's relevance (each rule returns `R_in` as the input gradient; ReLUs and the merged
BatchNorms pass it on unchanged). So the relevance of a filter is read as the gradient at its
output map, not `a * grad` (that product is only what a plain-gradient explainer does at the input).
`tests/prune/test_relevance.py` checks the conservation that follows from this.

All hooks and canonizers live in `with` blocks and are removed on exit, also on errors.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from zennit.canonizers import Canonizer, NamedMergeBatchNorm
from zennit.composites import COMPOSITES, Composite
from zennit.torchvision import ResNetCanonizer, VGGCanonizer

from ..errors import ConfigError
from .prp import with_prototype_rule

PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)


def prunable_modules(model: nn.Module, ignored: Sequence[nn.Module] = ()) -> dict[str, nn.Module]:
    """Conv2d and Linear layers whose output channels (filters / units) may be scored and removed."""
    skip = {id(m) for m in ignored}
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, PRUNABLE_TYPES) and id(m) not in skip
    }


def classifier_head(model: nn.Module) -> nn.Linear:
    """The final Linear (the class logits); its outputs are never pruned."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(
            "the model has no final Linear layer",
            "filter pruning needs a classifier ending in nn.Linear",
        )
    return linears[-1]


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


def filter_output_modules(model: nn.Module, modules: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """For each prunable layer, the module whose output is its filters' (normalised) output map.

    A conv followed by its own BatchNorm is read after the BN (under LRP the BN is merged into the
    conv, so both give the same map); other layers are read at their own output.
    """
    named = dict(model.named_modules())
    after = {conv: named[bn] for conv, bn in batchnorm_pairs(model)}
    return {name: after.get(name, m) for name, m in modules.items()}


def canonizers_for(model: nn.Module) -> list[Canonizer]:
    """zennit canonizers for a torchvision ResNet / VGG / DenseNet (or any conv-BN network)."""
    if any(isinstance(m, (BasicBlock, Bottleneck)) for m in model.modules()):
        return [ResNetCanonizer()]
    arch = getattr(model, "protoprune_arch", "")
    if arch.startswith("vgg"):
        return [VGGCanonizer()]
    pairs = batchnorm_pairs(model)
    return [NamedMergeBatchNorm([((conv,), bn) for conv, bn in pairs])] if pairs else []


def build_composite(name: str, model: nn.Module) -> Composite:
    """A zennit composite from its registry name (e.g. epsilon_plus_flat), canonized for `model`."""
    if name not in COMPOSITES:
        raise ConfigError(
            f"unknown LRP composite {name!r}",
            f"set prune_filters.lrp_composite to one of: {', '.join(sorted(COMPOSITES))}",
        )
    composite = COMPOSITES[name](canonizers=canonizers_for(model))
    return with_prototype_rule(composite)  # PRP through a ProtoPNet's prototype layer, if any


@contextmanager
def capture_outputs(modules: dict[str, nn.Module]) -> Iterator[dict[str, torch.Tensor]]:
    """Record each module's output tensor during forward passes (hooks removed on exit).

    The hook hands a clone on downstream, so an in-place ReLU after the layer cannot overwrite the
    recorded tensor (its gradient is still exact: a clone passes gradients through unchanged).
    """
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            captured[name] = output
            return output.clone()

        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(make_hook(name)))
        yield captured
    finally:
        for h in handles:
            h.remove()


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


def _channel_sum(t: torch.Tensor) -> torch.Tensor:
    """(B, C, ...) -> (B, C): sum over every dimension but batch and channel."""
    return t.flatten(2).sum(2) if t.dim() > 2 else t


@dataclass
class Relevance:
    """LRP of one batch: logits, input relevance (B,3,H,W) and per-channel sums for each layer."""

    logits: torch.Tensor
    input_relevance: torch.Tensor
    signed: dict[str, torch.Tensor]  # sum of R over each output map, (B, C)
    absolute: dict[str, torch.Tensor]  # sum of |R| over each output map, (B, C)


def lrp_batch(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    modules: dict[str, nn.Module],
    composite: str | Composite = "epsilon_plus_flat",
) -> Relevance:
    """Explain the logit of `targets` with LRP and read the relevance at each module's output map."""
    comp = build_composite(composite, model) if isinstance(composite, str) else composite
    x = inputs.detach().clone().requires_grad_(True)
    with eval_mode(model), frozen_parameters(model), comp.context(model) as hooked, \
            capture_outputs(modules) as outs:  # fmt: skip
        logits = hooked(x)
        start = torch.zeros_like(logits)
        start.scatter_(1, targets.view(-1, 1).to(logits.device), 1.0)
        start = start * logits.detach()  # initial relevance: the explained logit (Yeom et al.)
        names = [n for n in modules if n in outs]
        grads = torch.autograd.grad(
            logits, [x] + [outs[n] for n in names], grad_outputs=start, allow_unused=True
        )
    signed, absolute = {}, {}
    for name, g in zip(names, grads[1:]):
        if g is None:  # layer not on the path to the logits
            g = torch.zeros_like(outs[name])
        signed[name] = _channel_sum(g).detach()
        absolute[name] = _channel_sum(g.abs()).detach()
    return Relevance(logits.detach(), grads[0].detach(), signed, absolute)


def gradient_batch(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, modules: dict[str, nn.Module]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, int]]:
    """Per channel: sum over the batch and map of |dL/da| and of |a * dL/da| (L = CE of the true class).

    Returns (sum |g|, sum |a g|, number of positions per channel) so callers can average over a
    whole reference set. The loss is summed over the batch so a sample's gradient does not depend
    on the batch size.
    """
    inputs = inputs.detach().requires_grad_(True)  # the graph's root while weights are frozen
    with eval_mode(model), frozen_parameters(model), capture_outputs(modules) as outs:
        logits = model(inputs)
        loss = nn.functional.cross_entropy(logits, targets.to(logits.device), reduction="sum")
        names = [n for n in modules if n in outs]
        grads = torch.autograd.grad(loss, [outs[n] for n in names], allow_unused=True)
    grad_abs, taylor_abs, counts = {}, {}, {}
    for name, g in zip(names, grads):
        a = outs[name].detach()
        if g is None:
            g = torch.zeros_like(a)
        grad_abs[name] = _channel_sum(g.abs()).sum(0)
        taylor_abs[name] = _channel_sum((a * g).abs()).sum(0)
        counts[name] = a.numel() // a.shape[1]
    return grad_abs, taylor_abs, counts
