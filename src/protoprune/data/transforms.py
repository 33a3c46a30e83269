"""Image transforms: one normalisation for every split, augmentation for training only."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision import transforms as T


def resize_step(image_size: int) -> T.Resize:
    """The first step of every transform; the pixel cache stores its output (a no-op after it)."""
    return T.Resize((image_size, image_size), antialias=True)


def build_transform(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    train: bool = False,
    augment: bool = True,
) -> T.Compose:
    """Resize to `image_size`; for training add flips, rotations and colour jitter."""
    steps: list = [resize_step(image_size)]
    if train and augment:
        steps += [
            T.RandomHorizontalFlip(),
            T.RandomVerticalFlip(),  # dermoscopy has no canonical orientation
            T.RandomRotation(20),
            T.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02),
        ]
    steps += [T.ToTensor(), T.Normalize(list(mean), list(std))]
    return T.Compose(steps)


def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo Normalize for display: (.., 3, H, W) -> values in [0, 1]."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x * s + m).clamp(0, 1)
