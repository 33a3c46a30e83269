"""Localisation against a lesion mask and its chance levels: hand calculations, brute force and
Monte Carlo draws of maps that know nothing of the image."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from protoprune.explain import localisation as loc
from protoprune.explain.metrics import localisation_summary, nearest_test_metrics
from protoprune.explain.nearest import NearestPatches
from protoprune.explain.quality import BORDER, BORDER_LIMIT, background_base_rate
from tests.explain.fixtures import identity_protopnet


def test_each_measure_on_a_hand_example() -> None:
    heat = np.array([[1.0, -5.0, 0.0], [3.0, 0.0, 2.0]])
    mask = np.array([[True, True, False], [False, False, True]])
    assert loc.mass_share(heat, mask) == pytest.approx(3 / 6)  # (1 + 2) of (1 + 3 + 2)
    assert loc.pointing(heat, mask) == 0.0  # the peak, 3, is off the lesion
    # the 3 highest pixels are 3, 2, 1: two of them on the 3-pixel lesion -> IoU 2 / 4
    assert loc.top_area_iou(heat, mask) == pytest.approx(0.5)
    assert np.isnan(loc.mass_share(np.zeros((2, 2)), mask[:, :2]))
    flat = np.ones((2, 3))  # every pixel ties for the peak: the lesion's share of them
    assert loc.pointing(flat, mask) == pytest.approx(0.5)
    assert loc.top_area_iou(np.where(mask, 1.0, 0.0), mask) == 1.0  # a perfect map
    assert loc.chance_corrected(0.6, 0.2) == pytest.approx(0.5)
    assert loc.chance_corrected(0.2, 0.2) == 0.0 and loc.chance_corrected(0.0, 0.2) < 0


def test_top_area_iou_equals_a_brute_force_set_computation() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        heat = rng.normal(size=(9, 11))
        mask = rng.random((9, 11)) < rng.uniform(0.1, 0.6)
        k = int(mask.sum())
        ranked = sorted(range(heat.size), key=lambda i: -heat.flat[i])[:k]
        top = {divmod(i, 11) for i in ranked}
        lesion = set(zip(*np.nonzero(mask)))
        assert loc.top_area_iou(heat, mask) == pytest.approx(len(top & lesion) / len(top | lesion))


def test_maps_that_ignore_the_image_score_the_chance_level_on_average() -> None:
    """Random maps on a fixed mask: the mean of each measure is its chance level."""
    rng = np.random.default_rng(1)
    mask = np.zeros((40, 40), bool)
    mask[5:17, 10:30] = True  # 0.15 of the image
    draws = [loc.scores(rng.random((40, 40)), mask) for _ in range(3000)]
    level = loc.chance(mask)
    for measure in loc.MEASURES:
        mean = np.mean([d[measure] for d in draws])
        se = np.std([d[measure] for d in draws]) / np.sqrt(len(draws))
        assert abs(mean - level[measure]) < 4 * se + 2e-3, measure
    assert level["on_lesion"] == pytest.approx(0.15)


def test_the_summary_puts_each_mean_beside_the_chance_of_the_same_rows() -> None:
    table = pd.DataFrame(
        {
            "lesion_area": [0.2, 0.4, np.nan],
            "top_iou_chance": [0.2 / 1.8, 0.4 / 1.6, np.nan],
            **{f"{m}_{k}": [0.6, 0.7, np.nan] for m in loc.MEASURES for k in ("prp", "upsample")},
            "source_box_on_lesion": [1.0, 0.0, np.nan],
        }
    )
    table.loc[1, "pointing_prp"] = np.nan  # no peak on prototype 1: its chance must not count
    out = localisation_summary(table)
    assert out["mean_on_lesion_prp"] == pytest.approx(0.65)
    assert out["chance_on_lesion"] == pytest.approx(0.3)
    assert out["corrected_on_lesion_prp"] == pytest.approx((0.65 - 0.3) / 0.7)
    assert out["corrected_pointing_prp"] == pytest.approx((0.6 - 0.2) / 0.8)
    chance_iou = (0.2 / 1.8 + 0.4 / 1.6) / 2
    assert out["corrected_top_iou_upsample"] == pytest.approx((0.65 - chance_iou) / (1 - chance_iou))
    assert out["corrected_source_box_on_lesion"] == pytest.approx((0.5 - 0.3) / 0.7)
    assert "chance_test_on_lesion" not in out  # no nearest-test columns, no test summary


def _brute_force_base_rate(h: int, w: int, size: int) -> float:
    """The push's box by np.percentile on each bicubically upsampled peak, the ring by hand."""
    ring = int(round(size * BORDER))
    flagged = 0
    for cy in range(h):
        for cx in range(w):
            yy, xx = np.mgrid[0:h, 0:w]
            peak = torch.tensor(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0))[None, None]
            up = F.interpolate(peak.float(), size=(size, size), mode="bicubic")[0, 0].numpy()
            ys, xs = np.nonzero(up >= np.percentile(up, 95))
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            inside = sum(ring <= y < size - ring and ring <= x < size - ring
                         for y in range(y0, y1) for x in range(x0, x1))  # fmt: skip
            flagged += 1 - inside / ((y1 - y0) * (x1 - x0)) >= BORDER_LIMIT
    return flagged / (h * w)


