"""Explanation-quality metrics, per prototype and per model (the field's evaluation measures).

- stability (EvalProtoPNet, Huang et al. CVPR 2023): the share of test images of a prototype's
  class whose activation peak (the latent cell of its max similarity) stays at the same cell when
  Gaussian noise is added to the network input (`noise`, in normalised-input units, a named
  choice: EvalProtoPNet's noise level is not reproduced here).
- deletion AUC (as ST-ProtoPNet): pixels of an image are replaced by 0 (the data set's mean after
  normalisation) in `steps` equal steps, most relevant first by a heatmap (PRP, the upsampled
  similarity map, or a random order as the control); the prototype's similarity, divided by its
  value on the intact image, is integrated over the removed fraction (trapezoids). Lower: the
  heatmap found what the similarity depends on. Measured on each prototype's `images` nearest
  test images.
- on-lesion share: the fraction of a heatmap's positive mass inside a lesion mask, on the
  prototype's source image (`lesion` explains the mask proxy and the real-mask folder).
- near-duplicates: prototypes equal (to 1e-6 of their norm) to an earlier one, e.g. pushed onto
  the same latent patch; distinct sources: the share of prototypes with a source image of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..lrp.composites import DEFAULT_BOUNDS
from ..models.protopnet import ProtoPNet
from .nearest import NearestPatches
from .prp import prp_heatmaps

DELETION_STEPS = 10  # removal steps of the deletion curve (10 % of the pixels each)
STABILITY_NOISE = 0.2  # std of the Gaussian noise, in normalised-input units (~0.05 of [0, 1] pixels)


@torch.no_grad()
def peak_cells(model: ProtoPNet, x: torch.Tensor) -> torch.Tensor:
    """(B, P) flat index of each prototype's most similar latent cell (its min distance)."""
    return model.prototype_distances(model.conv_features(x)).flatten(2).argmin(2)


@torch.no_grad()
def stability(
    model: ProtoPNet, loader, device: torch.device | str = "cpu",
    noise: float = STABILITY_NOISE, seed: int = 0,
) -> np.ndarray:  # fmt: skip
    """(P,) share of own-class images whose peak cell is unchanged under input noise (nan when a
    class has no images)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    same, labels = [], []
    for x, y in loader:
        eps = noise * torch.randn(x.shape, generator=gen)
        x = x.to(device)
        same.append((peak_cells(model, x) == peak_cells(model, x + eps.to(device))).cpu())
        labels.append(y)
    same_t, y_t = torch.cat(same).float(), torch.cat(labels)
    own = (y_t[:, None] == model.prototype_classes.cpu()[None]).float()  # (N, P)
    count = own.sum(0)
    share = (same_t * own).sum(0) / count.clamp_min(1)
    return torch.where(count > 0, share, torch.nan).numpy()


def upsampled_map(model: ProtoPNet, x: torch.Tensor, j: int) -> torch.Tensor:
    """(H, W) the prototype's similarity map upsampled bicubically to the input (as the push)."""
    with torch.no_grad():
        d = model.prototype_distances(model.conv_features(x))[0, j]
    sim = model.distance_to_similarity(d)[None, None]
    return F.interpolate(sim, size=x.shape[-2:], mode="bicubic", align_corners=False)[0, 0]


@torch.no_grad()
def deletion_curve(
    model: ProtoPNet, x: torch.Tensor, j: int, order: torch.Tensor, steps: int = DELETION_STEPS
) -> np.ndarray:
    """(steps + 1,) similarity of prototype j / its intact value while the pixels in `order`
    (flat indices, first removed first) are set to 0, in equal steps."""
    h, w = x.shape[-2:]
    n = h * w
    keep = torch.ones(steps + 1, n, device=x.device)
    for s in range(1, steps + 1):
        keep[s, order[: round(s * n / steps)]] = 0
    xs = x * keep.view(steps + 1, 1, h, w)
    sims = model.similarity_vectors(xs)[:, j].float().cpu().numpy()
    return sims / sims[0] if sims[0] != 0 else sims


def deletion_auc(curve: np.ndarray) -> float:
    """Area under a deletion curve over the removed fraction 0..1 (trapezoids)."""
    return float(np.trapezoid(curve, dx=1.0 / (len(curve) - 1)))


def deletion_aucs(
    model: ProtoPNet, nearest_test: NearestPatches, dataset: Any,
    device: torch.device | str = "cpu", images: int = 3, steps: int = DELETION_STEPS, seed: int = 0,
    bounds: tuple[float, float] = DEFAULT_BOUNDS,
) -> dict[str, np.ndarray]:  # fmt: skip
    """(P,) mean deletion AUC per heatmap kind (prp, upsample, random) over each prototype's
    `images` nearest test images (nan where none)."""
    p = model.num_prototypes
    gen = torch.Generator().manual_seed(seed)
    sums = {kind: np.zeros(p) for kind in ("prp", "upsample", "random")}
    counts = np.zeros(p)
    pairs: dict[int, list[int]] = {}
    for j in range(p):
        for i in nearest_test.image_index[j, :images].tolist():
            if i >= 0:
                pairs.setdefault(int(i), []).append(j)
    for i, protos in pairs.items():
        x = dataset[i][0][None].to(device)
        heat, _ = prp_heatmaps(model, x, protos, bounds=bounds)
        for n, j in enumerate(protos):
            orders = {
                "prp": heat[n].flatten().argsort(descending=True),
                "upsample": upsampled_map(model, x, j).flatten().argsort(descending=True),
                "random": torch.randperm(x.shape[-2] * x.shape[-1], generator=gen),
            }
            for kind, order in orders.items():
                sums[kind][j] += deletion_auc(deletion_curve(model, x, j, order.to(device), steps))
            counts[j] += 1
    with np.errstate(invalid="ignore"):
        return {kind: np.where(counts > 0, s / np.maximum(counts, 1), np.nan) for kind, s in sums.items()}


