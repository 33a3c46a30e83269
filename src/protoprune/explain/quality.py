"""Prototype quality: class purity, how often a prototype is the top match, background sources.

- purity: fraction of a prototype's k nearest training patches (one per image) from its class.
- top-match rate: fraction of test images on which the prototype is the most similar one.
- background (a documented heuristic, not a segmentation): dermoscopy images are centred on the
  lesion, so a source box lying mostly in the outer border ring (the outer 1/8 of each side) is
  likely skin or vignette, and so is a box with little texture: grey-level standard deviation in
  the box below half that of the whole image. A prototype is flagged when
  border_fraction >= 0.5 or contrast_ratio < 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..io import atomic_save_figure, atomic_write_text
from ..protopnet.model import ProtoPNet
from .local import PrototypeSources
from .nearest import NearestPatches

BORDER = 1 / 8  # width of the border ring, as a fraction of each side
BORDER_LIMIT = 0.5  # flag when at least this much of the box lies in the ring
CONTRAST_LIMIT = 0.5  # flag when the box's grey std is below this fraction of the image's


def border_fraction(box: Sequence[int], hw: tuple[int, int], ring: float = BORDER) -> float:
    """Fraction of the box's area inside the outer ring of the image."""
    h, w = hw
    y0, y1, x0, x1 = box
    inner = np.zeros((h, w), bool)
    ry, rx = int(round(h * ring)), int(round(w * ring))
    inner[ry : h - ry, rx : w - rx] = True
    area = max((y1 - y0) * (x1 - x0), 1)
    return 1.0 - float(inner[y0:y1, x0:x1].sum()) / area


def contrast_ratio(image: np.ndarray, box: Sequence[int]) -> float:
    """Grey-level std inside the box relative to the whole image's (texture of the patch)."""
    grey = image.astype(np.float32).mean(2)
    y0, y1, x0, x1 = box
    whole = float(grey.std())
    return float(grey[y0:y1, x0:x1].std()) / whole if whole > 0 else 0.0


def background_base_rate(
    map_shape: tuple[int, int], input_hw: tuple[int, int], spread: float = 1.0
) -> float:
    """Share of latent cells whose box the border rule flags when the similarity map is nothing
    but a smooth peak at that cell (a Gaussian of `spread` cells): how much of the background
    share the grid's geometry produces alone, whatever the image. The box is the push's."""
    from .render import similarity_boxes

    h, w = map_shape
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    cy, cx = yy.flatten()[:, None, None], xx.flatten()[:, None, None]
    maps = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * spread**2))  # (h*w, h, w)
    boxes, _ = similarity_boxes(maps.float(), input_hw)
    return float(np.mean([border_fraction(b, input_hw) >= BORDER_LIMIT for b in boxes]))


@torch.no_grad()
def top_match_counts(model: ProtoPNet, loader, device: torch.device | str = "cpu") -> np.ndarray:
    """(P,) how many images of `loader` have each prototype as their most similar one."""
    from ..protopnet.training import similarity_vectors

    sims, _ = similarity_vectors(model, loader, torch.device(device))
    return torch.bincount(sims.argmax(1).cpu(), minlength=model.num_prototypes).numpy()


def prototype_quality(
    model: ProtoPNet,
    nearest_train: NearestPatches,
    sources: PrototypeSources,
    top_counts: np.ndarray,
    class_names: Sequence[str],
) -> pd.DataFrame:
    """One row per prototype: purity, top-match rate, border fraction, contrast, flag."""
    classes = model.prototype_classes.cpu()
    own = nearest_train.own_class_count(classes).numpy()
    valid = (nearest_train.image_index >= 0).sum(1).clamp_min(1).numpy()
    total = max(int(top_counts.sum()), 1)
    rows: list[dict[str, Any]] = []
    for j in range(model.num_prototypes):
        box = sources.boxes[j]
        img = sources.plain[j] if box is not None else None
        bf = border_fraction(box, img.shape[:2]) if img is not None else float("nan")
        cr = contrast_ratio(img, box) if img is not None else float("nan")
        rows.append(
            {
                "prototype": j,
                "class": class_names[int(classes[j])],
                "purity": float(own[j] / valid[j]),
                "top_matches": int(top_counts[j]),
                "top_match_rate": float(top_counts[j] / total),
                "source_image": sources.image_id[j],
                "border_fraction": bf,
                "contrast_ratio": cr,
                "background": bool(bf >= BORDER_LIMIT or cr < CONTRAST_LIMIT),
            }
        )
    return pd.DataFrame(rows)


def plot_quality(table: pd.DataFrame, class_names: Sequence[str], path: str | Path) -> Path:
    """Purity and top-match rate per prototype (coloured by class, background hatched)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = plt.get_cmap("tab10")
    cidx = {name: i for i, name in enumerate(class_names)}
    col = [colors(cidx[c] % 10) for c in table["class"]]
    x = np.arange(len(table))
    fig, axes = plt.subplots(3, 1, figsize=(max(6, 0.12 * len(table) + 2), 8))
    for ax, key, label in (
        (axes[0], "purity", "class purity of the k nearest training patches"),
        (axes[1], "top_match_rate", "share of test images where it is the top match"),
    ):
        bars = ax.bar(x, table[key], color=col)
        for bar, bg in zip(bars, table["background"]):
            if bg:
                bar.set_hatch("///")
                bar.set_edgecolor("black")
        ax.set_ylabel(key)
        ax.set_title(label, fontsize=9)
        ax.set_xlim(-1, len(table))
    axes[1].set_xlabel("prototype (hatched: background source)")
    ok = ~table["background"]
    axes[2].scatter(table["border_fraction"][ok], table["contrast_ratio"][ok], s=12, label="lesion")
    axes[2].scatter(
        table["border_fraction"][~ok],
        table["contrast_ratio"][~ok],
        s=12,
        c="red",
        label="background",
    )
    axes[2].axvline(BORDER_LIMIT, ls="--", c="grey")
    axes[2].axhline(CONTRAST_LIMIT, ls="--", c="grey")
    axes[2].set_xlabel("source box: fraction in the outer border ring")
    axes[2].set_ylabel("contrast ratio")
    axes[2].legend(fontsize=7)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors(i % 10)) for i in range(len(class_names))]
    axes[0].legend(handles, class_names, fontsize=6, ncol=len(class_names), loc="lower right")
    fig.tight_layout()
    out = atomic_save_figure(fig, path, dpi=80)
    plt.close(fig)
    return out


def write_quality(
    table: pd.DataFrame, class_names: Sequence[str], out_dir: str | Path
) -> dict[str, str]:
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "prototype_quality.csv", table.to_csv(index=False))
    png = plot_quality(table, class_names, out_dir / "prototype_quality.png")
    return {"csv": "prototype_quality.csv", "figure": png.name}
