import numpy as np
import pytest

from protoprune.metrics import compute_metrics, mean_std, metrics_markdown

NAMES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def one_hot(pred, k=7):
    p = np.full((len(pred), k), 0.01)
    p[np.arange(len(pred)), pred] = 0.94
    return p


def test_known_values():
    y = np.array([4, 4, 4, 4, 5, 5, 5, 5, 5, 5])
    pred = np.array([4, 4, 5, 5, 5, 5, 5, 5, 5, 4])
    m = compute_metrics(y, one_hot(pred), NAMES)
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["melanoma_sensitivity"] == pytest.approx(0.5)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 5 / 6) / 2)
    assert m["confusion_matrix"][4][4] == 2 and m["confusion_matrix"][5][4] == 1
    assert m["per_class"]["mel"]["precision"] == pytest.approx(2 / 3)


def test_auroc_perfect_and_random():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 500)
    perfect = np.eye(7)[y] * 0.9 + 0.1 / 7
    assert compute_metrics(y, perfect, NAMES)["auroc_macro"] == pytest.approx(1.0)
    noise = rng.dirichlet(np.ones(7), 500)
    assert 0.4 < compute_metrics(y, noise, NAMES)["auroc_macro"] < 0.6


def test_markdown_lists_every_class():
    y = np.array([0, 1, 2, 3, 4, 5, 6])
    md = metrics_markdown({"test": compute_metrics(y, one_hot(y), NAMES)})
    for name in NAMES:
        assert f"| {name} |" in md


def test_mean_std_cell_by_hand():
    # 0.1, 0.2, 0.6: mean 0.3, sample variance (0.04 + 0.01 + 0.09) / 2 = 0.07, std 0.2646
    assert mean_std([0.1, 0.2, float("nan"), 0.6]) == "0.300 ± 0.265"  # NaN left out
    assert mean_std([5.0], ".1f") == "5.0 ± 0.0"
    assert mean_std([]) == "nan ± 0.000"
