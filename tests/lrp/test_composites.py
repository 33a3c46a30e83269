"""The z+ rule's fast path for convs after a ReLU gives zennit's ZPlus relevance bit for bit."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from zennit.composites import SpecialFirstLayerMapComposite, layer_map_base
from zennit.rules import Epsilon, ZPlus
from zennit.types import Convolution

from protoprune.lrp.composites import ZPlusOnReLUInputs
from protoprune.models import build_classifier
from protoprune.prune.relevance import filter_output_modules, lrp_batch, prunable_modules


def _composite(conv_rule, first_rule):
    return SpecialFirstLayerMapComposite(
        layer_map=layer_map_base(1e-6) + [(Convolution, conv_rule), (nn.Linear, Epsilon(1e-6))],
        first_map=[(Convolution, first_rule)],
    )


def _relevance(model, x, conv_rule, first_rule):
    x = x.clone().requires_grad_(True)
    with _composite(conv_rule, first_rule).context(model) as hooked:
        out = hooked(x)
        (rel,) = torch.autograd.grad(out, x, grad_outputs=torch.eye(out.shape[1])[[0, 2, 1]])
    return rel


def test_fast_path_is_zennit_zplus_bit_for_bit_and_is_taken(monkeypatch) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
        nn.Conv2d(16, 8, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 7 * 7, 3),
    ).eval()  # fmt: skip
    x = torch.randn(3, 3, 16, 16)
    calls = []
    original = ZPlusOnReLUInputs._positive_relevance
    monkeypatch.setattr(ZPlusOnReLUInputs, "_positive_relevance",
                        lambda self, *a: (calls.append(1), original(self, *a))[1])  # fmt: skip
    # the first conv sees signed inputs (general path), the two after it ReLU outputs (fast path)
    fast = _relevance(model, x, ZPlusOnReLUInputs(1e-6, "bias"), ZPlusOnReLUInputs(1e-6, "bias"))
    reference = _relevance(model, x, ZPlus(1e-6, "bias"), ZPlus(1e-6, "bias"))
    assert len(calls) == 2
    assert torch.equal(fast, reference)
    assert fast.abs().sum() > 0


@pytest.mark.parametrize("size", [28, 40])
def test_resnet_filter_relevance_unchanged_by_the_fast_path(size, monkeypatch) -> None:
    torch.manual_seed(1)
    model = build_classifier("resnet18", 7, small_input=True).eval()
    x, y = torch.randn(4, 3, size, size), torch.tensor([0, 3, 5, 6])
    modules = filter_output_modules(model, prunable_modules(model))
    fast = lrp_batch(model, x, y, modules)
    general = ZPlus.backward
    monkeypatch.setattr(ZPlusOnReLUInputs, "backward", general)  # zennit's two-branch z+ everywhere
    slow = lrp_batch(model, x, y, modules)
    assert torch.equal(fast.input_relevance, slow.input_relevance)
    for name in fast.signed:
        assert torch.equal(fast.signed[name], slow.signed[name]), name
        assert torch.equal(fast.absolute[name], slow.absolute[name]), name
