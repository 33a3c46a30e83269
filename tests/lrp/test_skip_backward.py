"""Skipping the ordinary backward of rule-explained layers leaves every relevance unchanged."""

from __future__ import annotations

import pytest
import torch
from zennit.composites import COMPOSITES

from protoprune.lrp import skip_backward
from protoprune.lrp.composites import build_composite, canonizers_for
from protoprune.models import build_classifier
from protoprune.models.backbones import feature_extractor
from protoprune.protopnet.model import ProtoPNet
from protoprune.prune.relevance import filter_output_modules, lrp_batch, prunable_modules


def _both_ways(model, x, y, modules, composite):
    return [lrp_batch(model, x, y, modules, composite, skip_replaced_backward=s) for s in (False, True)]


def _assert_same(a, b) -> None:
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)
    torch.testing.assert_close(a.input_relevance, b.input_relevance, rtol=0, atol=0)
    for name in a.absolute:
        torch.testing.assert_close(a.signed[name], b.signed[name], rtol=0, atol=0)
        torch.testing.assert_close(a.absolute[name], b.absolute[name], rtol=0, atol=0)


@pytest.mark.parametrize("arch", ["resnet18", "vgg11"])
@pytest.mark.parametrize("composite", ["yeom2021", "epsilon_plus_flat"])
def test_classifier_relevance_is_bit_identical_and_every_layer_skipped(arch, composite, monkeypatch) -> None:
    torch.manual_seed(0)
    model = build_classifier(arch, 5, small_input=True).eval()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 4])
    modules = filter_output_modules(model, prunable_modules(model))
    comp = build_composite(composite, model)
    calls = []
    original = skip_backward._ZeroGradientTie.backward
    monkeypatch.setattr(skip_backward._ZeroGradientTie, "backward",
                        staticmethod(lambda ctx, g: (calls.append(1), original(ctx, g))[1]))
    plain, skipped = _both_ways(model, x, y, modules, comp)
    _assert_same(plain, skipped)
    convs_and_linears = sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in model.modules())
    assert len(calls) == convs_and_linears  # each one's ordinary input gradient was skipped
    with comp.context(model):
        assert len(skip_backward.rule_replaced_layers(model)) == convs_and_linears
    assert skip_backward.rule_replaced_layers(model) == []  # no rule hooks outside the context


def test_protopnet_relevance_through_the_prototype_rule_is_unchanged() -> None:
    torch.manual_seed(1)
    trunk = feature_extractor(build_classifier("resnet18", 3, small_input=True))
    model = ProtoPNet(trunk, 3, prototypes_per_class=2, prototype_dim=16).eval()
    x, y = torch.randn(3, 3, 16, 16), torch.tensor([0, 1, 2])
    modules = {"latent": model.add_on_layers, "last": model.last_layer}
    plain, skipped = _both_ways(model, x, y, modules, build_composite("yeom2021", model))
    _assert_same(plain, skipped)


def test_a_layer_without_a_rule_keeps_its_ordinary_backward() -> None:
    """A composite that leaves linear layers unhooked: their gradient still flows as autograd's."""
    torch.manual_seed(2)
    model = build_classifier("resnet18", 3, small_input=True).eval()
    comp = COMPOSITES["epsilon_plus_flat"](canonizers=canonizers_for(model))
    inner = comp.module_map
    comp.module_map = lambda ctx, name, m: None if isinstance(m, torch.nn.Linear) else inner(ctx, name, m)
    x, y = torch.randn(2, 3, 16, 16), torch.tensor([0, 2])
    plain, skipped = _both_ways(model, x, y, {"fc": model.fc}, comp)
    _assert_same(plain, skipped)
    with comp.context(model):
        assert model.fc not in skip_backward.rule_replaced_layers(model)