@pytest.mark.parametrize("grid,size", [(4, 28), (14, 28), (7, 224)])
def test_the_background_flags_base_rate_from_geometry_alone(grid: int, size: int) -> None:
    got = background_base_rate((grid, grid), (size, size))
    assert got == pytest.approx(_brute_force_base_rate(grid, grid, size))
    if (grid, size) == (4, 28):
        assert got == 12 / 16  # every border cell of a 4 x 4 grid, whatever the image
    if (grid, size) == (14, 28):
        assert got == 100 / 196


class _Images:
    """A dataset of given tensors whose pixels are the images themselves (load_image)."""

    def __init__(self, x: torch.Tensor):
        self.x, self.image_ids = x, [f"ISIC_{i:07d}" for i in range(len(x))]

    def __getitem__(self, i: int):
        return self.x[i], 0

    def load_image(self, i: int) -> Image.Image:
        return Image.fromarray((self.x[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8))


def test_on_nearest_test_images_prp_points_at_the_planted_patch_with_real_masks(tmp_path) -> None:
    """Latent = pixels: a red prototype's PRP lies on the red square of each test image. A mask
    folder drawing the square as the lesion gives pointing 1; one drawing elsewhere gives 0."""
    model = identity_protopnet(torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]), [0, 1], 2)
    x = torch.full((2, 3, 12, 12), 0.5)
    x[0, :, 2:5, 3:6] = torch.tensor([1.0, 0, 0])[:, None, None]
    x[1, :, 7:10, 6:9] = torch.tensor([1.0, 0, 0])[:, None, None]
    ds = _Images(x)
    for n, (ys, xs) in enumerate([(slice(2, 5), slice(3, 6)), (slice(7, 10), slice(6, 9))]):
        drawn = np.zeros((12, 12), np.uint8)
        drawn[ys, xs] = 255
        Image.fromarray(drawn).save(tmp_path / f"ISIC_{n:07d}_segmentation.png")
    nearest = NearestPatches(
        distances=torch.zeros(2, 2), image_index=torch.tensor([[0, 1], [-1, -1]]),
        position=torch.zeros(2, 2, dtype=torch.long), image_class=torch.zeros(2, 2, dtype=torch.long),
        map_shape=(12, 12), input_hw=(12, 12),
    )  # fmt: skip
    got = nearest_test_metrics(model, nearest, ds, images=2, masks=tmp_path, bounds=(0.0, 1.0))
    assert got["test_pointing_prp"][0] == 1.0 and got["test_on_lesion_prp"][0] > 0.99
    assert got["test_lesion_area"][0] == pytest.approx(9 / 144)
    assert np.isnan(got["test_pointing_prp"][1])  # prototype 1 has no nearest images
    other = tmp_path / "elsewhere"
    other.mkdir()
    for n in range(2):
        drawn = np.zeros((12, 12), np.uint8)
        drawn[10:12, 0:3] = 255
        Image.fromarray(drawn).save(other / f"ISIC_{n:07d}_segmentation.png")
    got = nearest_test_metrics(model, nearest, ds, images=2, masks=other, bounds=(0.0, 1.0))
    assert got["test_pointing_prp"][0] == 0.0 and got["test_on_lesion_prp"][0] < 0.01
