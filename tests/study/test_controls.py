"""Each explanation metric beside its control: intervals against a hand computation, the verdict's
direction, constant controls, and metrics a row does not have."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from protoprune.study.controls import (
    CONTROLS,
    controls_markdown,
    explanation_controls,
    write_controls,
)


def _rows(**columns: list[float]) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    base = {"arch": ["resnet18"] * n, "arm": ["protopnet"] * n, "method": [np.nan] * n,
            "seed": list(range(n)), "status": ["ok"] * n}  # fmt: skip
    return pd.DataFrame({**base, **columns})


def _t95(values: list[float]) -> tuple[float, float, float]:
    v = np.asarray(values)
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return v.mean(), v.mean() - half, v.mean() + half


def test_interval_and_paired_difference_match_a_hand_computation():
    value, chance = [0.70, 0.62, 0.66], [0.27, 0.25, 0.30]
    table = explanation_controls(_rows(expl_mean_test_on_lesion_prp=value, expl_chance_test_on_lesion=chance))
    row = table.set_index("column").loc["expl_mean_test_on_lesion_prp"]
    mean, low, high = _t95(value)
    assert (row["mean"], row["ci_low"], row["ci_high"]) == pytest.approx((mean, low, high))
    d_mean, d_low, d_high = _t95([v - c for v, c in zip(value, chance)])
    assert (row["minus_control"], row["minus_control_low"], row["minus_control_high"]) == pytest.approx(
        (d_mean, d_low, d_high))  # fmt: skip
    assert row["control"] == pytest.approx(np.mean(chance))
    assert row["verdict"] == "better than control" and row["n_seeds"] == 3


def test_direction_depends_on_which_way_is_better():
    # deletion: lower is better; these PRP orders delete more slowly than random -> worse
    table = explanation_controls(_rows(expl_mean_blur_deletion_auc_prp=[0.80, 0.82, 0.81],
                                       expl_mean_blur_deletion_auc_random=[0.70, 0.71, 0.69],
                                       expl_mean_blur_insertion_auc_prp=[0.80, 0.82, 0.81],
                                       expl_mean_blur_insertion_auc_random=[0.70, 0.71, 0.69]))  # fmt: skip
    verdicts = table.set_index("column")["verdict"]
    assert verdicts["expl_mean_blur_deletion_auc_prp"] == "worse than control"
    assert verdicts["expl_mean_blur_insertion_auc_prp"] == "better than control"


def test_sanity_rows_compare_with_the_constant_limit_and_overlap_is_undecided():
    table = explanation_controls(_rows(expl_sanity_cascade_prp=[0.10, 0.20, 0.15],
                                       expl_sanity_cascade_upsample=[0.2, 0.9, 0.6]))  # fmt: skip
    rows = table.set_index("column")
    assert rows.loc["expl_sanity_cascade_prp", "control"] == pytest.approx(0.5)
    assert rows.loc["expl_sanity_cascade_prp", "control_is"] == "constant"
    assert rows.loc["expl_sanity_cascade_prp", "verdict"] == "better than control"
    assert rows.loc["expl_sanity_cascade_upsample", "verdict"] == "not distinguishable"


def test_missing_metrics_and_one_seed():
    one = explanation_controls(_rows(expl_background_share=[0.04], expl_background_base_rate=[0.51]))
    assert list(one["column"]) == ["expl_background_share"]
    assert one["verdict"].iloc[0] == "too few seeds" and math.isnan(one["ci_low"].iloc[0])
    # a control column absent from the rows: the metric is shown, its difference is not
    no_ctrl = explanation_controls(_rows(expl_mean_on_lesion_prp=[0.7, 0.6, 0.65]))
    assert math.isnan(no_ctrl["control"].iloc[0]) and no_ctrl["verdict"].iloc[0] == "too few seeds"
    assert explanation_controls(_rows(test_balanced_accuracy=[0.6, 0.61])).empty
    # a seed without the control (an older run) leaves the row: metric and control on the same seeds
    mixed = explanation_controls(_rows(expl_mean_on_lesion_prp=[0.9, 0.7, 0.6],
                                       expl_chance_on_lesion=[np.nan, 0.3, 0.2])).iloc[0]  # fmt: skip
    assert mixed["n_seeds"] == 2 and mixed["mean"] == pytest.approx(0.65)
    assert mixed["minus_control"] == pytest.approx(0.4)


def test_every_control_names_a_column_the_explanation_summary_writes():
    from protoprune.explain import localisation
    from protoprune.explain.metrics import DELETION_VARIANTS, ORDERS

    written = {f"expl_mean_{v}_{k}" for v in DELETION_VARIANTS for k in ORDERS}
    for prefix in ("", "test_"):
        for m in localisation.MEASURES:
            written |= {f"expl_mean_{prefix}{m}_prp", f"expl_mean_{prefix}{m}_upsample", f"expl_chance_{prefix}{m}"}
    written |= {"expl_mean_source_box_on_lesion", "expl_background_share", "expl_background_base_rate",
                *(f"expl_sanity_{t}_{k}" for t in ("cascade", "prototypes") for k in ("prp", "upsample"))}  # fmt: skip
    for _, metric, control, _ in CONTROLS:
        assert metric in written
        assert isinstance(control, float) or control in written


def test_written_table_and_markdown(tmp_path):
    per_seed = _rows(expl_mean_on_lesion_prp=[0.7, 0.6, 0.65], expl_chance_on_lesion=[0.27, 0.26, 0.28])
    per_seed = pd.concat([per_seed, _rows(test_balanced_accuracy=[0.6, 0.6, 0.6]).assign(arm="baseline")])
    table = write_controls(tmp_path, per_seed)
    assert list(table["arm"]) == ["protopnet"]
    assert pd.read_csv(tmp_path / "explanation_controls.csv")["verdict"].tolist() == ["better than control"]
    text = (tmp_path / "explanation_controls.md").read_text()
    assert text.startswith("# Explanation metrics beside their controls")
    assert "### resnet18: ProtoPNet\n" in text and "| on-lesion share, PRP, source images | 3 |" in text
    assert controls_markdown(table[:0]) == []
    write_controls(tmp_path / "none", per_seed[per_seed["arm"] == "baseline"])
    assert not (tmp_path / "none").exists()
