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

import pandas as pd
import torch

from ..io import atomic_save_figure, atomic_write_text
from ..models.protopnet import ProtoPNet
from ..models.receptive_field import receptive_field_or_none
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


def plot_neighbour_grid(
    prototypes: Sequence[int],
    nearest: NearestPatches,
    patches: list[list[Any]],
    sources: PrototypeSources | None,
    class_names: Sequence[str],
    title: str,
    path: Path,
) -> Path:
    """Rows: prototypes; columns: source patch, then nearest patches with distance and class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = nearest.k
    fig, axes = plt.subplots(
        len(prototypes), k + 1, figsize=(1.35 * (k + 1), 1.5 * len(prototypes) + 0.5), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for row, j in enumerate(prototypes):
        if sources is not None and sources.crops[j] is not None:
            axes[row, 0].imshow(sources.crops[j], interpolation="nearest")
        axes[row, 0].set_title(f"prototype {j}", fontsize=7)
        for r in range(k):
            if patches[j][r] is None:
                continue
            axes[row, r + 1].imshow(patches[j][r], interpolation="nearest")
            cls = class_names[int(nearest.image_class[j, r])]
            axes[row, r + 1].set_title(f"{cls} d={float(nearest.distances[j, r]):.2f}", fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = atomic_save_figure(fig, path, dpi=80)
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
