"""The demo's summary says what each number is, and says so where a number could mislead."""

from __future__ import annotations

import pandas as pd

from protoprune.demo import _pruning_note, curve_markdown, summary_markdown


def test_the_curve_table_puts_each_criterion_beside_the_random_control() -> None:
    curve = pd.DataFrame({"method": ["lrp", "weight", "random"] * 2, "ratio": [0.05] * 3 + [0.1] * 3,
                          "test_balanced_accuracy": [0.40, 0.30, 0.35, 0.38, 0.20, 0.33]})  # fmt: skip
    text = curve_markdown(curve)
    assert "no fine-tuning" in text and "random is the control" in text
    assert "| filters removed | lrp | weight | random |" in text
    assert "| 10% | 0.380 | 0.200 | 0.330 |" in text


def test_a_pruned_model_that_lost_most_of_the_baseline_is_called_so() -> None:
    baseline = {"balanced_accuracy": 0.45}
    kept = _pruning_note({"balanced_accuracy": 0.44}, baseline, (458e6, 341e6))
    assert "MACs 341 M of 458 M" in kept and "does not repair" not in kept
    lost = _pruning_note({"balanced_accuracy": 0.23}, baseline, (458e6, 341e6))
    assert "keeps 51% of the baseline's balanced accuracy" in lost and "does not repair" in lost
    text = summary_markdown([{"stage": "s", "note": "n", "accuracy": 0.5, "balanced_accuracy": None,
                              "auroc_macro": 0.8, "melanoma_sensitivity": 0.1}], "CURVE", "REPORT")  # fmt: skip
    assert "| s | n | 0.500 | n/a | 0.800 | 0.100 |" in text and text.index("CURVE") < text.index("REPORT")
    assert "not what protoprune reaches on full data" in text
