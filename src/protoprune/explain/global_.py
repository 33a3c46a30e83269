"""Global analysis: each prototype's nearest patches in the training and the test set.

As the original's global_analysis.py (k = 5): k + 1 = 6 patches from the training set, whose
nearest is the prototype's own source after a push, and k = 5 from the test set.

For every split a CSV (prototype, rank, image id and class, distance, latent position) and, per
class, a figure grid: one row per prototype, its source patch first, then the k nearest patches
boxed on their images (the box from the prototype's similarity map on that image).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..io import atomic_save_figure, atomic_write_text
from ..models.receptive_field import receptive_field_or_none
from ..protopnet.model import ProtoPNet
from .local import PrototypeSources
from .nearest import NearestPatches, k_nearest_patches
from .render import RF_COLOR, draw_box, image_array, similarity_boxes


@torch.no_grad()
def neighbour_patches(
    model: ProtoPNet, nearest: NearestPatches, dataset: Any, device: torch.device | str = "cpu"
) -> list[list[Any]]:
    """(P x k) boxed neighbour images at network-input resolution (None where missing): the
    95th-percentile box of the prototype's similarity map and, in RF_COLOR, the receptive field
    of the matched latent patch."""
    device = torch.device(device)
    idx = nearest.image_index
    unique = sorted({int(i) for i in idx.flatten().tolist() if i >= 0})
    if not unique:
        return [[None] * nearest.k for _ in range(len(idx))]
    row = {i: r for r, i in enumerate(unique)}
    z = torch.cat(
        [
            model.conv_features(torch.stack([dataset[i][0] for i in unique[s : s + 64]]).to(device))
            for s in range(0, len(unique), 64)
        ]
    )
    d = model.prototype_distances(z)  # (U, P, H', W')
    pixels = {i: image_array(dataset.load_image(i), nearest.input_hw) for i in unique}
    p, k = idx.shape
    valid = (idx >= 0).nonzero().tolist()
    maps = torch.stack([d[row[int(idx[j, r])], j] for j, r in valid])
    boxes, _ = similarity_boxes(model.distance_to_similarity(maps).cpu(), nearest.input_hw)
    out: list[list[Any]] = [[None] * k for _ in range(p)]
    rf = receptive_field_or_none(model)
    for (j, r), box in zip(valid, boxes):
        image = pixels[int(idx[j, r])]
        if rf is not None:
            h, w = divmod(int(nearest.position[j, r]), nearest.map_shape[1])
            field = rf.box(h, w, nearest.input_hw, model.prototype_size)
            image = draw_box(image, field, RF_COLOR)
        out[j][r] = draw_box(image, box)
    return out


CELL_PX = 135  # one patch of a neighbour grid, in pixels of the saved figure (shown 1:1)
GRID_DPI = 100


def _fit_cell(image: Any, side: int) -> np.ndarray:
    """`image` scaled (aspect kept) into a white side x side cell: nearest neighbour when
    enlarged (a 28 px crop stays sharp), Lanczos when reduced (1 px box lines stay visible)."""
    from PIL import Image

    img = Image.fromarray(np.asarray(image, dtype=np.uint8))
    scale = side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    img = img.resize(size, Image.NEAREST if scale >= 1 else Image.LANCZOS)
    cell = np.full((side, side, 3), 255, np.uint8)
    top, left = (side - img.height) // 2, (side - img.width) // 2
    cell[top : top + img.height, left : left + img.width] = np.asarray(img)[..., :3]
    return cell


def plot_neighbour_grid(
    prototypes: Sequence[int],
    nearest: NearestPatches,
    patches: list[list[Any]],
    sources: PrototypeSources | None,
    class_names: Sequence[str],
    title: str,
    path: Path,
) -> Path:
    """Rows: prototypes; columns: source patch, then nearest patches with distance and class.

    Drawn as one image with text labels instead of one matplotlib axes a patch: a grid of 5 x 7
    axes took 1.2 s to lay out and save, most of a demo report's time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k, side = nearest.k, CELL_PX
    gap, band = side // 12, side // 4  # between columns; the label band above each row
    cols, rows = k + 1, len(prototypes)
    canvas = np.full((rows * (band + side), cols * (side + gap) - gap, 3), 255, np.uint8)
    labels = []  # (x, y, text) in canvas pixels
    for row, j in enumerate(prototypes):
        cells = [sources.crops[j] if sources is not None else None] + list(patches[j][:k])
        texts = [f"prototype {j}"] + [
            f"{class_names[int(nearest.image_class[j, r])]} d={float(nearest.distances[j, r]):.2f}"
            for r in range(k)
        ]
        y = row * (band + side)
        for c, (cell, text) in enumerate(zip(cells, texts)):
            x = c * (side + gap)
            if cell is None:
                continue
            canvas[y + band : y + band + side, x : x + side] = _fit_cell(cell, side)
            labels.append((x + side / 2, y + band * 0.55, text))
    height, width = canvas.shape[0] / GRID_DPI, canvas.shape[1] / GRID_DPI
    fig = plt.figure(figsize=(width, height + 0.4))
    ax = fig.add_axes((0, 0, 1, height / (height + 0.4)))
    ax.imshow(canvas, interpolation="nearest")
    ax.axis("off")
    for x, y, text in labels:
        ax.text(x, y, text, ha="center", va="center", fontsize=8)
    fig.suptitle(title, fontsize=10, y=1 - 0.2 / (height + 0.4), va="center")
    out = atomic_save_figure(fig, path, dpi=GRID_DPI)
    plt.close(fig)
    return out


def global_analysis(
    model: ProtoPNet,
    splits: dict[str, tuple[Any, Any]],
    class_names: Sequence[str],
    out_dir: str | Path,
    k: int = 6,
    device: torch.device | str = "cpu",
    sources: PrototypeSources | None = None,
    nearest: dict[str, NearestPatches] | None = None,
    progress: bool = True,
    source_split: str = "train",
) -> dict[str, Any]:
    """Nearest patches per prototype for each split in `splits` {name: (loader, dataset)}: k in
    `source_split` (the prototypes' source included), k - 1 in every other split.

    Precomputed `nearest` results are reused. Writes nearest_<split>.csv and
    nearest_<split>_<class>.png; returns {"nearest": {split: NearestPatches}, "files": [...]}.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    nearest = dict(nearest or {})
    files: list[dict[str, str]] = []
    classes = model.prototype_classes.cpu()
    for split, (loader, dataset) in splits.items():
        if split not in nearest:
            k_split = k if split == source_split else max(k - 1, 1)
            nearest[split] = k_nearest_patches(
                model, loader, k_split, device, progress, f"nearest {split}"
            )
        nn_ = nearest[split]
        ids = getattr(dataset, "image_ids", None)
        table = nn_.table(classes, list(class_names), ids, split)
        atomic_write_text(out_dir / f"nearest_{split}.csv", table.to_csv(index=False))
        patches = neighbour_patches(model, nn_, dataset, device)
        for c, name in enumerate(class_names):
            protos = (classes == c).nonzero().flatten().tolist()
            if not protos:
                continue
            png = plot_neighbour_grid(
                protos, nn_, patches, sources, class_names,
                f"{name} prototypes: {nn_.k} nearest {split} patches (one per image)",
                out_dir / f"nearest_{split}_{name}.png",
            )  # fmt: skip
            files.append({"split": split, "class": name, "figure": png.name})
    atomic_write_text(out_dir / "global_figures.csv", pd.DataFrame(files).to_csv(index=False))
    return {"nearest": nearest, "files": files}
