"""Per-filter activations, gradients and LRP relevance, read at the output map of each filter.

LRP (Bach et al. 2015) comes from zennit: a composite attaches the rules to the layers and a
canonizer first merges each BatchNorm into the convolution before it (and, for ResNets, turns the
residual addition into a module so it gets a rule). zennit implements LRP as a modified gradient:
with the output gradient set to the initial relevance (the reference's one-hot of the true class,
or `one_hot * logit`), the gradient that arrives at any tensor IS that tensor's relevance (each
rule returns `R_in` as the input gradient; ReLUs and the merged BatchNorms pass it on unchanged).
So the relevance of a filter is read as the gradient at its output map, not `a * grad` (that
product is only what a plain-gradient explainer does at the input).
`tests/prune/test_relevance.py` checks the conservation that follows from this.

The default rule set is the one of the reference implementation of Yeom et al. (2021)
(github seulkiyeom/LRP_pruning, `prune_resnet.py`'s `lrp_params_def1` / `lrp_layer2method`):
BatchNorm fused into the conv before it, z+ (positive contributions, any-sign inputs) with biases
ignored for every conv, the z^B box rule (bounds of the normalised input range, biases ignored)
for the first conv, epsilon = 1e-6 for linear layers, and the z rule (stabiliser 1e-6) for the
residual sum and average pooling. It is built from zennit's rules: `yeom2021_composite`.

All hooks and canonizers live in `with` blocks and are removed on exit, also on errors.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from zennit.composites import Composite
from zennit.rules import Pass

from ..errors import ConfigError
from ..lrp.composites import (  # noqa: F401 (re-exported: the filter scores' rules)
    DEFAULT_BOUNDS,
    DEFAULT_COMPOSITE,
    ZPlusOnReLUInputs,
    batchnorm_pairs,
    build_composite,
    canonizers_for,
    check_composite,
    composite_names,
    eval_mode,
    frozen_parameters,
    input_bounds,
    yeom2021_composite,
)
from ..lrp.skip_backward import skipped_replaced_backward

PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)
BATCHNORM_MODES = ("eval", "train")


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


def never_pruned(
    model: nn.Module, keep: Sequence[nn.Module] | None = None, prune_linear: bool = False
) -> list[nn.Module]:
    """Layers whose outputs are never scored nor removed: `keep` (default: the classifier head)
    and, unless `prune_linear`, every Linear layer: the reference scores and counts Conv2d filters
    only (`prune_resnet.py: total_num_filters`), so a VGG's hidden units stay (their inputs still
    shrink with the last conv's filters)."""
    kept = list(keep) if keep is not None else [classifier_head(model)]
    if not prune_linear:
        seen = {id(m) for m in kept}
        kept += [m for m in model.modules() if isinstance(m, nn.Linear) and id(m) not in seen]
    return kept


