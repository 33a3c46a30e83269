"""Explanation-quality metrics against constructed answers and brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from protoprune.errors import ConfigError
from protoprune.explain.lesion import lesion_mask, mask_folder, proxy_mask
from protoprune.explain.metrics import (
    deletion_auc,
    deletion_curve,
    distinct_share,
    near_duplicates,
    stability,
)
from tests.explain.fixtures import identity_protopnet


def _skin_with_lesion(vignette: bool = False, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A skin-coloured 64 px image with noise and a dark brown ellipse (the true mask)."""
    rng = np.random.default_rng(seed)
    img = np.empty((64, 64, 3), np.float64)
    img[:] = (215, 165, 145)
    yy, xx = np.mgrid[:64, :64]
    lesion = ((yy - 30) / 14) ** 2 + ((xx - 34) / 18) ** 2 <= 1
    img[lesion] = (105, 65, 45)
    img[lesion & ((yy - 30) ** 2 + (xx - 34) ** 2 <= 9)] = (170, 130, 110)  # a lighter centre
    if vignette:
        corner = (yy - 31.5) ** 2 + (xx - 31.5) ** 2 > 38**2
        img[corner] = (20, 20, 20)
    img += rng.normal(0, 6, img.shape)
    return img.clip(0, 255).astype(np.uint8), lesion


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("vignette", [False, True])
def test_the_lesion_proxy_finds_a_dark_lesion_by_construction(vignette: bool) -> None:
    for seed in range(3):
        img, truth = _skin_with_lesion(vignette, seed)
        assert _iou(proxy_mask(img), truth) >= 0.9, seed  # centre hole filled, corners left out


def test_a_real_mask_folder_takes_precedence(tmp_path) -> None:
    img, truth = _skin_with_lesion()
    drawn = np.zeros((32, 32), np.uint8)
    drawn[4:10, 5:20] = 255
    Image.fromarray(drawn).save(tmp_path / "ISIC_0000001_segmentation.png")
    folder = mask_folder(tmp_path)
    mask, origin = lesion_mask(img, "ISIC_0000001.jpg", folder)
    assert origin == "mask" and mask.shape == (64, 64) and mask.sum() == 12 * 30
    mask, origin = lesion_mask(img, "ISIC_0000002", folder)  # no file: the proxy
    assert origin == "proxy" and _iou(mask, truth) > 0.9
    with pytest.raises(ConfigError, match="_segmentation.png"):
        mask_folder(tmp_path / "missing")


def test_near_duplicates_and_distinct_sources() -> None:
    protos = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0], [0, 1.0, 1e-9]])
    model = identity_protopnet(protos, [0, 1, 0, 1], 2)
    assert near_duplicates(model) == [-1, -1, 0, 1]
    assert distinct_share(["a", "b", "a", ""]) == pytest.approx(2 / 3)


def _pixel_model():
    protos = torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])
    return identity_protopnet(protos, [0, 1], 2)


def test_deletion_curve_equals_masking_by_hand() -> None:
    model = _pixel_model()
    x = torch.full((1, 3, 4, 4), 0.5)
    x[0, :, 1:3, 1:3] = torch.tensor([1.0, 0, 0])[:, None, None]  # 4 red pixels
    order = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    curve = deletion_curve(model, x, 0, order, steps=4)
    for s in range(5):
        xs = x.clone().view(1, 3, 16)
        xs[..., order[: round(s * 16 / 4)]] = 0
        with torch.no_grad():
            sim = model.similarity_vectors(xs.view(1, 3, 4, 4))[0, 0]
            ref = model.similarity_vectors(x)[0, 0]
        assert curve[s] == pytest.approx(float(sim / ref), rel=1e-5)
    assert deletion_auc(np.array([1.0, 0.5, 0.0])) == pytest.approx(0.5)
    # removing the red pixels first drops the similarity at once; a random order later
    red_first = torch.tensor([5, 6, 9, 10] + [i for i in range(16) if i not in (5, 6, 9, 10)])
    assert deletion_auc(deletion_curve(model, x, 0, red_first, 4)) < deletion_auc(curve)


