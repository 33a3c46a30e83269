"""Explanation retention, hand-counted on constructed snapshots (on a trained ProtoPNet:
tests/protopnet/test_trunk_pruning.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from protoprune.config import _CHOICES
from protoprune.explain.retention import RETENTION_MEASURES, ExplanationSnapshot, retention


def test_the_config_offers_every_measure() -> None:
    assert _CHOICES["prune_filters.retention_measure"] == RETENTION_MEASURES


def test_each_measure_against_a_hand_count() -> None:
    rng = np.random.default_rng(0)
    maps = rng.random((2, 5, 5))
    base = ExplanationSnapshot(source_image=np.array([4, 7, 9, -1]),
                               source_cell=np.array([[0, 0], [1, 2], [3, 3], [-1, -1]]),
                               top=np.array([[0, 1, 2], [3, 2, 1]]), heatmaps=maps,
                               heat_prototype=np.array([0, 3]))  # fmt: skip
    moved = maps.copy()
    moved[1] = maps[1].T  # the second image's heatmap transposed
    now = ExplanationSnapshot(source_image=np.array([4, 7, 8, 5]),  # the unpushed 4th is not counted
                              source_cell=np.array([[0, 0], [2, 2], [3, 3], [0, 0]]),
                              top=np.array([[0, 2, 5], [1, 2, 3]]), heatmaps=moved,
                              heat_prototype=np.array([0, 3]))  # fmt: skip
    got = retention(base, now)
    assert got["same_source_image"] == pytest.approx(2 / 3)  # prototypes 0 and 1 of the 3 pushed
    assert got["same_source_cell"] == pytest.approx(1 / 3)  # prototype 1 moved to another cell
    assert got["topk_jaccard"] == pytest.approx((2 / 4 + 3 / 3) / 2)  # {0,2} of {0,1,2,5}; all 3
    assert got["same_strongest"] == pytest.approx(0.5)  # 0 == 0, 3 != 1
    rho = spearmanr(maps[1].ravel(), maps[1].T.ravel()).statistic
    assert got["prp_spearman"] == pytest.approx((1 + rho) / 2)
    assert retention(base, base) == {m: 1.0 for m in RETENTION_MEASURES}


def test_lesion_localisation_against_a_hand_count() -> None:
    from protoprune.explain.retention import lesion_localisation

    mask = np.array([[True, False], [False, False]])  # a quarter of the image
    heat = np.array([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 2.0]]])  # on it; off it
    got = lesion_localisation(heat, np.stack([mask, mask]))
    assert got["on_lesion"] == pytest.approx(0.5) and got["pointing"] == pytest.approx(0.5)
    assert got["top_iou"] == pytest.approx(0.5)  # top-1 pixel: IoU 1, then 0
    assert got["on_lesion_chance"] == pytest.approx(0.25) and got["pointing_chance"] == pytest.approx(0.25)
    assert got["top_iou_chance"] == pytest.approx(0.25 / 1.75)
