"""PRP through the prototype layer: a brute-force port of the rule, conservation, and the trunk
pruning's relevance path (issue 17 item 2)."""

from __future__ import annotations

import pytest
import torch
from zennit.composites import COMPOSITES

from protoprune.lrp.prp import GAMMA_EPSILON, prototype_relevance
from protoprune.models.backbones import build_classifier, feature_extractor
from protoprune.protopnet.model import ProtoPNet, PrototypeLayer
from protoprune.prune.relevance import build_composite, canonizers_for, lrp_batch


def _brute_force(layer: PrototypeLayer, z, p, r) -> torch.Tensor:
    """The rule written out per image and prototype: loops, no unfold/fold, float64."""
    z, p, r = z.double(), p.double(), r.double()
    out = torch.zeros_like(z)
    k = p.shape[-1]
    for b in range(z.shape[0]):
        for j in range(p.shape[0]):
            best, where = None, None
            for h in range(z.shape[2] - k + 1):
                for w in range(z.shape[3] - k + 1):
                    patch = z[b, :, h : h + k, w : w + k]
                    if layer.similarity == "cosine":
                        d = 1 - (patch * p[j]).sum() / (patch.norm() * p[j].norm())
                    else:
                        d = ((patch - p[j]) ** 2).sum()
                    if best is None or d < best - 1e-9:
                        best, where = d, (h, w)
            h, w = where
            patch = z[b, :, h : h + k, w : w + k]
            if layer.similarity == "cosine":
                share = patch * p[j] / (patch * p[j]).sum()
            else:
                gamma = 1 / ((patch - p[j]) ** 2 + GAMMA_EPSILON)
                share = gamma / gamma.sum()
            out[b, :, h : h + k, w : w + k] += share * r[b, j]
    return out


@pytest.mark.parametrize(("similarity", "k"), [("log", 1), ("log", 2), ("cosine", 1)])
def test_the_rule_matches_a_brute_force_port_and_conserves_relevance(similarity, k) -> None:
    torch.manual_seed(0)
    layer = PrototypeLayer(similarity)
    z = torch.rand(3, 6, 5, 4)
    p = torch.rand(4, 6, k, k)
    r = torch.rand(3, 4) + 0.1
    got = prototype_relevance(layer, z, p, r)
    torch.testing.assert_close(got.double(), _brute_force(layer, z, p, r), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got.sum((1, 2, 3)), r.sum(1), rtol=1e-5, atol=1e-6)


def _protopnet() -> ProtoPNet:
    torch.manual_seed(1)
    trunk = feature_extractor(build_classifier("resnet18", 3, small_input=True))
    return ProtoPNet(trunk, 3, prototypes_per_class=2, prototype_dim=16).eval()


def test_trunk_pruning_relevance_enters_the_trunk_conserved() -> None:
    """The relevance arriving at the latent map (the add-on's output) is what the last layer's
    epsilon rule (no bias, eps 1e-6) passes on: R * z / (z + eps sign z) for the explained logit z
    and initial relevance R (the true class's logit, or one), all of it through PRP."""
    model = _protopnet()
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    modules = {"latent": model.add_on_layers, "last": model.last_layer}
    for output in ("logit", "onehot"):
        r = lrp_batch(model, x, y, modules, output=output)
        z = r.logits.gather(1, y[:, None])[:, 0].double()
        start = z if output == "logit" else torch.ones_like(z)
        expected = start * z / (z + 1e-6 * z.sign())
        torch.testing.assert_close(r.signed["latent"].sum(1).double(), expected, rtol=1e-4, atol=1e-6)
    # the same composite without the prototype rule (a plain gradient through the layer, the
    # path before PRP) does not conserve it
    plain = COMPOSITES["epsilon_plus_flat"](canonizers=canonizers_for(model))
    g = lrp_batch(model, x, y, modules, plain, output="logit")
    z = g.logits.gather(1, y[:, None])[:, 0]
    assert not torch.allclose(g.signed["latent"].sum(1), z, rtol=1e-2)


def test_the_composite_puts_prp_on_the_prototype_layer_only() -> None:
    model = _protopnet()
    comp = build_composite("epsilon_plus_flat", model)
    with comp.context(model):
        hooked = [type(h).__name__ for h in comp.hook_refs]
    assert hooked.count("PrototypeRule") == 1
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        plain = model(x)
    with comp.context(model) as m, torch.no_grad():
        torch.testing.assert_close(m(x), plain, rtol=1e-4, atol=1e-5)  # forward unchanged


def test_the_cosine_rule_on_a_planted_pattern() -> None:
    """Cosine: a patch planted at (2, 3) in the prototype's direction on channels 0 and 2 (and
    an unrelated channel 1 the prototype does not use). Hand calculation of the dot-product
    z-rule: all relevance at (2, 3), split 3*1 : 1*2 between channels 0 and 2, none on 1."""
    layer = PrototypeLayer("cosine")
    z = torch.zeros(1, 3, 5, 5)
    z[0, 1] = 0.01  # elsewhere only the unused channel: orthogonal to the prototype
    z[0, :, 2, 3] = torch.tensor([3.0, 0.5, 1.0])
    p = torch.tensor([1.0, 0.0, 2.0]).view(1, 3, 1, 1)
    r = prototype_relevance(layer, z, p, torch.tensor([[0.8]]))
    assert float(r.sum()) == pytest.approx(0.8)
    assert torch.count_nonzero(r[0, :, 2, 3]) == 2 and float(r[0, 1, 2, 3]) == 0.0
    assert float(r[0, 0, 2, 3]) == pytest.approx(0.8 * 3 / 5)
    assert float(r[0, 2, 2, 3]) == pytest.approx(0.8 * 2 / 5)
    assert float(r.abs().sum() - r[0, :, 2, 3].abs().sum()) == 0.0  # nothing elsewhere


def test_the_l2_rule_is_uninformative_where_the_prototype_equals_its_patch() -> None:
    """z = p: every channel gets 1 / D (why the localisation metrics also use test images)."""
    layer = PrototypeLayer("log")
    p = torch.tensor([0.3, -1.0, 2.0, 0.5]).view(1, 4, 1, 1)
    z = torch.zeros(1, 4, 3, 3)
    z[0, :, 1, 1] = p.flatten()
    r = prototype_relevance(layer, z, p, torch.tensor([[1.0]]))
    assert torch.allclose(r[0, :, 1, 1], torch.full((4,), 0.25))
