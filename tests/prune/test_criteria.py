"""What each criterion computes by default (the reference's), on models with a known answer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from protoprune.config import FilterPruningConfig
from protoprune.models import build_classifier
from protoprune.prune.importance import CRITERIA, LRPImportance, build_importance
from protoprune.prune.relevance import (
    canonizers_for,
    classifier_head,
    filter_output_modules,
    lrp_batch,
    prunable_modules,
    yeom2021_composite,
)
from protoprune.prune.structural import FilterPruner

from .conftest import train_briefly


def _bias_free_resnet() -> nn.Module:
    """Small-image ResNet18 whose canonized (BN-merged) convs and head have no bias."""
    torch.manual_seed(0)
    model = build_classifier("resnet18", 7, small_input=True).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.zero_()
                m.bias.zero_()
        model.fc.bias.zero_()
    return model


def test_lrp_conserves_relevance_along_the_residual_stream():
    model = _bias_free_resnet()
    modules = filter_output_modules(model, prunable_modules(model, [classifier_head(model)]))
    x, y = torch.randn(3, 3, 16, 16), torch.tensor([0, 3, 6])
    comp = yeom2021_composite(-3.0, 3.0, canonizers_for(model))
    r = lrp_batch(model, x, y, modules, comp, output="onehot")
    total = torch.ones(3)  # one-hot: every image explains a relevance of 1
    # the stem's output carries everything; a downsampling block splits it between its branch
    # (conv2) and its shortcut conv, which together carry everything again
    assert torch.allclose(r.signed["conv1"].sum(1), total, atol=1e-4)
    for block in ("layer2.0", "layer3.0", "layer4.0"):
        both = r.signed[f"{block}.conv2"].sum(1) + r.signed[f"{block}.downsample.0"].sum(1)
        assert torch.allclose(both, total, atol=1e-4), block
    # and the criterion's scores are these raw sums of |R| (no per-layer division by default)
    imp = LRPImportance(bounds=(-3.0, 3.0))
    raw = imp.prepare(model, [(x, y)])
    assert torch.allclose(raw["conv1"], r.absolute["conv1"].sum(0))
    logit = lrp_batch(model, x, y, modules, comp, output="logit")
    explained = logit.logits.gather(1, y.view(-1, 1)).squeeze(1)
    assert torch.allclose(logit.signed["conv1"].sum(1), explained, rtol=1e-3)


def test_group_score_is_the_sum_of_its_coupled_layers_and_normalize_divides_each_layer():
    model = _bias_free_resnet()
    x, y = torch.randn(2, 3, 16, 16), torch.tensor([1, 2])
    for normalize in ("none", "reference"):
        imp = LRPImportance(bounds=(-3.0, 3.0), normalize=normalize)
        raw = imp.prepare(model, [(x, y)])
        pruner = FilterPruner(model, imp, [0.5], torch.zeros(1, 3, 16, 16))
        for group in pruner._groups():
            members = {d.target.module for d, _ in group if d.handler.__name__.endswith("out_channels")}
            names = [n for n, m in model.named_modules() if m in members and n in raw]
            if "layer1.0.conv2" not in names:
                continue  # the residual stream of layer1: stem, layer1.0.conv2, layer1.1.conv2
            expected = sum(
                raw[n] / (raw[n].sum() if normalize == "reference" else 1) for n in names
            )
            assert set(names) == {"conv1", "layer1.0.conv2", "layer1.1.conv2"}
            assert torch.allclose(imp(group), expected, rtol=1e-5)


def _planted(seed: int = 0):
    """A briefly trained ResNet18 (small-image) in which 8 filters of layer2.0.conv1 are scaled up
    100x but feed nothing: layer2.0.conv2 ignores them. The BatchNorm statistics are re-estimated on
    the data, so that no other channel is dead on it (a channel that is zero on every image would
    explain nothing either, and tie with the planted ones)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(2):  # 16 px: layer4 keeps a 2 x 2 map, so no other channel is dead everywhere
        y = torch.randint(0, 3, (16,), generator=g)
        x = torch.randn(16, 3, 16, 16, generator=g) * 0.3
        x[torch.arange(16), y] += 1.0
        batches.append((x, y))
    model = train_briefly(build_classifier("resnet18", 3, small_input=True), batches, steps=3)
    idx = torch.arange(0, 128, 16)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # a cumulative average over the batches below
        model.train()
        for x, _ in batches:
            model(x)
        model.eval()
        model.layer2[0].conv1.weight[idx] *= 100
        model.layer2[0].conv2.weight[:, idx] = 0
    return model, batches, set(idx.tolist())


@pytest.mark.parametrize("method", ["lrp", "grad", "taylor", "weight"])
def test_filters_that_feed_nothing_go_first_for_data_criteria_not_for_weight(method):
    model, batches, planted = _planted()
    imp = CRITERIA.get(method)()
    imp.prepare(model, batches)
    total = sum(m.weight.shape[0] for m in prunable_modules(model, [classifier_head(model)]).values())
    scores = imp.scores[model.layer2[0].conv1]
    if method != "weight":
        assert torch.all(scores[sorted(planted)] == 0)  # they explain nothing: exactly zero
    pruner = FilterPruner(model, imp, [len(planted) / total], torch.zeros(1, 3, 16, 16), round_to=1)
    plan = pruner.plan(len(planted) / total)
    cut = {(root, i) for (root, _fn), idxs in plan.items() for i in idxs}
    target = {(model.layer2[0].conv1, i) for i in planted}
    if method == "weight":  # BN-fused norms are 100x larger: these filters are the last to go
        assert not cut & target
    else:
        assert cut == target


def test_random_is_reproducible_for_a_seed_and_differs_across_seeds():
    model = build_classifier("resnet18", 7, small_input=True).eval()
    a = CRITERIA.get("random")(seed=1).prepare(model, [])
    b = CRITERIA.get("random")(seed=1).prepare(model, [])
    c = CRITERIA.get("random")(seed=2).prepare(model, [])
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not any(torch.equal(a[n], c[n]) for n in a)
    imp = CRITERIA.get("random")(seed=1)
    first, second = imp.prepare(model, []), imp.prepare(model, [])
    assert not torch.equal(first["conv1"], second["conv1"])  # a new draw each pruning step
    via_config = build_importance(FilterPruningConfig(method="random"), seed=1).prepare(model, [])
    assert all(torch.equal(a[n], via_config[n]) for n in a)


def test_ratios_count_filters_by_default_and_group_channels_on_request():
    model = build_classifier("resnet18", 7, small_input=True).eval()
    example = torch.zeros(1, 3, 8, 8)
    filters = sum(m.weight.shape[0] for m in prunable_modules(model, [model.fc]).values())
    assert filters == 4800 - 0  # every conv's output channels (the head excluded)
    for unit in ("filters", "channels"):
        m = build_classifier("resnet18", 7, small_input=True).eval()
        imp = CRITERIA.get("random")(seed=0)
        imp.prepare(m, [])
        pruner = FilterPruner(m, imp, [0.3], example, round_to=1, ratio_unit=unit)
        assert pruner.initial_filters == filters and pruner.initial_channels == 2880
        pruner.step()
        filters_now = sum(x.weight.shape[0] for x in prunable_modules(m, [m.fc]).values())
        assert pruner.pruned_filter_fraction() == pytest.approx(1 - filters_now / filters)
        reached = pruner.pruned_filter_fraction() if unit == "filters" else pruner.pruned_channel_fraction()
        assert reached == pytest.approx(0.3, abs=0.003), unit
        assert pruner.pruned_fraction() == reached
