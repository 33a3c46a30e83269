"""scripts/explanation_quality.py: its table and paired differences against hand values."""

from __future__ import annotations

import pandas as pd
from scipy import stats

from .loading import load_script


def _module():
    return load_script("explanation_quality")


def test_table_means_and_paired_differences_by_seed() -> None:
    mod = _module()
    # rows out of seed order in the second recipe: pairing must follow the seed, not the row
    df = pd.DataFrame({
        "recipe": ["a", "a", "a", "b", "b", "b"],
        "seed": [0, 1, 2, 2, 0, 1],
        "test_balanced_accuracy": [0.60, 0.62, 0.64, 0.61, 0.50, 0.56],
        "expl_background_share": [0.5, 0.6, 0.4, 0.1, 0.0, 0.2],
    })  # fmt: skip
    text = mod.tables(df)
    assert "| a | 3 | 0.620 ± 0.020 | 0.500 ± 0.100 |" in text
    d = [0.50 - 0.60, 0.56 - 0.62, 0.61 - 0.64]  # b - a for seeds 0, 1, 2
    mean = sum(d) / 3
    low, high = stats.t.interval(0.95, 2, loc=mean, scale=stats.sem(d))
    assert f"| bal. acc. | {mean:+.3f} [{low:+.3f}, {high:+.3f}] |" in text
    assert "| background share | -0.400 [" in text
