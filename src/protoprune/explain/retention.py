"""Explanation retention: does a pruned ProtoPNet still explain as the unpruned one did?

A ProtoPNet's explanation of a decision is the prototypes that carry it, what each prototype is
(its source: the training patch it was pushed onto) and where in the image it matched (its PRP
heatmap). Filter pruning of the trunk keeps the prototype indices (the add-on's output depth and
the prototype layer are never pruned) but changes the latent space; the repair re-pushes each
prototype. `snapshot` records a model's explanations on fixed test images; `retention` compares a
pruned model's with the unpruned model's, each measure 1 for an unchanged model:

- `same_source_image` / `same_source_cell`: prototypes re-pushed onto the same training image
  (and the same latent cell of it);
- `topk_jaccard`: per test image, the Jaccard overlap of the k prototypes with the largest
  evidence for the predicted class (similarity x last-layer weight), averaged;
- `same_strongest`: the predicted class's strongest evidence is the same prototype;
- `prp_spearman`: Spearman correlation of the PRP heatmap of the unpruned model's strongest
  prototype with that prototype's heatmap in the pruned model (the same pixels made it similar).

Where the fixed images have lesion masks, `lesion_localisation` says how much those heatmaps point
at the lesion (`explain.localisation`: mass share, pointing game, top-area IoU), each beside the
level a map that ignores the image gets, so a pruned model's figure reads against its unpruned
model's and against chance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from ..lrp.composites import DEFAULT_BOUNDS
from ..names import RETENTION_MEASURE_NAMES
from ..protopnet.model import ProtoPNet

RETENTION_MEASURES = RETENTION_MEASURE_NAMES  # declared in protoprune.names, computed by `retention`
TOP_K = 3  # prototypes that explain a decision (a local explanation shows its strongest few)


@dataclass
class ExplanationSnapshot:
    """One model's explanations: per prototype its source, per fixed test image its evidence."""

    source_image: np.ndarray  # (P,) index of the push image (-1: not pushed)
    source_cell: np.ndarray  # (P, 2) latent (h, w) of the source patch
    top: np.ndarray  # (N, k) prototypes with the largest evidence for the predicted class
    heatmaps: np.ndarray  # (N, H, W) PRP heatmap of `heat_prototype` on each image
    heat_prototype: np.ndarray  # (N,) the prototype each heatmap explains


def push_sources(records: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(P,) source image indices and (P, 2) latent cells from a push's per-prototype records."""
    image = np.array([r["image_index"] if r["pushed"] else -1 for r in records])
    cell = np.array([[r["latent_h"], r["latent_w"]] for r in records])
    return image, cell


@torch.no_grad()
def evidence_ranking(model: ProtoPNet, x: torch.Tensor, k: int = TOP_K) -> np.ndarray:
    """(N, k) prototypes by similarity x last-layer weight of each image's predicted class."""
    sims = model.similarity_vectors(x)  # (N, P)
    predicted = model.last_layer(sims).argmax(1)
    evidence = sims * model.last_layer.weight[predicted]  # (N, P)
    return evidence.argsort(1, descending=True)[:, :k].cpu().numpy()


def snapshot(
    model: ProtoPNet, records: Sequence[dict[str, Any]], x: torch.Tensor,
    heat_prototype: np.ndarray | None = None, k: int = TOP_K,
    bounds: tuple[float, float] = DEFAULT_BOUNDS,
) -> ExplanationSnapshot:  # fmt: skip
    """`model`'s explanations of the images `x` (N, 3, H, W), with its push `records`.

    The heatmaps explain `heat_prototype` (N,) per image, default each image's strongest
    prototype: give the unpruned snapshot's to compare the same prototypes after pruning."""
    from .prp import prp_heatmaps

    model.eval()
    image, cell = push_sources(records)
    top = evidence_ranking(model, x, k)
    heat = top[:, 0] if heat_prototype is None else np.asarray(heat_prototype)
    maps = [prp_heatmaps(model, x[i : i + 1], [int(heat[i])], bounds=bounds)[0][0].cpu().numpy()
            for i in range(len(x))]  # fmt: skip
    return ExplanationSnapshot(image, cell, top, np.stack(maps), heat)


def retention(base: ExplanationSnapshot, now: ExplanationSnapshot) -> dict[str, float]:
    """Each RETENTION_MEASURES of `now` against `base` (1 = unchanged)."""
    pushed = base.source_image >= 0
    same_image = (base.source_image == now.source_image) & pushed
    same_cell = same_image & (base.source_cell == now.source_cell).all(1)
    jaccard = [len(set(a) & set(b)) / len(set(a) | set(b)) for a, b in zip(base.top, now.top)]
    rho = [spearmanr(u.ravel(), v.ravel()).statistic if u.std() > 0 and v.std() > 0 else float("nan")
           for u, v in zip(base.heatmaps, now.heatmaps)]  # fmt: skip
    return {
        "same_source_image": float(same_image.sum() / max(pushed.sum(), 1)),
        "same_source_cell": float(same_cell.sum() / max(pushed.sum(), 1)),
        "topk_jaccard": float(np.mean(jaccard)),
        "same_strongest": float(np.mean(base.top[:, 0] == now.top[:, 0])),
        "prp_spearman": float(np.nanmean(rho)) if not np.isnan(rho).all() else float("nan"),
    }


def fixed_indices(dataset: Any, n: int, seed: int = 0) -> np.ndarray:
    """A seeded draw of `n` of `dataset`'s indices: the same for every step of a run."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(len(dataset), size=min(n, len(dataset)), replace=False))


def fixed_images(dataset: Any, n: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, H, W) the images of `fixed_indices`, as the model sees them."""
    return torch.stack([dataset[int(i)][0] for i in fixed_indices(dataset, n, seed)])


def fixed_masks(dataset: Any, n: int, seed: int, size: tuple[int, int]) -> np.ndarray | None:
    """(n, H, W) bool lesion masks of `fixed_images`' images at the input `size` (H, W), or None
    when the data set has no masks or one of them is missing."""
    load = getattr(dataset, "load_mask", None)
    if load is None:
        return None
    masks = [load(int(i), size=(size[1], size[0])) for i in fixed_indices(dataset, n, seed)]
    return None if any(m is None for m in masks) else np.stack(masks)


def lesion_localisation(heatmaps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Mean of each `explain.localisation` measure over the images, and its chance level
    (`<measure>_chance`: the mean of each image's own chance)."""
    from . import localisation

    per_image = [localisation.scores(h, m) for h, m in zip(heatmaps, masks)]
    chance = [localisation.chance(m) for m in masks]
    out = {k: float(np.nanmean([s[k] for s in per_image])) for k in localisation.MEASURES}
    out.update({f"{k}_chance": float(np.mean([c[k] for c in chance])) for k in localisation.MEASURES})
    return out