def mass_inside(heat: np.ndarray, mask: np.ndarray) -> float:
    """Share of the positive mass of `heat` inside the boolean `mask` (nan for an all-zero map)."""
    pos = np.clip(np.asarray(heat, dtype=np.float64), 0, None)
    total = pos.sum()
    return float(pos[mask].sum() / total) if total > 0 else float("nan")


def near_duplicates(model: ProtoPNet, tol: float = 1e-6) -> list[int]:
    """For each prototype the index of the first earlier prototype equal to it (within `tol` of
    its norm), or -1."""
    p = model.prototype_vectors.detach().flatten(1).double().cpu()
    dist = torch.cdist(p, p)
    scale = p.norm(dim=1).clamp_min(1e-12)
    out = []
    for j in range(len(p)):
        earlier = (dist[j, :j] <= tol * scale[j]).nonzero().flatten()
        out.append(int(earlier[0]) if len(earlier) else -1)
    return out


def distinct_share(source_ids: Sequence[str]) -> float:
    """Distinct source images / prototypes with a source."""
    ids = [s for s in source_ids if s]
    return len(set(ids)) / len(ids) if ids else float("nan")


def on_lesion_shares(
    model: ProtoPNet, sources: Any, dataset: Any, input_hw: tuple[int, int],
    device: torch.device | str = "cpu", masks: Any = None,
    bounds: tuple[float, float] = DEFAULT_BOUNDS,
) -> tuple[dict[str, np.ndarray], list[str]]:  # fmt: skip
    """(P,) on-lesion share of the PRP and the upsampled map of each prototype on its source
    image (at network-input size), and each mask's origin ('mask', 'proxy' or '')."""
    from .lesion import lesion_mask
    from .render import image_array

    p = model.num_prototypes
    shares = {kind: np.full(p, np.nan) for kind in ("prp", "upsample")}
    origin = [""] * p
    by_image: dict[int, list[int]] = {}
    for j, i in enumerate(sources.image_index):
        if i >= 0:
            by_image.setdefault(int(i), []).append(j)
    for i, protos in by_image.items():
        x = dataset[i][0][None].to(device)
        pixels = image_array(dataset.load_image(i), input_hw)
        mask, how = lesion_mask(pixels, sources.image_id[protos[0]], masks)
        heat, _ = prp_heatmaps(model, x, protos, bounds=bounds)
        for n, j in enumerate(protos):
            shares["prp"][j] = mass_inside(heat[n].cpu().numpy(), mask)
            up = upsampled_map(model, x, j).cpu().numpy()
            shares["upsample"][j] = mass_inside(up - up.min(), mask)  # the map as drawn (min-max)
            origin[j] = how
    return shares, origin


def explanation_metrics(
    model: ProtoPNet, nearest_test: NearestPatches, sources: Any, push_dataset: Any,
    test_loader: Any, test_dataset: Any, device: torch.device | str = "cpu",
    masks: Any = None, images: int = 3, bounds: tuple[float, float] = DEFAULT_BOUNDS,
) -> pd.DataFrame:  # fmt: skip
    """One row per prototype: stability, deletion AUCs, on-lesion shares, near-duplicate."""
    table = pd.DataFrame({"prototype": range(model.num_prototypes)})
    table["stability"] = stability(model, test_loader, device)
    aucs = deletion_aucs(model, nearest_test, test_dataset, device, images, bounds=bounds)
    for kind, v in aucs.items():
        table[f"deletion_auc_{kind}"] = v
    shares, origin = on_lesion_shares(model, sources, push_dataset, nearest_test.input_hw,
                                      device, masks, bounds)  # fmt: skip
    for kind, v in shares.items():
        table[f"on_lesion_{kind}"] = v
    table["lesion_mask"] = origin
    table["duplicate_of"] = near_duplicates(model)
    return table


SUMMARY_COLUMNS = (
    "purity", "stability", "deletion_auc_prp", "deletion_auc_upsample", "deletion_auc_random",
    "on_lesion_prp", "on_lesion_upsample",
)  # fmt: skip


def model_summary(table: pd.DataFrame) -> dict[str, float]:
    """Per-model means of the per-prototype table, the background share, distinct sources and
    the number of near-duplicate prototypes."""
    out = {f"mean_{c}": float(np.nanmean(table[c])) for c in SUMMARY_COLUMNS if c in table}
    if "background" in table:
        out["background_share"] = float(table["background"].mean())
    if "source_image" in table:
        out["distinct_sources"] = distinct_share(table["source_image"].fillna("").tolist())
    if "duplicate_of" in table:
        out["near_duplicates"] = int((table["duplicate_of"] >= 0).sum())
    return out
