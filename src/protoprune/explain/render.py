"""Pixels for explanations: similarity maps upsampled onto an image, heatmap overlays, boxes.

The box is the push's (protopnet.push): the region above the 95th percentile of the similarity map
upsampled bicubically to the drawing's resolution, so a box drawn on a 600 px original and on the
network's 28 px input mark the same place.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image

from ..protopnet.push.images import BOX_COLOR
from ..protopnet.push.records import boxes as push_boxes

RF_COLOR = (0, 255, 255)  # the receptive field of the matched latent patch, beside BOX_COLOR


def image_array(image: Image.Image, size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 of an RGB image, resized to (height, width) `size` when given."""
    image = image.convert("RGB")
    if size is not None and (image.height, image.width) != tuple(size):
        image = image.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8).copy()


def similarity_boxes(maps: torch.Tensor, size: tuple[int, int]) -> tuple[np.ndarray, torch.Tensor]:
    """Boxes (y0, y1, x0, x1; end exclusive) and the maps upsampled to `size`, for (n, h, w) maps."""
    boxes, up = push_boxes(maps.float(), tuple(size))
    return boxes.numpy().astype(int), up.cpu()


def heat_overlay(image: np.ndarray, up_map: torch.Tensor, alpha: float = 0.4) -> np.ndarray:
    """The image with the (min-max scaled) similarity map as a jet heatmap on top."""
    m = up_map.float().numpy()
    m = (m - m.min()) / max(float(m.max() - m.min()), 1e-12)
    heat = colormaps["jet"](m)[..., :3] * 255
    return ((1 - alpha) * image + alpha * heat).round().clip(0, 255).astype(np.uint8)


def draw_box(image: np.ndarray, box, color=BOX_COLOR, width: int | None = None) -> np.ndarray:
    """A copy of the image with the box outlined (line width scales with the image size)."""
    out = image.copy()
    y0, y1, x0, x1 = (int(v) for v in box)
    w = width or max(1, round(min(image.shape[:2]) / 100))
    c = np.asarray(color, dtype=np.uint8)
    out[y0 : min(y0 + w, y1), x0:x1] = c
    out[max(y1 - w, y0) : y1, x0:x1] = c
    out[y0:y1, x0 : min(x0 + w, x1)] = c
    out[y0:y1, max(x1 - w, x0) : x1] = c
    return out


def crop(image: np.ndarray, box) -> np.ndarray:
    y0, y1, x0, x1 = (int(v) for v in box)
    return image[y0:y1, x0:x1]


def scaled_box(box, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> list[int]:
    """A box in one resolution expressed in another (for records in network-input pixels)."""
    sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    y0, y1, x0, x1 = box
    return [
        int(np.floor(y0 * sy)),
        int(np.ceil(y1 * sy)),
        int(np.floor(x0 * sx)),
        int(np.ceil(x1 * sx)),
    ]
