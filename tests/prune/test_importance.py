"""The four criteria: shapes, what they rank, and that they differ from each other."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from protoprune.errors import ProtopruneError
from protoprune.models import build_classifier
from protoprune.prune.importance import CRITERIA, WeightImportance
from protoprune.prune.structural import FilterPruner

from .conftest import TinyNet, train_briefly


@pytest.mark.parametrize("method", ["lrp", "weight", "grad", "taylor"])
def test_one_score_per_prunable_channel(method):
    torch.manual_seed(0)
    model = build_classifier("resnet18", 7, small_input=True).eval()
    ref = [(torch.randn(4, 3, 12, 12), torch.tensor([0, 1, 2, 3]))]
    imp = CRITERIA.get(method)()
    raw = imp.prepare(model, ref)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert set(convs) <= set(raw)
    assert "fc" not in raw  # classes are never pruned
    for name, m in convs.items():
        assert raw[name].shape == (m.out_channels,)
        assert torch.isfinite(raw[name]).all() and (raw[name] >= 0).all()
    # group scores: one per channel of each dependency group
    pruner = FilterPruner(model, imp, [0.5], torch.zeros(1, 3, 12, 12))
    for group in pruner._groups():
        root = group[0].dep.target.module
        assert imp(group).shape == (root.weight.shape[0],)


def test_weight_picks_the_smallest_norm_filters():
    model = TinyNet().eval()
    with torch.no_grad():
        conv = model.features[3]
        conv.weight.normal_()
        for i, scale in enumerate([5, 0.01, 4, 3, 0.02, 6, 2, 7, 8, 0.03, 9, 10]):
            conv.weight[i] *= scale / conv.weight[i].abs().sum()
    imp = WeightImportance(norm=1)
    imp.prepare(model, [])
    pruner = FilterPruner(model, imp, [0.25], torch.zeros(1, 3, 8, 8), scope="layer")
    plan = pruner.plan(0.25)
    cut = {root: sorted(i) for (root, _fn), i in plan.items()}
    assert cut[conv] == [1, 4, 9]


def _flat(scores: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([scores[k] / scores[k].sum() for k in sorted(scores)])


def test_data_criteria_differ_from_weight_on_a_trained_model(tiny_data):
    model = train_briefly(TinyNet(), tiny_data)
    scores = {m: _flat(CRITERIA.get(m)().prepare(model, tiny_data)) for m in CRITERIA}
    for m in ("lrp", "grad", "taylor"):
        assert not torch.allclose(scores[m], scores["weight"], rtol=0.05), m
    assert not torch.allclose(scores["grad"], scores["taylor"], rtol=0.05)
    # rankings differ too, not just the scale
    order = {m: torch.argsort(s) for m, s in scores.items()}
    assert not torch.equal(order["lrp"], order["weight"])


def test_stale_scores_are_refused(tiny_data):
    model = TinyNet().eval()
    imp = CRITERIA.get("lrp")()
    imp.prepare(model, tiny_data)
    pruner = FilterPruner(model, imp, [0.3, 0.6], torch.zeros(1, 3, 8, 8))
    pruner.step()
    with pytest.raises(ProtopruneError, match="stale"):
        pruner.step()  # scores were not recomputed on the pruned model
    imp.prepare(model, tiny_data)
    pruner.step()
    assert pruner.pruned_fraction() == pytest.approx(0.6, abs=0.05)
