"""Global analysis, neighbour patches, prototype sources, quality and top-match counts against
brute force on a pixel-level ProtoPNet (latent = image, so every distance is known)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from protoprune.data.base import ArrayImageDataset
from protoprune.data.transforms import build_transform
from protoprune.explain.global_ import global_analysis, neighbour_patches
from protoprune.explain.local import prototype_sources
from protoprune.explain.nearest import k_nearest_patches
from protoprune.explain.quality import border_fraction, prototype_quality, top_match_counts
from protoprune.explain.render import RF_COLOR
from protoprune.protopnet.push import BOX_COLOR
from tests.explain.fixtures import identity_protopnet

CLASSES = ["red", "green", "blue"]
K = 3


def _data(n: int = 12, seed: int = 0):
    """Grey-ish 8 x 8 images, each with one planted pure-colour pixel of varied strength."""
    rng = np.random.default_rng(seed)
    images = rng.integers(80, 180, size=(n, 8, 8, 3), dtype=np.uint8)
    targets = np.arange(n) % 3
    for i in range(n):
        y, x = rng.integers(0, 8, 2)
        colour = np.zeros(3, np.uint8)
        colour[targets[i]] = rng.integers(190, 256)
        images[i, y, x] = colour
    ds = ArrayImageDataset(images, targets, CLASSES, image_ids=[f"im{i}" for i in range(n)])
    ds = ds.with_transform(build_transform(8, [0.0] * 3, [1.0] * 3))
    return ds, DataLoader(ds, batch_size=5, shuffle=False)


def _model():
    protos = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.5, 0.6, 0.5]])
    return identity_protopnet(protos, [0, 1, 2, 1], 3)


def _brute(model, ds):
    """(N, P) min distance per image and its flat pixel; (N, P) max similarity."""
    x = torch.stack([ds[i][0] for i in range(len(ds))]).double()
    p = model.prototype_vectors.detach().double().flatten(1)  # (P, 3)
    d = ((x.flatten(2)[:, None] - p[None, :, :, None]) ** 2).sum(2)  # (N, P, 64)
    dmin, where = d.min(2)
    sim = torch.log((dmin + 1) / (dmin + model.epsilon))
    return dmin, where, sim


def test_k_nearest_patches_and_the_global_tables_match_brute_force(tmp_path) -> None:
    model = _model()
    ds, loader = _data()
    dmin, where, _ = _brute(model, ds)
    result = global_analysis(model, {"train": (loader, ds)}, CLASSES, tmp_path, K, progress=False)
    nearest = result["nearest"]["train"]
    table = pd.read_csv(tmp_path / "nearest_train.csv")
    for j in range(model.num_prototypes):
        order = dmin[:, j].argsort()[:K].tolist()  # one patch per image, nearest first
        assert nearest.image_index[j].tolist() == order
        rows = table[table["prototype"] == j].sort_values("rank")
        assert rows["image_index"].tolist() == order
        assert rows["image_id"].tolist() == [f"im{i}" for i in order]
        np.testing.assert_allclose(rows["distance"], dmin[order, j].numpy(), rtol=1e-4, atol=1e-6)
        assert (rows["latent_h"] * 8 + rows["latent_w"]).tolist() == where[order, j].tolist()
        assert rows["image_class"].tolist() == [CLASSES[i % 3] for i in order]
    figures = pd.read_csv(tmp_path / "global_figures.csv")
    assert sorted(figures["class"]) == sorted(CLASSES)  # one grid per class with prototypes
    assert all((tmp_path / f).is_file() for f in figures["figure"])


def test_neighbour_patches_box_the_matched_pixel_and_its_receptive_field() -> None:
    model = _model()
    ds, loader = _data()
    nearest = k_nearest_patches(model, loader, K, progress=False)
    patches = neighbour_patches(model, nearest, ds)
    for j in range(model.num_prototypes):
        for r in range(K):
            i = int(nearest.image_index[j, r])
            raw = np.asarray(ds.load_image(i))
            drawn = patches[j][r]
            h, w = divmod(int(nearest.position[j, r]), 8)
            # the 1 x 1 receptive field of the matched pixel is drawn (cyan, or yellow on top)
            assert tuple(drawn[h, w]) in (RF_COLOR, BOX_COLOR)
            changed = (drawn != raw).any(2)
            colours = {tuple(c) for c in drawn[changed]}
            assert colours <= {RF_COLOR, BOX_COLOR}  # only the two outlines were drawn


def test_prototype_sources_are_the_nearest_push_images() -> None:
    model = _model()
    ds, loader = _data()
    dmin, where, _ = _brute(model, ds)
    nearest = k_nearest_patches(model, loader, 1, progress=False)
    src = prototype_sources(model, nearest, ds, CLASSES)
    for j in range(model.num_prototypes):
        i = int(dmin[:, j].argmin())
        assert src.image_index[j] == i and src.image_id[j] == f"im{i}"
        assert src.image_class[j] == CLASSES[i % 3]
        assert src.distance[j] == pytest.approx(float(dmin[i, j]), rel=1e-4, abs=1e-6)
        h, w = divmod(int(where[i, j]), 8)
        assert src.rf_boxes[j] == [h, h + 1, w, w + 1] and src.rf_fraction[j] == 1 / 64
        y0, y1, x0, x1 = src.boxes[j]
        assert y0 <= h < y1 and x0 <= w < x1  # the 95th-percentile box holds the match
        np.testing.assert_array_equal(src.plain[j], np.asarray(ds.load_image(i)))
        np.testing.assert_array_equal(src.crops[j], src.plain[j][y0:y1, x0:x1])


def test_top_match_counts_and_quality_match_brute_force() -> None:
    model = _model()
    ds, loader = _data(15, seed=1)
    _, _, sim = _brute(model, ds)
    counts = top_match_counts(model, loader)
    expected = np.bincount(sim.argmax(1).numpy(), minlength=model.num_prototypes)
    np.testing.assert_array_equal(counts, expected)
    nearest = k_nearest_patches(model, loader, K, progress=False)
    src = prototype_sources(model, nearest, ds, CLASSES)
    table = prototype_quality(model, nearest, src, counts, CLASSES)
    dmin, _, _ = _brute(model, ds)
    for j, cls in enumerate([0, 1, 2, 1]):
        order = dmin[:, j].argsort()[:K].numpy()
        row = table.iloc[j]
        assert row["purity"] == pytest.approx(np.mean(order % 3 == cls))
        assert row["top_matches"] == expected[j]
        assert row["top_match_rate"] == pytest.approx(expected[j] / expected.sum())
        assert row["border_fraction"] == pytest.approx(border_fraction(src.boxes[j], (8, 8)))
        assert row["class"] == CLASSES[cls] and row["source_image"] == src.image_id[j]
