"""`train.convergence.plateau` against hand calculations."""

from __future__ import annotations

import math

import pytest

from protoprune.train.convergence import plateau


def test_a_curve_that_stopped_rising_is_flat():
    p = plateau([0.40, 0.55, 0.60, 0.58, 0.60])
    # the last two (0.58, 0.60) add max(0.58, 0.60) - max(0.40, 0.55, 0.60) = 0
    assert p == {"evaluations": 5, "best_evaluation": 3, "gain_last": pytest.approx(0.0), "flat": True}


def test_a_curve_still_rising_is_not_flat():
    p = plateau([0.40, 0.50, 0.52, 0.56])
    assert p["best_evaluation"] == 4 and p["gain_last"] == pytest.approx(0.56 - 0.50)
    assert not p["flat"]
    assert plateau([0.40, 0.50, 0.505, 0.509])["flat"]  # +0.009: within one point
    assert not plateau([0.40, 0.50, 0.505, 0.509], tolerance=0.005)["flat"]


def test_short_or_empty_curves_cannot_be_called_flat():
    for values in ([0.5, 0.6], [], [None, None, None]):
        p = plateau(values)
        assert math.isnan(p["gain_last"]) and not p["flat"]
    p = plateau([None, 0.5, 0.4, 0.45])  # a missing score is skipped, not counted as a best
    assert p["best_evaluation"] == 2 and p["gain_last"] == pytest.approx(-0.05) and p["flat"]
    assert plateau([0.3, 0.5, 0.6, 0.7], last=1)["gain_last"] == pytest.approx(0.1)
