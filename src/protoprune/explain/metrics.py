"""Explanation-quality metrics, per prototype and per model (the field's evaluation measures).

- peak-cell stability (adapted from EvalProtoPNet's stability, Huang et al. CVPR 2023, and named
  so because it differs): the share of test images of a prototype's class whose activation peak
  (the latent cell of its max similarity) stays at the same cell when Gaussian noise is added to
  the network input (`noise`, in normalised-input units). EvalProtoPNet clips its noise to
  +-0.25 and counts a region around the peak; this counts the one cell, so it is not comparable
  across latent grids (a finer grid moves by a cell more easily).
- deletion AUC (as ST-ProtoPNet): pixels of an image are replaced by 0 (the data set's mean after
  normalisation) in `steps` equal steps, most relevant first by a heatmap (PRP, the upsampled
  similarity map, or a random order as the control); the prototype's similarity, divided by its
  value on the intact image, is integrated over the removed fraction (trapezoids). Lower: the
  heatmap found what the similarity depends on. Measured on each prototype's `images` nearest
  test images. Mean-coloured pixels are themselves far from any training image, so the same
  curves are also drawn on a blurred copy of the image as the substrate (`blur_deletion_auc`) and
  in insertion order from it (`blur_insertion_auc`, higher is better), and every order is
  compared with random order by a paired test over prototypes (`deletion_summary`).
- localisation (`explain.localisation`: on-lesion mass share, pointing game, top-area IoU, each
  with its chance level) of the PRP and the upsampled map against a lesion mask (`lesion`: real
  masks where the data has them, else the proxy), on each prototype's source image and on its
  nearest test images (`test_` columns); and the share of the source box on the lesion.
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
from ..protopnet.model import ProtoPNet
from . import localisation
from .nearest import NearestPatches
from .prp import prp_heatmaps

DELETION_STEPS = 10  # removal steps of the deletion curve (10 % of the pixels each)
BLUR_SIGMA = 1 / 20  # the blurred substrate's std, as a share of the image side (11 px at 224)
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
    model: ProtoPNet, x: torch.Tensor, j: int, order: torch.Tensor, steps: int = DELETION_STEPS,
    substrate: torch.Tensor | None = None, insertion: bool = False,
) -> np.ndarray:  # fmt: skip
    """(steps + 1,) similarity of prototype j / its value on the intact image while the pixels in
    `order` (flat indices, first first) are replaced by `substrate` (default 0, the data's mean),
    in equal steps; with `insertion`, the curve starts from the substrate and the pixels in
    `order` are put back instead (RISE's insertion: higher is better)."""
    h, w = x.shape[-2:]
    n = h * w
    keep = torch.ones(steps + 1, n, device=x.device)
    for s in range(1, steps + 1):
        keep[s, order[: round(s * n / steps)]] = 0
    keep = keep.view(steps + 1, 1, h, w)
    if insertion:
        keep = 1 - keep
    base = torch.zeros_like(x) if substrate is None else substrate
    xs = torch.cat([x, x * keep + base * (1 - keep)])
    sims = model.similarity_vectors(xs)[:, j].float().cpu().numpy()
    intact, sims = sims[0], sims[1:]
    return sims / intact if intact != 0 else sims


def blurred(x: torch.Tensor, sigma_share: float = BLUR_SIGMA) -> torch.Tensor:
    """x under a Gaussian blur of std `sigma_share` of its side: the substrate that keeps the
    image's colours, so removing pixels does not add out-of-distribution mean-coloured dots."""
    from torchvision.transforms.functional import gaussian_blur

    sigma = max(sigma_share * max(x.shape[-2:]), 0.5)
    kernel = 2 * int(np.ceil(3 * sigma)) + 1
    return gaussian_blur(x, [kernel, kernel], [sigma, sigma])


def deletion_auc(curve: np.ndarray) -> float:
    """Area under a deletion curve over the removed fraction 0..1 (trapezoids)."""
    return float(np.trapezoid(curve, dx=1.0 / (len(curve) - 1)))


DELETION_VARIANTS = {  # column prefix: (substrate, insertion)
    "deletion_auc": ("mean", False),  # ST-ProtoPNet's: pixels set to the data's mean
    "blur_deletion_auc": ("blur", False),
    "blur_insertion_auc": ("blur", True),
}


def _deletion_aucs(model, x, j, orders, steps, blur) -> dict[str, float]:
    """The AUC of every deletion variant for every order of one (image, prototype) pair."""
    out = {}
    for prefix, (substrate, insertion) in DELETION_VARIANTS.items():
        base = blur if substrate == "blur" else None
        for kind, order in orders.items():
            curve = deletion_curve(model, x, j, order.to(x.device), steps, base, insertion)
            out[f"{prefix}_{kind}"] = deletion_auc(curve)
    return out


def _nearest_pairs(nearest_test: NearestPatches, images: int) -> dict[int, list[int]]:
    """Test image index -> the prototypes that have it among their `images` nearest."""
    pairs: dict[int, list[int]] = {}
    for j in range(nearest_test.image_index.shape[0]):
        for i in nearest_test.image_index[j, :images].tolist():
            if i >= 0:
                pairs.setdefault(int(i), []).append(j)
    return pairs


class PerPrototypeMeans:
    """Running means of named values per prototype (nan where a prototype got none)."""

    def __init__(self, prototypes: int, names: Sequence[str] = ()):
        self.sums = {n: np.zeros(prototypes) for n in names}
        self.counts = {n: np.zeros(prototypes) for n in names}
        self.prototypes = prototypes

    def add(self, j: int, values: dict[str, float]) -> None:
        for name, v in values.items():
            s = self.sums.setdefault(name, np.zeros(self.prototypes))
            c = self.counts.setdefault(name, np.zeros(self.prototypes))
            if not np.isnan(v):
                s[j] += v
                c[j] += 1

    def means(self) -> dict[str, np.ndarray]:
        return {n: np.where(c > 0, self.sums[n] / np.maximum(c, 1), np.nan)
                for n, c in self.counts.items()}  # fmt: skip


def localise(heats: dict[str, np.ndarray], mask: np.ndarray, prefix: str = "") -> dict[str, float]:
    """`explain.localisation`'s measures of each heatmap against `mask`, with the mask's area
    (the chance of on-lesion and pointing) and the top-area IoU's chance; {} for an empty mask."""
    if not mask.any():
        return {}
    level = localisation.chance(mask)
    out = {f"{prefix}lesion_area": level["on_lesion"], f"{prefix}top_iou_chance": level["top_iou"]}
    for kind, heat in heats.items():
        for measure, v in localisation.scores(heat, mask).items():
            out[f"{prefix}{measure}_{kind}"] = v
    return out


def nearest_test_metrics(
    model: ProtoPNet, nearest_test: NearestPatches, dataset: Any,
    device: torch.device | str = "cpu", images: int = 3, steps: int = DELETION_STEPS, seed: int = 0,
    bounds: tuple[float, float] = DEFAULT_BOUNDS, masks: Any = None,
) -> dict[str, np.ndarray]:  # fmt: skip
    """(P,) means over each prototype's `images` nearest test images: the deletion AUC per
    heatmap order (prp, upsample, random) and, against each image's lesion mask (real in folder
    `masks`, else the proxy), the localisation of the PRP and the upsampled map (`test_` columns).
    Away from the source image, where PRP's L2 rule is not at its z = p degenerate point."""
    from .lesion import lesion_mask
    from .render import image_array

    gen = torch.Generator().manual_seed(seed)
    names = [f"{prefix}_{k}" for prefix in DELETION_VARIANTS for k in ORDERS]
    acc = PerPrototypeMeans(model.num_prototypes, names)
    for i, protos in _nearest_pairs(nearest_test, images).items():
        x = dataset[i][0][None].to(device)
        blur = blurred(x)
        heat, _ = prp_heatmaps(model, x, protos, bounds=bounds)
        pixels = image_array(dataset.load_image(i), tuple(x.shape[-2:]))
        mask, _ = lesion_mask(pixels, dataset.image_ids[i], masks)
        for n, j in enumerate(protos):
            up = upsampled_map(model, x, j)
            orders = {
                "prp": heat[n].flatten().argsort(descending=True),
                "upsample": up.flatten().argsort(descending=True),
                "random": torch.randperm(x.shape[-2] * x.shape[-1], generator=gen),
            }
            acc.add(j, _deletion_aucs(model, x, j, orders, steps, blur))
            up = up.cpu().numpy()
            heats = {"prp": heat[n].cpu().numpy(), "upsample": up - up.min()}
            acc.add(j, localise(heats, mask, "test_"))
    return acc.means()


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


def box_share(box: Sequence[int], mask: np.ndarray) -> float:
    """Share of the box (y0, y1, x0, x1) lying on the mask."""
    y0, y1, x0, x1 = box
    part = mask[y0:y1, x0:x1]
    return float(part.mean()) if part.size else float("nan")


def source_localisation(
    model: ProtoPNet, sources: Any, dataset: Any, input_hw: tuple[int, int],
    device: torch.device | str = "cpu", masks: Any = None,
    bounds: tuple[float, float] = DEFAULT_BOUNDS,
) -> tuple[dict[str, np.ndarray], list[str]]:  # fmt: skip
    """(P,) localisation of the PRP and the upsampled map of each prototype on its source image
    (at network-input size), the share of its source box on the lesion, and each mask's origin
    ('mask', 'proxy' or ''). On the source image the L2 PRP rule is at z = p (see docs)."""
    from .lesion import lesion_mask
    from .render import image_array

    acc = PerPrototypeMeans(model.num_prototypes, ["on_lesion_prp", "on_lesion_upsample"])
    origin = [""] * model.num_prototypes
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
            up = upsampled_map(model, x, j).cpu().numpy()  # the map as drawn (min-max)
            heats = {"prp": heat[n].cpu().numpy(), "upsample": up - up.min()}
            acc.add(j, localise(heats, mask))
            if sources.boxes[j] is not None and sources.plain[j] is not None:
                drawn, _ = lesion_mask(sources.plain[j], sources.image_id[j], masks)
                acc.add(j, {"source_box_on_lesion": box_share(sources.boxes[j], drawn)})
            origin[j] = how
    return acc.means(), origin


def explanation_metrics(
    model: ProtoPNet, nearest_test: NearestPatches, sources: Any, push_dataset: Any,
    test_loader: Any, test_dataset: Any, device: torch.device | str = "cpu",
    masks: Any = None, images: int = 3, bounds: tuple[float, float] = DEFAULT_BOUNDS,
) -> pd.DataFrame:  # fmt: skip
    """One row per prototype: stability, deletion AUCs, localisation on the source image and on
    the nearest test images, near-duplicate."""
    table = pd.DataFrame({"prototype": range(model.num_prototypes)})
    table["stability"] = stability(model, test_loader, device)
    test = nearest_test_metrics(model, nearest_test, test_dataset, device, images, bounds=bounds,
                                masks=masks)  # fmt: skip
    source, origin = source_localisation(model, sources, push_dataset, nearest_test.input_hw,
                                         device, masks, bounds)  # fmt: skip
    for name, v in {**test, **source}.items():
        table[name] = v
    table["lesion_mask"] = origin
    table["duplicate_of"] = near_duplicates(model)
    return table


ORDERS = ("prp", "upsample", "random")  # heatmap orders of the deletion curves
SUMMARY_COLUMNS = ("purity", "stability", *(f"{v}_{k}" for v in DELETION_VARIANTS for k in ORDERS))
IMAGE_SETS = {"": "source image", "test_": "nearest test images"}  # localisation column prefixes


def _mean(values: pd.Series) -> float:
    return float(values.mean()) if values.notna().any() else float("nan")


def localisation_summary(table: pd.DataFrame) -> dict[str, float]:
    """For each image set, measure and heatmap: the mean, the chance level over the same rows
    (the mean lesion area, or the top-area IoU's chance) and the chance-corrected mean; and the
    source box's share on the lesion beside the lesion area."""
    out: dict[str, float] = {}
    for prefix in IMAGE_SETS:
        if f"{prefix}lesion_area" not in table:
            continue
        for measure in localisation.MEASURES:
            chance_of = "top_iou_chance" if measure == "top_iou" else "lesion_area"
            level = table[prefix + chance_of]
            out[f"chance_{prefix}{measure}"] = _mean(level)
            for kind in ("prp", "upsample"):
                value = table[f"{prefix}{measure}_{kind}"]
                ok = value.notna() & level.notna()
                mean = out[f"mean_{prefix}{measure}_{kind}"] = _mean(value[ok])
                corrected = localisation.chance_corrected(mean, _mean(level[ok]))
                out[f"corrected_{prefix}{measure}_{kind}"] = corrected
    if "source_box_on_lesion" in table:
        box, area = table["source_box_on_lesion"], table["lesion_area"]
        ok = box.notna() & area.notna()
        out["mean_source_box_on_lesion"] = _mean(box[ok])
        out["corrected_source_box_on_lesion"] = localisation.chance_corrected(
            _mean(box[ok]), _mean(area[ok])
        )
    return out


def deletion_summary(table: pd.DataFrame) -> dict[str, float]:
    """Each heatmap order against random order, paired by prototype: mean difference of the
    AUCs with its 95 % t interval (deletion: below 0 is better than random; insertion: above)."""
    from ..metrics import paired_t_interval

    out: dict[str, float] = {}
    for variant in DELETION_VARIANTS:
        if f"{variant}_random" not in table:
            continue
        for kind in ("prp", "upsample"):
            t = paired_t_interval(table[f"{variant}_{kind}"] - table[f"{variant}_random"])
            key = f"{variant}_{kind}_minus_random"
            out[key], out[f"{key}_low"], out[f"{key}_high"] = t["mean"], t["ci_low"], t["ci_high"]
    return out


def model_summary(table: pd.DataFrame) -> dict[str, float]:
    """Per-model means of the per-prototype table, localisation beside its chance levels, the
    background share, distinct sources and the number of near-duplicate prototypes."""
    out = {f"mean_{c}": _mean(table[c]) for c in SUMMARY_COLUMNS if c in table}
    out.update(deletion_summary(table))
    out.update(localisation_summary(table))
    if "background" in table:
        out["background_share"] = float(table["background"].mean())
    if "source_image" in table:
        out["distinct_sources"] = distinct_share(table["source_image"].fillna("").tolist())
    if "duplicate_of" in table:
        out["near_duplicates"] = int((table["duplicate_of"] >= 0).sum())
    return out
