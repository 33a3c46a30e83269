"""Skip the ordinary backward of layers whose gradient a zennit rule replaces.

A zennit rule (`BasicHook`) computes a layer's relevance in a backward hook on the layer's input,
from its own forward with modified weights, and returns it in place of the gradient that the
layer's ordinary backward has just computed: for every convolution and linear layer that ordinary
input gradient (a transposed convolution) is computed and thrown away. Under
`skipped_replaced_backward` the layer's output is cut from the layer's own graph and tied back to
its input by a node whose backward hands zeros on; zennit's input hook then replaces those zeros
by the rule's relevance exactly as it replaced the ordinary gradient, so every relevance is
unchanged (tests/lrp/test_skip_backward.py compares the two) and one transposed convolution a
layer is saved (LRP filter scoring of a small ResNet18, 70 images, 2 threads: 1.83x -> 1.52x a plain
forward+backward at 28 px, 3.08x -> 2.71x at 64 px).

Written by hand because zennit has no switch for it: its hooks are designed to compose with the
ordinary backward.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from zennit.core import BasicHook
from zennit.types import Convolution


class _ZeroGradientTie(torch.autograd.Function):
    """Forward: the given (detached) output. Backward: zeros for the input, whose gradient the
    zennit rule replaces."""

    @staticmethod
    def forward(ctx, inp: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        ctx.input_meta = (inp.shape, inp.dtype, inp.device)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        shape, dtype, device = ctx.input_meta
        return torch.zeros(shape, dtype=dtype, device=device), None


def _cut_from_own_graph(_module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
    if not (isinstance(output, torch.Tensor) and inputs and isinstance(inputs[0], torch.Tensor)
            and inputs[0].requires_grad and output.requires_grad):  # fmt: skip
        return None
    return _ZeroGradientTie.apply(inputs[0], output.detach())


def rule_replaced_layers(model: nn.Module) -> list[nn.Module]:
    """Convolutions and linear layers that a registered zennit BasicHook explains."""
    out = []
    for module in model.modules():
        if not isinstance(module, (Convolution, nn.Linear)):
            continue
        hooks = list(module._forward_pre_hooks.values())  # zennit keeps no module -> hook map
        if any(isinstance(getattr(h, "__self__", None), BasicHook) for h in hooks):
            out.append(module)
    return out


@contextmanager
def skipped_replaced_backward(model: nn.Module) -> Iterator[nn.Module]:
    """Inside a composite's context: no ordinary input-gradient pass for rule-explained layers.

    The hook is prepended so that it runs before zennit's own forward hooks, which then see (and
    hook) the tied output.
    """
    handles = [
        m.register_forward_hook(_cut_from_own_graph, prepend=True) for m in rule_replaced_layers(model)
    ]
    try:
        yield model
    finally:
        for h in handles:
            h.remove()