def test_stability_counts_own_class_images_whose_peak_stays() -> None:
    """Brute force: the peak cell with and without the same noise, compared per image."""
    model = _pixel_model()
    g = torch.Generator().manual_seed(3)
    x = 0.5 * torch.rand(6, 3, 5, 5, generator=g)
    x[:3, :, 2, 2] = torch.tensor([1.0, 0, 0])  # a clear red peak: stable
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    got = stability(model, loader, noise=0.05, seed=7)
    gen = torch.Generator().manual_seed(7)
    noisy = torch.cat([xb + 0.05 * torch.randn(xb.shape, generator=gen) for xb, _ in loader])
    with torch.no_grad():
        a = model.prototype_distances(x).flatten(2).argmin(2)
        b = model.prototype_distances(noisy).flatten(2).argmin(2)
    same = (a == b).float()
    assert got[0] == pytest.approx(float(same[:3, 0].mean())) and got[0] == 1.0
    assert got[1] == pytest.approx(float(same[3:, 1].mean()))


def test_insertion_on_a_substrate_equals_revealing_by_hand() -> None:
    model = _pixel_model()
    x = torch.full((1, 3, 4, 4), 0.5)
    x[0, :, 1:3, 1:3] = torch.tensor([1.0, 0, 0])[:, None, None]
    base = torch.full_like(x, 0.2)
    order = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    curve = deletion_curve(model, x, 0, order, steps=4, substrate=base, insertion=True)
    with torch.no_grad():
        intact = model.similarity_vectors(x)[0, 0]
        for s in range(5):
            xs = base.clone().view(1, 3, 16)
            xs[..., order[: round(s * 16 / 4)]] = x.view(1, 3, 16)[..., order[: round(s * 16 / 4)]]
            sim = model.similarity_vectors(xs.view(1, 3, 4, 4))[0, 0]
            assert curve[s] == pytest.approx(float(sim / intact), rel=1e-5)
    assert curve[-1] == pytest.approx(1.0)
    deleted = deletion_curve(model, x, 0, order, steps=4, substrate=base)
    assert deleted[0] == pytest.approx(1.0) and deleted[-1] == pytest.approx(curve[0])


def test_the_blurred_substrate_is_a_gaussian_filter() -> None:
    """Interior pixels against scipy's Gaussian filter (mirror edges are torch's reflect)."""
    from scipy.ndimage import gaussian_filter

    from protoprune.explain.metrics import blurred

    x = torch.rand(1, 3, 60, 60, generator=torch.Generator().manual_seed(0))
    got = blurred(x, sigma_share=0.05)[0].numpy()  # sigma 3 px, kernel radius 9
    for c in range(3):
        ref = gaussian_filter(x[0, c].double().numpy(), 3.0, mode="mirror", truncate=3.0)
        assert np.abs(got[c] - ref)[9:-9, 9:-9].max() < 1e-3


def test_each_order_against_random_paired_by_prototype() -> None:
    import pandas as pd

    from protoprune.explain.metrics import deletion_summary

    table = pd.DataFrame({"deletion_auc_prp": [0.2, 0.4, 0.3], "deletion_auc_upsample": [0.5] * 3,
                          "deletion_auc_random": [0.5, 0.5, 0.6]})  # fmt: skip
    out = deletion_summary(table)
    d = np.array([-0.3, -0.1, -0.3])
    half = 4.302653 * d.std(ddof=1) / np.sqrt(3)  # t(0.975, 2 df)
    assert out["deletion_auc_prp_minus_random"] == pytest.approx(d.mean())
    assert out["deletion_auc_prp_minus_random_high"] == pytest.approx(d.mean() + half, rel=1e-5)
    assert "blur_insertion_auc_prp_minus_random" not in out
