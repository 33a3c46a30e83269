"""PRP heatmaps localise a planted pattern the prototype was pushed onto."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from protoprune.explain.prp import prp_heatmaps
from protoprune.models.backbones import Features
from protoprune.models.receptive_field import receptive_field
from protoprune.protopnet.model import ProtoPNet


def _top_iou(heat: torch.Tensor, mask: torch.Tensor) -> float:
    top = heat >= torch.quantile(heat.flatten(), 0.95)  # the top 5 % of the pixels
    return float((top & mask).sum() / (top | mask).sum())


def _top_share_near(heat: torch.Tensor, mask: torch.Tensor, px: int = 2) -> float:
    """Share of the top 5 % of the pixels within `px` pixels of the pattern."""
    top = heat >= torch.quantile(heat.flatten(), 0.95)
    near = F.max_pool2d(mask[None, None].float(), 2 * px + 1, 1, px)[0, 0].bool()
    return float((top & near).sum() / top.sum())


def _planted(seed: int):
    """A random 4-conv trunk (latent 4 x 4, each cell sees 17 x 17 of 32 x 32 px), an image of
    faint noise with an 8 x 8 coloured square inside cell (1, 1)'s field, and prototype 0 set to
    that cell's latent vector (as a push would)."""
    torch.manual_seed(seed)
    body = nn.Sequential(
        nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1, bias=False),
        nn.ReLU(), nn.Conv2d(16, 16, 3, 2, 1, bias=False), nn.ReLU(),
        nn.Conv2d(16, 32, 3, 2, 1, bias=False), nn.ReLU(),
    )  # fmt: skip
    model = ProtoPNet(Features(body, 32), 2, prototypes_per_class=1, prototype_dim=16).eval()
    x = 0.1 * torch.randn(1, 3, 32, 32)
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[4:12, 4:12] = True
    x[0, :, mask] = torch.tensor([2.0, -1.0, 1.5])[:, None]
    with torch.no_grad():
        model.prototype_vectors[0] = model.conv_features(x)[0, :, 1, 1, None, None]
    return model, x, mask


def test_prp_peaks_on_the_planted_pattern_and_leaves_the_similarity_unchanged() -> None:
    ious, upsampled = [], []
    for seed in range(6):
        model, x, mask = _planted(seed)
        assert receptive_field(model).box(1, 1, (32, 32)) == [0, 17, 0, 17]
        heat, sims = prp_heatmaps(model, x, [0, 1])
        with torch.no_grad():
            out = model.forward_details(x)
        # the same similarity as the plain model (to float noise: at d ~ 0 the log similarity
        # log((d + 1) / (d + 1e-4)) turns a 1e-7 change of d into 1e-3)
        plain = model.distance_to_similarity(out.min_distances)[0]
        torch.testing.assert_close(sims, plain, rtol=1e-3, atol=1e-3)
        sim_map = model.distance_to_similarity(out.distances[0, :1])[None]
        up = F.interpolate(sim_map, size=(32, 32), mode="bicubic", align_corners=False)[0, 0]
        ious.append(_top_iou(heat[0], mask))
        upsampled.append(_top_iou(up, mask))
        assert ious[-1] > upsampled[-1]  # sharper than the upsampled similarity map
        # per draw: the top 5 % lies on the pattern or its 2-px rim (the cell's field is 17 x 17
        # px around it), where a draw with IoU below 0.5 puts its relevance (the square's edge)
        assert _top_share_near(heat[0], mask) >= 0.95, seed
    # measured with the default (yeom2021) composite: 0.81 0.81 0.45 0.55 0.57 0.81, mean 0.67
    # (epsilon_plus_flat: 0.73 0.78 0.41 0.53 0.55 0.81; the upsampled map: 0.10 to 0.22); the
    # top 5 % (51 px) cannot cover the 64-px square, so 0.80 is the highest IoU possible. Over
    # seeds 0-9 one draw in ten is below 0.5 (seed 2: relevance on the square's upper edge), so
    # the bound holds for the mean and every draw is held to the 2-px rim above
    assert sum(ious) / len(ious) >= 0.5 and min(ious) >= 0.35, ious


def test_prp_of_one_prototype_does_not_depend_on_the_others_listed() -> None:
    model, x, _ = _planted(0)
    both, _ = prp_heatmaps(model, x, [0, 1])
    alone, _ = prp_heatmaps(model, x, [1])
    torch.testing.assert_close(both[1], alone[0])
