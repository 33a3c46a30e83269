"""The study's front of a pruned ProtoPNet: seeds averaged at equal MACs, checked by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from protoprune.study.plots import at_common_macs, plot_retention_front


def _curve(seed: int, macs: list[float], values: list[float], method: str = "lrp") -> pd.DataFrame:
    return pd.DataFrame({"arch": "resnet18", "arm": "protopnet_filter", "method": method,
                         "seed": seed, "step": range(len(macs)), "macs": macs,
                         "test_balanced_accuracy": values,
                         "retention_topk_jaccard": [1.0] + [0.5] * (len(macs) - 1)})  # fmt: skip


def test_seeds_are_averaged_at_equal_macs_over_the_range_all_reach() -> None:
    # seed 0: 100 -> 0.8, 60 -> 0.6, 20 -> 0.2 MMACs (linear: y = macs / 100 on [20, 100]);
    # seed 1: 100 -> 0.9, 40 -> 0.3 (linear: y = 0.9 - (100 - macs) / 100); common range [40, 100]
    g = pd.concat([_curve(0, [100, 60, 20], [1.0, 0.6, 0.2]), _curve(1, [100, 40], [0.9, 0.3])])
    band = at_common_macs(g, "test_balanced_accuracy", points=4)  # 40, 60, 80, 100
    assert np.allclose(band["macs"], [40, 60, 80, 100])
    seed0 = np.array([0.4, 0.6, 0.8, 1.0])  # between its steps, by hand
    seed1 = np.array([0.3, 0.5, 0.7, 0.9])
    assert np.allclose(band["mean"], (seed0 + seed1) / 2)
    assert np.allclose(band["std"], np.abs(seed0 - seed1) / np.sqrt(2))  # two values: |a - b| / sqrt 2
    assert (band["seeds"] == 2).all()


def test_a_missing_step_value_is_left_out_and_one_seed_has_no_band() -> None:
    g = _curve(0, [100, 50, 10], [1.0, np.nan, 0.2])
    band = at_common_macs(g, "test_balanced_accuracy", points=3)
    assert np.allclose(band["macs"], [10, 55, 100])
    assert np.allclose(band["mean"], [0.2, 0.6, 1.0])  # the NaN step skipped: 10 -> 100 is linear
    assert band["std"].isna().all()


def test_the_front_draws_with_and_without_protopnet_runs(tmp_path) -> None:
    curves = pd.concat([_curve(s, [100, 70, 40], [0.7, 0.6, 0.5 - 0.01 * s], m)
                        for s in (0, 1, 2) for m in ("lrp", "random")])  # fmt: skip
    for name, table in (("front.png", curves), ("empty.png", curves.iloc[:0])):
        path = plot_retention_front(table, tmp_path / name)
        with Image.open(path) as im:
            assert im.size[0] > 1000 and im.size[1] > 600


def test_the_unpruned_step_counts_as_retention_one(tmp_path, monkeypatch) -> None:
    from protoprune.study import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    curve = _curve(0, [100, 50], [0.7, 0.6])
    curve.loc[curve["step"] == 0, "retention_topk_jaccard"] = np.nan  # as prune_filters leaves it
    plot_retention_front(curve, tmp_path / "front.png")
    panel = next(ax for ax in figures[0].axes if ax.get_title() == "retention: topk jaccard")
    x, y = panel.lines[0].get_data()
    assert y[np.argmax(x)] == 1.0 and y[np.argmin(x)] == 0.5
