"""The tensor conversion of every transform equals torchvision's ToTensor + Normalize bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from protoprune.data.transforms import ToNormalizedTensor, build_transform

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.mark.parametrize(("h", "w"), [(224, 224), (28, 28), (13, 31)])
def test_normalized_tensor_equals_torchvision_bit_for_bit(h: int, w: int) -> None:
    rng = np.random.default_rng(h * w)
    for mode, mean, std in (("RGB", MEAN, STD), ("L", [0.5], [0.25])):
        shape = (h, w, 3) if mode == "RGB" else (h, w)
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
        x = ToNormalizedTensor(mean, std)(image)
        y = T.Compose([T.ToTensor(), T.Normalize(mean, std)])(image)
        assert x.dtype == y.dtype == torch.float32 and x.shape == y.shape and x.is_contiguous()
        assert torch.equal(x, y)
    # every value of a channel: 0..255 map to (v / 255 - mean) / std, as float32 computes it
    levels = Image.fromarray(np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, 2))
    expected = (np.arange(256, dtype=np.float32) / np.float32(255) - np.float32(MEAN[1])) / np.float32(STD[1])
    np.testing.assert_array_equal(ToNormalizedTensor(MEAN, STD)(levels)[1, 0].numpy(), expected)


def test_other_image_modes_go_through_torchvision() -> None:
    image = Image.fromarray(np.arange(12, dtype=np.float32).reshape(3, 4), "F")  # not scaled by 255
    ours = ToNormalizedTensor([0.0], [1.0])
    assert torch.equal(ours(image), T.Compose([T.ToTensor(), T.Normalize([0.0], [1.0])])(image))


def test_built_transforms_give_torchvisions_tensors() -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    reference = T.Compose([T.Resize((32, 32), antialias=True), T.ToTensor(), T.Normalize(MEAN, STD)])
    assert torch.equal(build_transform(32, MEAN, STD)(image), reference(image))
