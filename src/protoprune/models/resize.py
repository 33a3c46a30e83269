"""Rebuild a narrowed (filter-pruned) network: resize its layers to the shapes of saved tensors.

A pruned model's layers are narrower than the architecture's constructor builds, and loading a
checkpoint of one (train.checkpoint, prune.export) first resizes each Conv2d / BatchNorm2d /
Linear to the saved tensor shapes. Hand-written because no library does it for torchvision
models; it is short and checked by a round-trip test (identical outputs).
"""

from __future__ import annotations

import torch
from torch import nn


def _resized(module: nn.Module, prefix: str, state: dict[str, torch.Tensor]) -> nn.Module | None:
    w = state.get(f"{prefix}weight")
    if isinstance(module, nn.Conv2d) and w is not None:
        out_ch, in_per_group = w.shape[:2]
        groups = module.groups if module.groups == 1 else out_ch  # depthwise stays depthwise
        if (out_ch, in_per_group) == module.weight.shape[:2]:
            return None
        return nn.Conv2d(
            in_per_group * groups,
            out_ch,
            module.kernel_size,
            module.stride,
            module.padding,
            module.dilation,
            groups,
            bias=f"{prefix}bias" in state,
            padding_mode=module.padding_mode,
        )
    if isinstance(module, nn.BatchNorm2d) and w is not None and w.shape[0] != module.num_features:
        return nn.BatchNorm2d(
            w.shape[0], module.eps, module.momentum, module.affine, module.track_running_stats
        )
    if (
        isinstance(module, nn.Linear)
        and w is not None
        and tuple(w.shape) != tuple(module.weight.shape)
    ):
        return nn.Linear(w.shape[1], w.shape[0], bias=f"{prefix}bias" in state)
    return None


def resize_to_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Replace every layer whose saved tensors have other shapes by one of the saved shape."""
    for name, module in list(model.named_modules()):
        prefix = f"{name}." if name else ""
        new = _resized(module, prefix, state)
        if new is None:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new)
    return model
