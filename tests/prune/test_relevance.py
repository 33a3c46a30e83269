"""LRP from zennit: conservation on canonized models (checks that relevance is read correctly)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from zennit.composites import LayerMapComposite, layer_map_base
from zennit.rules import Epsilon
from zennit.types import Convolution

from protoprune.models import build_classifier
from protoprune.prune.relevance import (
    batchnorm_pairs,
    canonizers_for,
    classifier_head,
    filter_output_modules,
    lrp_batch,
    prunable_modules,
)


def _epsilon_composite(model: nn.Module) -> LayerMapComposite:
    rules = layer_map_base() + [(Convolution, Epsilon(1e-9)), (nn.Linear, Epsilon(1e-9))]
    return LayerMapComposite(layer_map=rules, canonizers=canonizers_for(model))


@pytest.mark.parametrize("arch, first", [("resnet18", "conv1"), ("vgg11_bn", "features.0")])
def test_epsilon_lrp_conserves_the_logit(arch, first):
    torch.manual_seed(0)
    model = build_classifier(arch, 7, small_input=True).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-trivial BN scales, merged by the canonizer
                m.weight.uniform_(0.5, 1.5)
                m.running_var.uniform_(0.5, 2.0)
            elif getattr(m, "bias", None) is not None:  # biases absorb relevance: remove them
                m.bias.zero_()
    modules = filter_output_modules(model, prunable_modules(model, [classifier_head(model)]))
    x, y = torch.randn(3, 3, 16, 16), torch.tensor([0, 3, 6])
    reference = model(x)
    r = lrp_batch(model, x, y, modules, _epsilon_composite(model), output="logit")
    logit = r.logits.gather(1, y.view(-1, 1)).squeeze(1)
    assert torch.allclose(r.logits, reference, atol=1e-3)  # merged BN: same function up to rounding
    assert torch.allclose(r.input_relevance.sum((1, 2, 3)), logit, rtol=1e-3, atol=1e-6)
    # the first conv's output carries all relevance: its channels sum to the logit too
    assert torch.allclose(
        r.signed[first].sum(1), r.input_relevance.sum((1, 2, 3)), rtol=1e-3, atol=1e-5
    )
    assert set(r.signed) == set(modules)
    assert r.signed[first].shape == (3, model.get_submodule(first).out_channels)
    # hooks and canonizer are gone: the model computes exactly what it did before
    assert torch.equal(model(x), reference)


def test_conservation_is_exact_without_biases():
    torch.manual_seed(0)
    model = build_classifier("vgg11_bn", 7, small_input=True).eval()
    for m in model.modules():
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
    modules = filter_output_modules(model, prunable_modules(model, [classifier_head(model)]))
    x, y = torch.randn(2, 3, 16, 16), torch.tensor([1, 2])
    r = lrp_batch(model, x, y, modules, _epsilon_composite(model), output="logit")
    logit = r.logits.gather(1, y.view(-1, 1)).squeeze(1)
    assert torch.allclose(r.input_relevance.sum((1, 2, 3)), logit, rtol=1e-3)
    for name in ("features.0", "features.4", "classifier.0"):
        assert torch.allclose(r.signed[name].sum(1), logit, rtol=1e-3), name


def test_densenet_batchnorm_pairs_skip_preactivation_norms():
    model = build_classifier("densenet121", 7, small_input=True)
    pairs = dict(batchnorm_pairs(model))
    assert pairs["features.conv0"] == "features.norm0"
    assert (
        pairs["features.denseblock1.denselayer1.conv1"] == "features.denseblock1.denselayer1.norm2"
    )
    # conv2 feeds a concatenation; the next norm1 normalises all features, not conv2 alone
    assert "features.denseblock1.denselayer1.conv2" not in pairs
