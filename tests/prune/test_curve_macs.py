"""The pruning curve at equal compute: interpolation in MACs and paired intervals, by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from protoprune.prune.curve_stats import curve_at_macs, equal_macs_differences
from protoprune.report.curves import equal_macs_table

# run -> method -> (MACs at ratios 0, 0.1, 0.3; balanced accuracy there)
CUTS = {
    "s0": {"lrp": ([100, 95, 85], [0.6, 0.5, 0.3]), "weight": ([100, 80, 50], [0.6, 0.4, 0.2])},
    "s1": {"lrp": ([100, 92, 80], [0.7, 0.6, 0.4]), "weight": ([100, 85, 60], [0.7, 0.5, 0.2])},
    "s2": {"lrp": ([100, 90, 82], [0.65, 0.5, 0.35]), "weight": ([100, 70, 55], [0.65, 0.3, 0.2])},
}


def _curve() -> pd.DataFrame:
    return pd.DataFrame([
        {"run": r, "method": m, "normalize": "none", "ref_seed": 0, "ratio": ratio, "macs": mac,
         "test_balanced_accuracy": acc}
        for r, ms in CUTS.items() for m, (macs, accs) in ms.items()
        for ratio, mac, acc in zip((0.0, 0.1, 0.3), macs, accs)
    ])  # fmt: skip


def test_each_unit_is_interpolated_in_macs_and_blank_below_its_fewest():
    at = curve_at_macs(_curve(), fractions=(0.9, 0.8)).set_index(["run", "method", "macs_fraction"])["value"]
    # s0 lrp at 90 MACs: halfway between 95 (0.5) and 85 (0.3); at 80 MACs: below its fewest (85)
    assert at[("s0", "lrp", 0.9)] == pytest.approx(0.4)
    assert np.isnan(at[("s0", "lrp", 0.8)])
    # s0 weight at 90 MACs: between 100 (0.6) and 80 (0.4), half way
    assert at[("s0", "weight", 0.9)] == pytest.approx(0.5)
    assert at[("s2", "weight", 0.8)] == pytest.approx(0.65 - 0.35 * 20 / 30)


def test_equal_macs_difference_is_a_paired_t_interval():
    df = _curve()
    d = equal_macs_differences(df).set_index("at")
    a = [0.4, 0.6 - 0.2 * 2 / 12, 0.5]  # lrp at 90 MACs, by hand (s0, s1, s2)
    b = [0.5, 0.7 - 0.2 * 10 / 15, 0.65 - 0.35 * 10 / 30]  # weight at 90 MACs
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    row = d.loc["90% MACs"]
    assert row["n"] == 3 and row["mean"] == pytest.approx(np.mean(np.subtract(a, b)))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert d.loc["80% MACs", "n"] == 1  # lrp of s0 (85) and s2 (82) never reaches 80 MACs: dropped
    table = equal_macs_table(df)
    assert list(table.columns[2:4]) == ["90% MACs", "80% MACs"]


def test_pooled_runs_pair_by_run_with_draws_averaged_one_run_by_draw():
    from protoprune.prune.curve_stats import paired_difference

    rows = []
    for run, draws in {"s0": [0.50, 0.40], "s1": [0.60, 0.56], "s2": [0.45, 0.47]}.items():
        for seed, lrp in enumerate(draws):
            for m, v in (("lrp", lrp), ("weight", 0.40)):  # weight: data-free, one cut every draw
                rows.append({"run": run, "method": m, "normalize": "none", "ref_seed": seed,
                             "ratio": 0.1, "macs": 90, "test_balanced_accuracy": v})  # fmt: skip
    df = pd.DataFrame(rows)
    d = paired_difference(df, ("lrp", "none"), ("weight", "none"), ratio=0.1)
    per_run = [0.45 - 0.40, 0.58 - 0.40, 0.46 - 0.40]  # draws averaged within each run
    ci = stats.ttest_1samp(per_run, 0).confidence_interval(0.95)
    assert d["n"] == 3 and d["mean"] == pytest.approx(np.mean(per_run))
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((ci.low, ci.high))
    one = paired_difference(df[df.run == "s0"], ("lrp", "none"), ("weight", "none"), ratio=0.1)
    assert one["n"] == 2 and one["mean"] == pytest.approx(0.05)  # one run: its draws are the units
