"""Image transforms: one normalisation for every split, augmentation for training only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
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
    steps += [ToNormalizedTensor(mean, std)]
    return T.Compose(steps)


class ToNormalizedTensor:
    """T.ToTensor() then T.Normalize(mean, std), bit for bit, in single-threaded numpy.

    torch splits each of the two ops of a 224 px image (150,528 values) over its intra-op threads;
    in the main process (`num_workers: 0`) on 2 shared cores that cost 20 ms per op and image
    instead of 0.3 ms with one thread, 4x the whole augmentation. The same IEEE float32 divisions
    and subtractions in numpy give the same tensor without touching torch's thread pool.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
        self._torchvision = T.Compose([T.ToTensor(), T.Normalize(list(mean), list(std))])

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if not isinstance(image, Image.Image) or image.mode not in ("RGB", "L"):
            return self._torchvision(image)  # other modes are not scaled by 1/255 in ToTensor
        a = np.asarray(image, dtype=np.uint8)
        a = a[:, :, None] if a.ndim == 2 else a
        x = np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32)
        x /= np.float32(255)
        x -= self.mean
        x /= self.std
        return torch.from_numpy(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean.ravel().tolist()}, std={self.std.ravel().tolist()})"


def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo Normalize for display: (.., 3, H, W) -> values in [0, 1]."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x * s + m).clamp(0, 1)
