"""protoprune's default criteria against a port of the reference implementation's scoring
(tests/prune/reference_port.py): same per-filter scores, so the same ranking."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from protoprune.models import build_classifier
from protoprune.prune.importance import CRITERIA, LRPImportance
from protoprune.prune.relevance import build_composite, lrp_batch, never_pruned

from . import reference_port as ref


def _randomised(arch: str, classes: int = 5) -> nn.Module:
    """A model whose BatchNorms are not identities (as after training), in eval mode."""
    torch.manual_seed(0)
    model = build_classifier(arch, classes, small_input=True)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.3, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _batches(n_batches=2, size=12, classes=5):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(6, 3, size, size, generator=g), torch.randint(0, classes, (6,), generator=g))
            for _ in range(n_batches)]  # fmt: skip


def _compare(ours: dict, theirs: dict, rank_min: float = 0.99, rtol: float = 1e-2, atol=1e-4):
    """Same ranking (Spearman) and the same values up to the stabilisers (zennit adds 1e-6 x sign
    in z+, the reference 1e-12 to exact zeros only)."""
    names = sorted(theirs)
    assert set(names) <= set(ours), set(names) - set(ours)
    a = torch.cat([ours[n].flatten() for n in names])
    b = torch.cat([theirs[n].flatten() for n in names])
    rho = spearmanr(a.numpy(), b.numpy()).statistic
    assert rho >= rank_min, rho
    assert torch.allclose(a, b, rtol=rtol, atol=atol * float(b.abs().max())), (a - b).abs().max()


def _port_totals(score, batches) -> dict[str, torch.Tensor]:
    theirs: dict[str, torch.Tensor] = {}
    for x, y in batches:
        for k, v in score(x, y).items():
            theirs[k] = theirs[k] + v if k in theirs else v
    return theirs


@pytest.mark.parametrize("batchnorm", ["eval", "train"])
def test_resnet_lrp_scores_match_the_reference_port(batchnorm):
    """`train` is the reference wrapper as it runs: batch statistics after every fused conv."""
    model = _randomised("resnet18")
    batches = _batches()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ours = LRPImportance(bounds=(-2.5, 2.8), batchnorm=batchnorm).prepare(model, batches)
    theirs = _port_totals(lambda x, y: ref.resnet_lrp_scores(model, x, y, batchnorm), batches)
    _compare(ours, theirs)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # model unchanged
    if batchnorm == "train":  # and the two modes do rank differently (the option matters)
        other = _port_totals(lambda x, y: ref.resnet_lrp_scores(model, x, y, "eval"), batches)
        a = torch.cat([theirs[n] for n in sorted(theirs)])
        b = torch.cat([other[n] for n in sorted(theirs)])
        assert spearmanr(a.numpy(), b.numpy()).statistic < 0.95


@pytest.mark.parametrize("linear", [False, True])
def test_vgg_lrp_scores_match_the_reference_port(linear):
    model = _randomised("vgg11_bn")
    batches = _batches()
    keep = never_pruned(model, prune_linear=linear)
    ours = LRPImportance(bounds=(-2.5, 2.8), ignored_layers=keep).prepare(model, batches)
    theirs = _port_totals(lambda x, y: ref.vgg_lrp_scores(model, x, y, -2.5, 2.8, linear), batches)
    assert set(ours) == set(theirs)  # conv filters only unless prune_linear
    _compare(ours, theirs)


def test_input_relevance_of_the_box_rule_matches_the_reference_port():
    """The z^B rule of the first conv reaches a compared number: the input relevance."""
    model = _randomised("vgg11_bn")
    x, y = _batches(1)[0]
    got = lrp_batch(model, x, y, {}, build_composite("yeom2021", model, (-2.5, 2.8)))
    port: dict = {}
    ref.vgg_lrp_scores(model, x, y, -2.5, 2.8, inputs=port)
    want = port["relevance"]
    assert got.input_relevance.shape == want.shape
    assert torch.allclose(got.input_relevance, want, rtol=1e-2, atol=1e-4 * float(want.abs().max()))
    assert torch.allclose(got.input_relevance.sum((1, 2, 3)), want.sum((1, 2, 3)), rtol=1e-3)


@pytest.mark.parametrize("method, product", [("grad", False), ("taylor", True)])
@pytest.mark.parametrize("batchnorm", ["eval", "train"])
def test_gradient_scores_match_the_reference_port(method, product, batchnorm):
    model = _randomised("resnet18")
    batches = _batches()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ours = CRITERIA.get(method)(batchnorm=batchnorm).prepare(model, batches)
    theirs = ref.gradient_scores(model, batches, product, train_mode=batchnorm == "train")
    _compare(ours, theirs, rank_min=0.999, rtol=1e-4)
    # scoring in train mode leaves the running statistics as they were
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_weight_scores_are_the_batchnorm_fused_filter_norms():
    model = _randomised("resnet18")
    ours = CRITERIA.get("weight")().prepare(model, [])
    _compare(ours, ref.weight_scores(model), rank_min=0.9999, rtol=1e-5)
    raw = CRITERIA.get("weight")(fuse_batchnorm=False).prepare(model, [])
    assert torch.allclose(raw["layer1.0.conv1"], model.layer1[0].conv1.weight.abs().sum((1, 2, 3)))
