"""The last-layer stage's hand-written gradient gives autograd's update (CE with class weights + L1)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from protoprune.config import ProtoPNetConfig
from protoprune.models.backbones import Features
from protoprune.models.protopnet import ProtoPNet
from protoprune.train.protopnet import _cross_entropy_and_grad, build_optimizers, last_layer_stage


@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_and_its_gradient_match_autograd(weighted):
    torch.manual_seed(0)
    logits = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 3, 3, 1, 0, 2])
    w = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64) if weighted else None
    ref = F.cross_entropy(logits, y, weight=w)
    ref.backward()
    ce, grad = _cross_entropy_and_grad(logits.detach(), y, w)
    torch.testing.assert_close(ce, ref.detach())
    torch.testing.assert_close(grad, logits.grad)


def _autograd_stage(model, sims, targets, opt, p, batch, class_weights, order_seed):
    """The stage as autograd would run it: CE + l1 * |W * wrong|.sum(), one graph a batch."""
    wrong = 1 - model.prototype_class_identity.t()
    g = torch.Generator().manual_seed(order_seed)
    for _ in range(p.last_layer_iterations):
        order = torch.randperm(len(targets), generator=g)
        for start in range(0, len(targets), batch):
            idx = order[start : start + batch]
            logits = model.last_layer(sims[idx])
            loss = p.crs_ent * F.cross_entropy(logits, targets[idx], weight=class_weights)
            loss = loss + p.l1 * (model.last_layer.weight * wrong).abs().sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def test_stage_reaches_the_weights_autograd_reaches():
    trunk = Features(nn.Sequential(nn.Conv2d(3, 4, 1)), 4)
    p = ProtoPNetConfig(prototypes_per_class=3, last_layer_iterations=4, l1=1e-2, last_layer_lr=1e-2)
    torch.manual_seed(0)
    sims = torch.rand(50, 12)
    targets = torch.arange(50) % 4
    class_weights = torch.tensor([1.0, 2.0, 0.5, 1.5])
    models = []
    for manual in (True, False):
        torch.manual_seed(1)
        model = ProtoPNet(trunk, 4, 3, 8)
        opt = build_optimizers(model, p)["last"]
        if manual:
            rows = last_layer_stage(model, sims, targets, opt, p, 16, class_weights,
                                    generator=torch.Generator().manual_seed(5), progress=False)  # fmt: skip
            assert len(rows) == 4 and rows[-1]["loss"] < rows[0]["loss"]
        else:
            _autograd_stage(model, sims, targets, opt, p, 16, class_weights, 5)
        models.append(model.last_layer.weight.detach().clone())
    assert not torch.equal(models[0], ProtoPNet(trunk, 4, 3, 8).last_layer.weight)  # it moved
    torch.testing.assert_close(models[0], models[1], rtol=1e-5, atol=1e-6)
