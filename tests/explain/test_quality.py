"""Prototype quality heuristics and the choice of sample images."""

from __future__ import annotations

import numpy as np
import pytest

from protoprune.explain.analysis import choose_samples
from protoprune.explain.quality import border_fraction, contrast_ratio


def test_border_fraction_measures_the_outer_ring() -> None:
    hw = (32, 32)  # ring width 4 px
    assert border_fraction([12, 20, 12, 20], hw) == 0.0  # centred box
    assert border_fraction([0, 4, 0, 32], hw) == 1.0  # top strip
    assert border_fraction([0, 8, 8, 16], hw) == pytest.approx(0.5)  # half in the ring


def test_contrast_ratio_separates_texture_from_flat_skin() -> None:
    img = np.full((20, 20, 3), 200, np.uint8)
    img[5:15, 5:15] = np.random.default_rng(0).integers(0, 255, (10, 10, 3), dtype=np.uint8)
    assert contrast_ratio(img, [0, 4, 0, 20]) == 0.0  # flat border skin
    assert contrast_ratio(img, [5, 15, 5, 15]) > 1.0  # the textured "lesion"


def test_samples_start_with_melanoma_correct_then_wrong() -> None:
    names = ["akiec", "mel", "nv"]
    y = np.array([0, 0, 1, 1, 1, 2, 2])
    pred = np.array([0, 2, 2, 1, 1, 2, 0])
    chosen = choose_samples(y, pred, names, 5)
    assert chosen[:2] == [3, 2]  # mel correct first, then mel wrong
    assert set(chosen[2:]) <= {0, 1, 5, 6} and len(chosen) == 5
    everything = choose_samples(y, pred, names, 100)
    assert sorted(everything) == list(range(len(y)))  # each image once, none invented
