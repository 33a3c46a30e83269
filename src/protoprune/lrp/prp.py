"""Prototypical relevance propagation (PRP, Gautam et al. 2022): the LRP rule of ProtoPNet's
prototype layer, as a zennit hook, so relevance crosses it conserved.

The layer maps the latent map z to each prototype's max similarity over positions. Its rule, as
CaBRNet's (aiser-team/cabrnet, `core/visualization/prp_utils.py: SimilarityLRPWrapper`):
- the max over positions passes a prototype's relevance R_j to its best-matching patch only
  (winner takes all, as LRP through max-pooling);
- within that patch (channels c and, for k x k prototypes, offsets), R_j is split in proportion to
  gamma = 1 / ((z - p_j)^2 + eps): the coordinates where the patch is closest to the prototype
  receive most; the shares sum to one, so sum R_z = sum_j R_j.
For cosine similarity (not in CaBRNet, nor in Gautam et al.) the split is protoprune's own rule,
named for what it is, the **dot-product z-rule**: shares z_c p_jc / (z . p_j), the LRP-0 rule of
the dot product the cosine normalises (the patch norm is treated as a constant). It has no
reference implementation to match; `tests/prune/test_prp.py` checks it against a brute-force port
and on a planted pattern.

Where a prototype equals its patch (z = p, exactly so on a prototype's own source image after the
push) the L2 rule's shares are all 1 / D: it says nothing about which channel mattered, so
protoprune's localisation metrics are also computed on each prototype's nearest test images.

Written by hand because zennit has rules for linear layers and activations only; the hook follows
zennit's `Hook` protocol (the gradient arriving at a tensor is its relevance), so it composes with
any zennit composite (`with_prototype_rule`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from zennit.core import Composite, Hook

from ..protopnet.model import PrototypeLayer

GAMMA_EPSILON = 1e-12  # CaBRNet's lrp_stability_factor of the similarity layer
RULE_NAMES = {  # the prototype layer's PRP rule per similarity, as the report names it
    "log": "CaBRNet's L2 gamma rule",
    "cosine": "protoprune's dot-product z-rule (no reference implementation)",
}


def prototype_relevance(
    layer: PrototypeLayer,
    z: torch.Tensor,
    prototypes: torch.Tensor,
    relevance: torch.Tensor,
    epsilon: float = GAMMA_EPSILON,
) -> torch.Tensor:
    """(B, D, H, W) relevance of the latent map for (B, P) relevance of the max similarities."""
    z, p = z.detach().float(), prototypes.detach().float()
    b, d, h, w = z.shape
    k = p.shape[-1]
    dist = layer.distances(z, p)  # (B, P, H', W')
    best = dist.flatten(2).argmin(2)  # (B, P): the winning patch (first on ties, as amin)
    cols = F.unfold(z, k)  # (B, D*k*k, L)
    patch = cols.gather(2, best[:, None, :].expand(b, cols.shape[1], best.shape[1]))
    patch = patch.transpose(1, 2)  # (B, P, D*k*k)
    proto = p.flatten(1)[None]  # (1, P, D*k*k)
    if layer.similarity == "cosine":
        share = patch * proto
        total = share.sum(2, keepdim=True)
        share = share / (total + epsilon * (total.sign() + (total == 0)))
    else:
        gamma = 1.0 / ((patch - proto) ** 2 + epsilon)
        share = gamma / gamma.sum(2, keepdim=True)
    contrib = share * relevance.float()[..., None]  # (B, P, D*k*k)
    out = torch.zeros_like(cols)
    out.scatter_add_(
        2, best[:, None, :].expand_as(contrib.transpose(1, 2)), contrib.transpose(1, 2)
    )
    return F.fold(out, (h, w), k)


class PrototypeRule(Hook):
    """zennit hook of a `PrototypeLayer`: its input gradient is the PRP relevance of z."""

    def __init__(self, epsilon: float = GAMMA_EPSILON):
        super().__init__()
        self.epsilon = epsilon

    def copy(self) -> PrototypeRule:
        return PrototypeRule(self.epsilon)

    def forward(self, module, input, output):
        self.stored_tensors["input"] = input

    def backward(self, module, grad_input, grad_output):
        z, p = self.stored_tensors["input"][:2]
        r = prototype_relevance(module, z, p, grad_output[0], self.epsilon)
        return (r.to(z.dtype),) + tuple(None for _ in grad_input[1:])


def with_prototype_rule(composite: Composite) -> Composite:
    """`composite` with the PRP rule on every PrototypeLayer (its other rules unchanged)."""
    inner = composite.module_map
    rule = PrototypeRule()

    def module_map(ctx, name, module):
        return rule if isinstance(module, PrototypeLayer) else inner(ctx, name, module)

    composite.module_map = module_map
    return composite
