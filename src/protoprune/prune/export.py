"""Save a pruned classifier so it reloads anywhere, and export it to ONNX (`onnx_export`).

A pruned model's layers are narrower than the architecture's constructor builds. torch-pruning's
own `tp.state_dict`/`tp.load_state_dict` pickle every module's `__dict__`, which
`torch.load(weights_only=True)` rightly refuses. So the file holds only tensors and plain data
(state_dict, arch, class count, input variant), and `load_pruned` rebuilds the architecture and
resizes each Conv2d / BatchNorm2d / Linear to the saved tensor shapes (models.resize) before
`load_state_dict`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..errors import CheckpointError, not_a_file
from ..io import atomic_torch_save
from ..models.backbones import build_classifier
from ..models.resize import resize_to_state_dict

FORMAT = "protoprune-pruned-classifier"


def save_pruned(
    path: str | Path,
    model: nn.Module,
    arch: str,
    num_classes: int,
    small_input: bool,
    class_names: list[str] | None = None,
    **extra: Any,
) -> Path:
    """Write a weights-only file from which `load_pruned` rebuilds the pruned model."""
    data = {
        "format": FORMAT,
        "protoprune_version": __version__,
        "arch": arch,
        "num_classes": int(num_classes),
        "small_input": bool(small_input),
        "class_names": list(class_names or []),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    return atomic_torch_save(data, path)


def load_pruned(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by `save_pruned` (eval mode); needs only weights-only loading."""
    path = Path(path)
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (FileNotFoundError, IsADirectoryError):
        raise CheckpointError(
            not_a_file("pruned model", path),
            "give a models/step_XX.pt file of a prune-filters run",
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a pruned protoprune classifier", "use a file written by prune-filters"
        )
    model = build_classifier(data["arch"], data["num_classes"], data["small_input"])
    resize_to_state_dict(model, data["state_dict"])
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"cannot rebuild {path}: {str(exc).splitlines()[0]}",
            "the file may be from another protoprune version",
        ) from None
    return model.eval()


def export_onnx(
    model: nn.Module, path: str | Path, image_size: int, images: torch.Tensor | None = None
) -> Path:
    """ONNX export (dynamic batch; a ProtoPNet gives logits and similarities), checked with
    onnx.checker and run by onnxruntime against torch on real images (see `onnx_export`)."""
    from .onnx_export import write_onnx

    return write_onnx(model, path, image_size, images)["path"]
