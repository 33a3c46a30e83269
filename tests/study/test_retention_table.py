"""The trunk-pruning table at equal MACs: interpolation, means and paired intervals by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from protoprune.study.retention import at_equal_macs, reference_minus_each, trunk_pruning_curves

T_975_2 = 4.302652729911275  # Student t, 97.5 % quantile, 2 degrees of freedom (tables)


def _unit(seed: int, method: str, macs: list[float], acc: list[float], jac: list[float],
          lesion: list[float], lesion_unpruned: float) -> dict:  # fmt: skip
    rows = []
    for step, (m, a, j, le) in enumerate(zip(macs, acc, jac, lesion)):
        rows.append({"arch": "resnet18", "seed": seed, "arm": "protopnet_filter", "method": method,
                     "step": step, "macs": m, "test_balanced_accuracy": a,
                     # prune_filters leaves the unpruned step's retention and localisation empty
                     "retention_topk_jaccard": None if step == 0 else j,
                     "localisation_on_lesion": None if step == 0 else le,
                     "localisation_on_lesion_unpruned": None if step == 0 else lesion_unpruned})  # fmt: skip
    return {"curves": rows}


def _results() -> list[dict]:
    # lrp keeps MACs 100 -> 60 -> 20; random 100 -> 70 -> 40; three seeds each
    out = []
    for s, shift in enumerate((0.0, 0.02, 0.07)):
        out.append(_unit(s, "lrp", [100, 60, 20], [0.7, 0.6 - shift, 0.4], [1, 0.8 - shift, 0.5],
                         [0.5, 0.6, 0.4], 0.5 + shift))  # fmt: skip
        out.append(_unit(s, "random", [100, 70, 40], [0.7, 0.5, 0.3 - shift], [1, 0.6, 0.2],
                         [0.5, 0.5, 0.3], 0.5 + shift))  # fmt: skip
    out.append({"curves": [{"arm": "filter", "method": "lrp", "step": 0, "macs": 1}]})  # another arm
    return out


def test_the_unpruned_step_is_filled_with_retention_one_and_its_own_localisation() -> None:
    curves = trunk_pruning_curves(_results())
    assert set(curves["arm"]) == {"protopnet_filter"}
    step0 = curves[curves["step"] == 0]
    assert (step0["retention_topk_jaccard"] == 1.0).all()
    assert np.allclose(step0.sort_values(["seed", "method"])["localisation_on_lesion"],
                       [0.5, 0.5, 0.52, 0.52, 0.57, 0.57])  # fmt: skip


def test_means_at_equal_macs_and_the_paired_difference_by_hand() -> None:
    curves = trunk_pruning_curves(_results())
    table = at_equal_macs(curves, fractions=(0.5,)).set_index(["method", "measure"])
    # 50 MACs: lrp a quarter of the way from 60 (0.6 - shift) to 20 (0.4); random 2/3 of the way
    # from 70 (0.5) to 40 (0.3 - shift)
    shifts = np.array([0.0, 0.02, 0.07])
    lrp = (0.6 - shifts) - (0.2 - shifts) / 4
    rnd = 0.5 - (0.2 + shifts) * 2 / 3
    row = table.loc[("lrp", "test_balanced_accuracy")]
    assert row["n"] == 3 and row["mean"] == pytest.approx(lrp.mean())
    half = T_975_2 * lrp.std(ddof=1) / math.sqrt(3)
    assert row["ci_low"] == pytest.approx(lrp.mean() - half)
    diff = reference_minus_each(curves, fractions=(0.5,)).set_index("measure")
    d = lrp - rnd
    got = diff.loc["test_balanced_accuracy"]
    assert got["difference"] == "lrp - random"
    assert got["mean"] == pytest.approx(d.mean())
    assert got["ci_high"] == pytest.approx(d.mean() + T_975_2 * d.std(ddof=1) / math.sqrt(3))
    assert got["direction"] == "lrp higher"  # 0.18, 0.18, 0.18: a narrow interval above zero


def test_nothing_is_interpolated_from_the_unpruned_model() -> None:
    """80 MACs lies between the unpruned model (retention 1) and each criterion's first step: a
    line from there is no measurement (a repair alone moves prototypes), so it is left out."""
    curves = trunk_pruning_curves(_results())
    assert at_equal_macs(curves, fractions=(0.8,)).empty
    assert (reference_minus_each(curves, fractions=(0.8,))["n"] == 0).all()


def test_a_fraction_a_criterion_never_reached_is_left_out() -> None:
    curves = trunk_pruning_curves(_results())
    table = at_equal_macs(curves, fractions=(0.3,))  # random stops at 40 % of the MACs
    assert set(table["method"]) == {"lrp"}
    diff = reference_minus_each(curves, fractions=(0.3,))
    assert (diff["n"] == 0).all() and (diff["direction"] == "too few seeds").all()


def test_retention_differences_at_equal_macs_by_hand() -> None:
    curves = trunk_pruning_curves(_results())
    diff = reference_minus_each(curves, fractions=(0.6,)).set_index("measure")
    # 60 MACs: lrp at its step 1 (0.8 - shift); random 2/3 of the way from 70 (0.6) to 40 (0.2)
    lrp = 0.8 - np.array([0.0, 0.02, 0.07])
    rnd = 0.6 - (0.6 - 0.2) / 3
    assert diff.loc["retention_topk_jaccard", "mean"] == pytest.approx((lrp - rnd).mean())
    # localisation: lrp at its step 1 (0.6), random between 0.5 and 0.3 at 1/3 (0.4333)
    assert diff.loc["localisation_on_lesion", "mean"] == pytest.approx(0.6 - (0.5 - 0.2 / 3))


def test_the_study_report_shows_the_paired_differences() -> None:
    from protoprune.study.report import _retention_table

    html = _retention_table(_results())
    shifts = np.array([0.0, 0.02, 0.07])  # at 60 % MACs: lrp's step 1, random 1/3 from 70 to 40
    d = (0.6 - shifts) - (0.5 - (0.2 + shifts) / 3)
    assert "lrp - random" in html and f"{d.mean():+.3f} [" in html
    assert "nothing to compare" in _retention_table([_results()[0]])  # lrp alone


def test_each_step_minus_the_repair_control_by_hand() -> None:
    import pandas as pd

    from protoprune.study.retention import minus_repair_control

    curves = trunk_pruning_curves(_results())
    control = pd.DataFrame([{"arch": "resnet18", "seed": s, "step": k, "test_balanced_accuracy": 0.7,
                             "retention_topk_jaccard": [None, 0.9 - 0.01 * s, 0.85][k]}
                            for s in (0, 1, 2) for k in (0, 1, 2)])  # fmt: skip
    table = minus_repair_control(curves, control).set_index(["method", "step", "measure"])
    d = (0.8 - np.array([0.0, 0.02, 0.07])) - (0.9 - 0.01 * np.arange(3))  # lrp step 1 − control
    row = table.loc[("lrp", 1, "retention_topk_jaccard")]
    assert row["n"] == 3 and row["mean"] == pytest.approx(d.mean())
    assert row["ci_low"] == pytest.approx(d.mean() - T_975_2 * d.std(ddof=1) / math.sqrt(3))
    assert row["direction"] == "lrp lower"
    assert table.loc[("random", 2, "retention_topk_jaccard"), "mean"] == pytest.approx(0.2 - 0.85)
    assert (0, "retention_topk_jaccard") not in {(k[1], k[2]) for k in table.index}  # step 0: none


def test_one_criterion_alone_gives_its_means_and_no_difference() -> None:
    curves = trunk_pruning_curves([r for r in _results() if r["curves"][0].get("method") == "lrp"])
    assert set(at_equal_macs(curves, fractions=(0.5,))["method"]) == {"lrp"}
    diff = reference_minus_each(curves, fractions=(0.5,))
    assert diff.empty and "macs_fraction" in diff.columns