def filter_output_modules(model: nn.Module, modules: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """For each prunable layer, the module whose output is its filters' (normalised) output map.

    A conv followed by its own BatchNorm is read after the BN (under LRP the BN is merged into the
    conv, so both give the same map); other layers are read at their own output.
    """
    named = dict(model.named_modules())
    after = {conv: named[bn] for conv, bn in batchnorm_pairs(model)}
    return {name: after.get(name, m) for name, m in modules.items()}


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


def _channel_sum(t: torch.Tensor) -> torch.Tensor:
    """(B, C, ...) -> (B, C): sum over every dimension but batch and channel."""
    return t.flatten(2).sum(2) if t.dim() > 2 else t


@dataclass
class Relevance:
    """LRP of one batch: logits, input relevance (B,3,H,W) and per-channel sums for each layer."""

    logits: torch.Tensor
    input_relevance: torch.Tensor | None  # None when not computed (filter scoring)
    signed: dict[str, torch.Tensor]  # sum of R over each output map, (B, C)
    absolute: dict[str, torch.Tensor]  # sum of |R| over each output map, (B, C)


EXPLAINED_OUTPUTS = ("onehot", "logit")


def initial_relevance(logits: torch.Tensor, targets: torch.Tensor, output: str) -> torch.Tensor:
    """Relevance put on the logits before the backward pass.

    ``onehot`` (default, the reference's `lrp_anchor = output * T / (output * T).sum(1)`): 1 at the
    true class, so every reference image carries the same total relevance; ``logit``: the true
    class's logit, so confident images weigh more.
    """
    start = torch.zeros_like(logits)
    start.scatter_(1, targets.view(-1, 1).to(logits.device), 1.0)
    if output == "logit":
        return start * logits.detach()
    if output != "onehot":
        raise ConfigError(
            f"unknown explained output {output!r}",
            f"set prune_filters.lrp_output to one of: {', '.join(EXPLAINED_OUTPUTS)}",
        )
    return start


def lrp_batch(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    modules: dict[str, nn.Module],
    composite: str | Composite = DEFAULT_COMPOSITE,
    output: str = "onehot",
    input_relevance: bool = True,
    skip_replaced_backward: bool = True,
    batchnorm: str = "eval",
) -> Relevance:
    """Explain the true class with LRP and read the relevance at each module's output map.

    `input_relevance=False` (filter scoring) stops the backward pass at the first module's output:
    the input layer's rule (z^B: three convolutions at full resolution) then never runs, and
    `Relevance.input_relevance` is None. `skip_replaced_backward` (same relevance, less time: see
    `lrp.skip_backward`) can be turned off to compare. `batchnorm="train"` reproduces the
    reference's LRP wrapper, which is never put in eval mode: `batch_standardised_merges`.
    """
    comp = build_composite(composite, model) if isinstance(composite, str) else composite
    x = inputs.detach().clone().requires_grad_(True)  # also when not asked: zennit hooks need it
    # eval, with every BatchNorm buffer restored on exit: `train` LRP advances num_batches_tracked
    with batchnorm_mode(model, "eval"), \
            frozen_parameters(model), comp.context(model) as hooked, \
            batch_standardised_merges(hooked, batchnorm), capture_outputs(modules) as outs:  # fmt: skip
        with skipped_replaced_backward(hooked) if skip_replaced_backward else nullcontext():
            logits = hooked(x)
        start = initial_relevance(logits, targets, output)
        names = [n for n in modules if n in outs]
        wanted = ([x] if input_relevance else []) + [outs[n] for n in names]
        grads = torch.autograd.grad(logits, wanted, grad_outputs=start, allow_unused=True)
    if not input_relevance:
        grads = (None, *grads)
    signed, absolute = {}, {}
    for name, g in zip(names, grads[1:]):
        if g is None:  # layer not on the path to the logits
            g = torch.zeros_like(outs[name])
        signed[name] = _channel_sum(g).detach()
        absolute[name] = _channel_sum(g.abs()).detach()
    return Relevance(logits.detach(), None if grads[0] is None else grads[0].detach(), signed, absolute)


@contextmanager
def batchnorm_mode(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """``eval``: BatchNorm with its running statistics; ``train``: with the batch's statistics, as
    the reference's scoring pass runs (it calls `model.train()`), running statistics restored on
    exit so that scoring never changes the model."""
    if mode not in BATCHNORM_MODES:
        raise ConfigError(
            f"unknown BatchNorm mode {mode!r} for scoring", "set prune_filters.score_batchnorm "
            "to eval (running statistics) or train (batch statistics, as the reference)"
        )
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [{k: v.clone() for k, v in m.named_buffers()} for m in norms]
    with eval_mode(model):
        try:
            for m in norms:
                m.train(mode == "train")
            yield model
        finally:
            with torch.no_grad():
                for m, buffers in zip(norms, saved):
                    for k, v in buffers.items():
                        getattr(m, k).copy_(v)


@contextmanager
def batch_standardised_merges(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """``train``: every BatchNorm that zennit's canonizer has turned into an identity standardises
    its input with the batch's statistics instead, and passes relevance on unchanged.

    This is the forward pass of the reference's LRP wrapper (github seulkiyeom/LRP_pruning,
    `resnet_kuangliu.py: copyfromresnet`): each BatchNorm is fused into its conv and replaced by a
    reset copy (`lrp_general6.resetbn`: weight 1, bias 0, its eps) wrapped with the pass-through
    `relu_wrapper_fct`; the wrapper is never put in eval mode, so that copy re-standardises every
    fused conv's output over the batch. The running statistics it updates are the canonizer's
    stand-ins, restored with the model's own on exit. ``eval``: nothing changes.
    """
    if mode not in BATCHNORM_MODES:
        raise ConfigError(
            f"unknown BatchNorm mode {mode!r} for LRP", "set prune_filters.lrp_batchnorm to eval "
            "(running statistics) or train (batch statistics, as the reference's LRP wrapper)"
        )
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)] if mode == "train" else []
    handles = []
    try:
        for m in norms:
            m.train(True)
            handles.append(Pass().register(m))
        yield model
    finally:
        for h in handles:
            h.remove()
        for m in norms:
            m.train(False)


def gradient_batch(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    modules: dict[str, nn.Module],
    batchnorm: str = "eval",
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per channel: the mean over batch and positions of dL/da and of a * dL/da, signed.

    As the reference (`filterprune.py: compute_filter_criterion`): L is the cross-entropy of the
    true class averaged over the batch, a the output of each `module` (for a conv, its own output,
    before BatchNorm), values `sum(g) / (B * H * W)` per batch; callers add the batches and take
    |.| of the total.
    """
    inputs = inputs.detach().requires_grad_(True)  # the graph's root while weights are frozen
    with batchnorm_mode(model, batchnorm), frozen_parameters(model), \
            capture_outputs(modules) as outs:  # fmt: skip
        logits = model(inputs)
        loss = nn.functional.cross_entropy(logits, targets.to(logits.device))
        names = [n for n in modules if n in outs]
        grads = torch.autograd.grad(loss, [outs[n] for n in names], allow_unused=True)
    grad_mean, taylor_mean = {}, {}
    for name, g in zip(names, grads):
        a = outs[name].detach()
        if g is None:
            g = torch.zeros_like(a)
        positions = a.numel() // a.shape[1]
        grad_mean[name] = _channel_sum(g).sum(0) / positions
        taylor_mean[name] = _channel_sum(a * g).sum(0) / positions
    return grad_mean, taylor_mean
