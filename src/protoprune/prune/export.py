"""Reload a pruned model anywhere, and export it to ONNX (`onnx_export`).

A pruned model's layers are narrower than the architecture's constructor builds. torch-pruning's
own `tp.state_dict`/`tp.load_state_dict` pickle every module's `__dict__`, which
`torch.load(weights_only=True)` rightly refuses. So a pruned model is saved as a regular
protoprune checkpoint (tensors and plain data, `pruned_filters: True`), and loading rebuilds the
architecture from the stored config and resizes each Conv2d / BatchNorm2d / Linear to the saved
tensor shapes (models.resize) before `load_state_dict`. Files in the earlier separate format of
pruned classifiers (`protoprune-pruned-classifier`) load the same way.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError


def load_pruned(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a pruned model of a prune-filters run (eval mode); weights-only loading.

    The same as `train.checkpoint.model_from_checkpoint`, for a file that must be a pruned one."""
    from ..train.checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(path)
    if not ckpt.get("pruned_filters"):
        raise CheckpointError(f"{path} is not a pruned protoprune model", "use a models/step_XX.pt file of a prune-filters run")
    return model_from_checkpoint(ckpt).to(map_location)


def export_onnx(
    model: nn.Module, path: str | Path, image_size: int, images: torch.Tensor | None = None
) -> Path:
    """ONNX export (dynamic batch; a ProtoPNet gives logits and similarities), checked with
    onnx.checker and run by onnxruntime against torch on real images (see `onnx_export`)."""
    from .onnx_export import write_onnx

    return write_onnx(model, path, image_size, images)["path"]
