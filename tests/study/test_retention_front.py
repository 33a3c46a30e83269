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


def _panels(monkeypatch, curves: pd.DataFrame, tmp_path, control: pd.DataFrame | None = None) -> dict:
    from protoprune.study import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    plot_retention_front(curves, tmp_path / "front.png", control)
    return {ax.get_title(): ax for ax in figures[0].axes}


def test_the_unpruned_step_counts_as_retention_one_and_is_joined_by_a_dashed_line(tmp_path, monkeypatch) -> None:
    curve = _curve(0, [100, 50, 30], [0.7, 0.6, 0.5])
    curve.loc[curve["step"] == 0, "retention_topk_jaccard"] = np.nan  # as prune_filters leaves it
    panel = _panels(monkeypatch, curve, tmp_path)["retention: topk jaccard"]
    solid, markers, dashed = panel.lines[:3]
    assert solid.get_linestyle() == "-" and dashed.get_linestyle() == "--"
    x, y = solid.get_data()
    assert x.max() == 50 / 1e6 and np.allclose(y, 0.5)  # the band stays between the pruned steps
    assert np.allclose(markers.get_data()[0], np.array([100, 50, 30]) / 1e6)
    mx, my = markers.get_data()
    assert my[np.argmax(mx)] == 1.0
    assert np.allclose(dashed.get_data()[0], [100 / 1e6, 50 / 1e6]) and np.allclose(dashed.get_data()[1], [1.0, 0.5])


def test_the_repair_control_is_drawn_at_the_unpruned_macs(tmp_path, monkeypatch) -> None:
    curves = pd.concat([_curve(s, [100, 60], [0.7, 0.6]) for s in (0, 1)])
    control = pd.DataFrame({"seed": [0, 0, 1, 1], "step": [1, 2, 1, 2],
                            "retention_topk_jaccard": [0.4, 0.3, 0.6, 0.2]})  # fmt: skip
    panel = _panels(monkeypatch, curves, tmp_path, control)["retention: topk jaccard"]
    (crosses,) = [ln for ln in panel.lines if ln.get_label() == "repair only, no pruning"]
    x, y = crosses.get_data()
    assert np.allclose(x, 100 / 1e6) and np.allclose(y, [0.5, 0.25])  # k = 1, 2: mean over seeds
