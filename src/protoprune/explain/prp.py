"""PRP heatmaps: which input pixels made a prototype similar (Gautam et al. 2022).

The similarity of prototype j (its max over positions) is explained by LRP down to the pixels:
the prototype layer's PRP rule (`lrp.prp`) and the trunk's composite as filter pruning builds
it (`lrp.composites.build_composite`: canonizers, rules), one implementation for both. Unlike the
upsampled similarity map, whose resolution is the latent grid's and whose cells may each see the
whole image, the PRP map follows the paths into the winning cell down to single pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..lrp.composites import (
    DEFAULT_BOUNDS,
    DEFAULT_COMPOSITE,
    build_composite,
    eval_mode,
    frozen_parameters,
)
from ..lrp.skip_backward import skipped_replaced_backward
from ..protopnet.model import ProtoPNet


def prp_heatmaps(
    model: ProtoPNet,
    x: torch.Tensor,
    prototypes: Sequence[int],
    composite: str = DEFAULT_COMPOSITE,
    bounds: tuple[float, float] = DEFAULT_BOUNDS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, H, W) pixel relevance (summed over colour channels) of each listed prototype's
    similarity on the one image `x` (1, 3, H, W), and the (n,) similarities explained.

    One forward and one backward pass for all n prototypes (the image repeated n times).
    `bounds`: the normalised input range (`lrp.composites.input_bounds`) for the default
    composite's z^B first layer.
    """
    n = len(prototypes)
    idx = torch.as_tensor(list(prototypes), dtype=torch.long, device=x.device)
    xs = x.detach().expand(n, *x.shape[1:]).clone().requires_grad_(True)
    comp = build_composite(composite, model, bounds)
    with torch.enable_grad(), eval_mode(model), frozen_parameters(model), comp.context(model), \
            skipped_replaced_backward(model):  # fmt: skip
        sims = model.prototype_layer(model.conv_features(xs), model.prototype_vectors)  # (n, P)
        rows = torch.arange(n, device=x.device)
        start = torch.zeros_like(sims)
        start[rows, idx] = sims[rows, idx].detach()  # explain the similarity itself
        (grad,) = torch.autograd.grad(sims, xs, grad_outputs=start)
    return grad.sum(1).detach(), sims[rows, idx].detach()
