"""The departures of issue 29 against independent computations: the random control's removal
share per layer group (binomial bounds), the reference's step count (its loop transcribed), conv-only
counting, and the curve area by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from protoprune.errors import ConfigError
from protoprune.models import build_classifier
from protoprune.prune.curve_stats import curve_area
from protoprune.prune.filters import schedule
from protoprune.prune.importance import RandomImportance, WeightImportance
from protoprune.prune.relevance import never_pruned, prunable_modules
from protoprune.prune.structural import FilterPruner, count_filters


def _reference_loop(n_filters: int, total_pr: float, pr_step: float) -> list[int]:
    """prune_resnet.py: prune(), transcribed: filters left after each of its iterations."""
    per_iter = int(n_filters * pr_step)
    iterations = int(float(n_filters) / per_iter)
    iterations = int(iterations * total_pr)
    left, out = n_filters, []
    for _ in range(iterations):
        left -= per_iter  # assert total_num_filters() == N - (kk + 1) * per_iter
        out.append(left)
    return out


@pytest.mark.parametrize("n, total, step", [(4800, 0.6, 0.15), (4800, 0.9001, 0.05), (2752, 0.5, 0.1),
                                            (1000, 0.3, 0.07)])  # fmt: skip
def test_reference_schedule_removes_what_the_reference_loop_removes(n, total, step):
    ratios = schedule(total, step, "reference", n)
    assert [round(n * (1 - r)) for r in ratios] == _reference_loop(n, total, step)


def test_reference_schedule_hand_values():
    assert schedule(0.6, 0.15, "reference", 4800) == [0.15, 0.3, 0.45]  # 3 x 720 filters
    assert len(schedule(0.9001, 0.05, "reference", 4800)) == 18
    assert schedule(0.9001, 0.05, "cumulative")[-2:] == [0.85, 0.9]  # no 19th step of 0.0001
    assert schedule(0.6, 0.15, "cumulative") == [0.15, 0.3, 0.45, 0.6]
    assert schedule(0.5, 0.2) == [0.2, 0.4, 0.5]
    assert schedule(0.15, 0.15) == [0.15]
    with pytest.raises(ConfigError, match="runs no step"):
        schedule(0.15, 0.15, "reference", 4800)  # int(int(4800 / 720) * 0.15) = 0


def _block_first_convs(model: nn.Module) -> set[str]:
    return {n for n, _ in model.named_modules() if n.endswith(".conv1") and n.startswith("layer")}


def _removed_by_layer(model: nn.Module, imp, ratio: float) -> dict[str, int]:
    before = {n: m.weight.shape[0] for n, m in prunable_modules(model, never_pruned(model)).items()}
    imp.prepare(model, [])
    FilterPruner(model, imp, [ratio], torch.zeros(1, 3, 16, 16)).step()
    after = {n: m.weight.shape[0] for n, m in prunable_modules(model, never_pruned(model)).items()}
    return {n: before[n] - after[n] for n in before}


def test_random_control_removes_every_filter_with_equal_probability():
    """ResNet18 at 30 %: the blocks' first convs hold 40 % of the filters, so an unbiased control
    removes about 40 % of its cut there (the per-layer draw summed over groups removed 90 %)."""
    torch.manual_seed(0)
    model = build_classifier("resnet18", 7, small_input=True).eval()
    first = _block_first_convs(model)
    sizes = {n: m.weight.shape[0] for n, m in prunable_modules(model, never_pruned(model)).items()}
    share = sum(v for n, v in sizes.items() if n in first) / sum(sizes.values())
    assert abs(share - 0.4) < 0.01  # 1920 of 4800
    removed_first, removed_all, per_layer = 0, 0, []
    for seed in range(5):
        m = build_classifier("resnet18", 7, small_input=True).eval()
        cut = _removed_by_layer(m, RandomImportance(seed=seed), 0.3)
        removed_first += sum(v for n, v in cut.items() if n in first)
        removed_all += sum(cut.values())
        per_layer.append(cut)
    # binomial bound on the units of removal: a residual channel removes its 3 coupled filters at
    # once, so count in channels (~ 1440 / 5 ... conservatively 2 x 1440 x 5 / 3 units) and allow 4 sd
    units = removed_all / 3
    sd = math.sqrt(share * (1 - share) / units)
    observed = removed_first / removed_all
    assert abs(observed - share) < 4 * sd, (observed, share, sd)
    # every layer loses about 30 % of its filters, none is spared or emptied
    for name, size in sizes.items():
        frac = np.mean([c[name] for c in per_layer]) / size
        assert 0.1 < frac < 0.5, (name, frac)


def test_random_control_is_seeded_and_new_each_draw():
    a = _removed_by_layer(build_classifier("resnet18", 7, small_input=True).eval(), RandomImportance(seed=3), 0.3)
    b = _removed_by_layer(build_classifier("resnet18", 7, small_input=True).eval(), RandomImportance(seed=3), 0.3)
    c = _removed_by_layer(build_classifier("resnet18", 7, small_input=True).eval(), RandomImportance(seed=4), 0.3)
    assert a == b and a != c


def test_vgg_counts_and_scores_conv_filters_only_by_default():
    torch.manual_seed(0)
    model = build_classifier("vgg11_bn", 7, small_input=True).eval()
    convs = sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
    hidden = sum(m.out_features for m in list(model.modules()) if isinstance(m, nn.Linear))
    hidden -= model.classifier[-1].out_features
    assert hidden > 0
    assert count_filters(model, never_pruned(model)) == convs  # total_num_filters: Conv2d only
    assert count_filters(model, never_pruned(model, prune_linear=True)) == convs + hidden
    scores = WeightImportance().prepare(model, [])
    assert scores and all(isinstance(dict(model.named_modules())[n], nn.Conv2d) for n in scores)
    linear = WeightImportance(ignored_layers=never_pruned(model, prune_linear=True)).prepare(model, [])
    assert set(linear) - set(scores) == {n for n, m in model.named_modules()
                                          if isinstance(m, nn.Linear) and m is not model.classifier[-1]}  # fmt: skip
    # pruning 30 % of the conv filters leaves every hidden unit (their inputs shrink)
    widths = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    imp = WeightImportance()
    imp.prepare(model, [])
    FilterPruner(model, imp, [0.3], torch.zeros(1, 3, 32, 32)).step()
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == widths
    now = sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
    assert abs((convs - now) / convs - 0.3) < 0.01


def test_curve_area_by_hand():
    # sorted: (0.1, 0.8) (0.2, 0.6) (0.3, 0.5) (0.5, 0.1); trapezoids (0.8+0.6)/2*0.1 = 0.07,
    # (0.6+0.5)/2*0.1 = 0.055, (0.5+0.1)/2*0.2 = 0.06: 0.185 over the span 0.4
    r = np.array([0.3, 0.1, 0.2, 0.5])
    v = np.array([0.5, 0.8, 0.6, 0.1])
    assert curve_area(r, v) == pytest.approx(0.4625)
    assert curve_area(np.array([0.2]), np.array([0.7])) == 0.7
