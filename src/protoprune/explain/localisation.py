"""Does a heatmap point at the lesion? Three measures against a lesion mask, each with its chance.

For a heatmap H (only its positive part counts) and a lesion mask M covering a share m of the
image:

- mass share: H's positive mass inside M. A map that ignores the image (uniform) scores m.
- pointing game (Zhang et al., IJCV 2018): is H's maximum on the lesion? Where several pixels tie
  for the maximum (flat maps), the share of them on the lesion. A peak placed at random hits with
  probability m.
- top-area IoU: IoU of M with H's top pixels, as many as the lesion has, so every map is compared
  at the same sparsity and a perfect map scores 1 (a threshold per map would favour sparse maps).
  A random pixel set of that size meets the lesion in m^2 N pixels on average, so its IoU is
  about m / (2 - m).

`chance_corrected` maps a value to (value - chance) / (1 - chance): 0 at chance, 1 perfect,
negative below chance, so numbers from images with small and large lesions compare.
"""

from __future__ import annotations

import numpy as np

MEASURES = ("on_lesion", "pointing", "top_iou")  # column stems, in the order above


def mass_share(heat: np.ndarray, mask: np.ndarray) -> float:
    """Share of the positive mass of `heat` inside the boolean `mask` (nan for an all-zero map)."""
    pos = np.clip(np.asarray(heat, dtype=np.float64), 0, None)
    total = pos.sum()
    return float(pos[mask].sum() / total) if total > 0 else float("nan")


def pointing(heat: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's maximal pixels that lie on the lesion (1 or 0 for a single peak)."""
    heat = np.asarray(heat, dtype=np.float64)
    peak = heat == heat.max()
    return float(mask[peak].mean())


def top_area_iou(heat: np.ndarray, mask: np.ndarray) -> float:
    """IoU of `mask` with the map's |mask| highest pixels (nan for an empty mask)."""
    k = int(mask.sum())
    if k == 0:
        return float("nan")
    order = np.argsort(-np.asarray(heat, dtype=np.float64).ravel(), kind="stable")
    top = np.zeros(mask.size, bool)
    top[order[:k]] = True
    inter = int((top & mask.ravel()).sum())
    return inter / (2 * k - inter)


def chance(mask: np.ndarray) -> dict[str, float]:
    """Each measure's value for a map that knows nothing of the image (see the module doc)."""
    m = float(np.mean(mask))
    return {"on_lesion": m, "pointing": m, "top_iou": m / (2 - m) if m < 2 else float("nan")}


def scores(heat: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """The three measures of one heatmap against one mask."""
    return {"on_lesion": mass_share(heat, mask), "pointing": pointing(heat, mask),
            "top_iou": top_area_iou(heat, mask)}  # fmt: skip


def chance_corrected(value: float, level: float) -> float:
    """(value - level) / (1 - level): 0 at chance, 1 perfect (nan where chance is already 1)."""
    return (value - level) / (1 - level) if level < 1 else float("nan")
