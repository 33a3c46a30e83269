"""Sanity checks of the heatmaps: do they change when the model they explain is destroyed?

A heatmap that stays the same when the model's weights are randomised shows the image's structure
(edges, the lesion's outline), not what the model computes (Adebayo et al., NeurIPS 2018; for
prototype models Xu-Darme et al., 2023, who found PRP-like maps of ProtoPNets fail it).

- cascading randomisation: from the add-on layers down to the trunk's first layer, each layer's
  weights re-initialised in turn by its own `reset_parameters` (seeded), cumulatively; after each
  step the PRP map and the upsampled similarity map of the same (test image, prototype) pairs are
  compared with the trained model's by Spearman rank correlation (per pair, then the mean).
- prototype randomisation: the trained model with its prototype vectors replaced by Gaussian
  vectors of the prototypes' own per-channel mean and std.

A map whose mean rank correlation stays above `SANITY_LIMIT` once the whole latent path is
random fails the cascade; one that stays above it with random prototypes fails the prototype
check (it shows the image's latent structure more than the prototype it is said to explain).
The report and the study say which.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from torch import nn

from ..lrp.composites import DEFAULT_BOUNDS
from ..protopnet.model import ProtoPNet
from .metrics import upsampled_map
from .prp import prp_heatmaps

SANITY_LIMIT = 0.5  # mean rank correlation above which a map "did not change"
SANITY_PAIRS = 12  # (test image, prototype) pairs compared


def randomisation_steps(model: ProtoPNet) -> list[tuple[str, nn.Module]]:
    """The latent path's parameterised layers, top (add-on) first: the cascade's order."""
    body = model.features.body
    trunk = [(f"trunk.{name} ({type(m).__name__})", m) for name, m in body.named_children()
             if any(True for _ in m.parameters())]  # fmt: skip
    return [("add_on_layers", model.add_on_layers), *reversed(trunk)]


def reinitialise(module: nn.Module) -> None:
    """Every submodule's own default initialisation (BatchNorm: weight 1, bias 0, fresh stats)."""
    for m in module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()


@torch.no_grad()
def pair_maps(
    model: ProtoPNet, dataset, pairs: Sequence[tuple[int, int]], device, bounds
) -> dict[str, list[np.ndarray]]:
    """The PRP and upsampled similarity map of each (image index, prototype) pair."""
    out: dict[str, list[np.ndarray]] = {"prp": [], "upsample": []}
    for i, j in pairs:
        x = dataset[i][0][None].to(device)
        with torch.enable_grad():
            heat, _ = prp_heatmaps(model, x, [j], bounds=bounds)
        out["prp"].append(heat[0].float().cpu().numpy())
        out["upsample"].append(upsampled_map(model, x, j).float().cpu().numpy())
    return out


def rank_correlation(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """Mean Spearman correlation of paired maps (nan pairs, e.g. a constant map, left out)."""
    values = []
    for u, v in zip(a, b):
        if np.ptp(u) > 0 and np.ptp(v) > 0:
            values.append(spearmanr(u.ravel(), v.ravel()).statistic)
    return float(np.mean(values)) if values else float("nan")


def choose_pairs(nearest_test, count: int = SANITY_PAIRS) -> list[tuple[int, int]]:
    """Prototypes spread evenly over the model, each with its nearest test image."""
    protos = [j for j in range(nearest_test.image_index.shape[0])
              if int(nearest_test.image_index[j, 0]) >= 0]  # fmt: skip
    picked = [protos[int(k)] for k in np.linspace(0, len(protos) - 1, min(count, len(protos)))]
    return [(int(nearest_test.image_index[j, 0]), j) for j in dict.fromkeys(picked)]


def sanity_checks(
    model: ProtoPNet, dataset, pairs: Sequence[tuple[int, int]],
    device: torch.device | str = "cpu", bounds: tuple[float, float] = DEFAULT_BOUNDS,
    seed: int = 0,
) -> pd.DataFrame:  # fmt: skip
    """One row per cascade step (layers randomised so far) and one for the prototypes: the mean
    rank correlation of each map kind with the trained model's on the same pairs."""
    reference = pair_maps(model.eval(), dataset, pairs, device, bounds)
    rows = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        broken = copy.deepcopy(model).eval()
        for name, module in randomisation_steps(broken):
            reinitialise(module)
            maps = pair_maps(broken, dataset, pairs, device, bounds)
            rows.append({"randomised": f"down to {name}", "kind": "cascade",
                         **{k: rank_correlation(reference[k], maps[k]) for k in maps}})  # fmt: skip
        shuffled = copy.deepcopy(model).eval()
        p = shuffled.prototype_vectors
        with torch.no_grad():
            mean, std = p.mean((0, 2, 3), keepdim=True), p.std((0, 2, 3), keepdim=True)
            p.copy_(mean + std * torch.randn_like(p))
        maps = pair_maps(shuffled, dataset, pairs, device, bounds)
    rows.append({"randomised": "prototype vectors", "kind": "prototypes",
                 **{k: rank_correlation(reference[k], maps[k]) for k in maps}})  # fmt: skip
    return pd.DataFrame(rows)


def sanity_summary(table: pd.DataFrame) -> dict[str, float | bool]:
    """The correlation once the whole latent path is random and once the prototypes are, per map
    kind, and whether each map passes (changes: correlation at most SANITY_LIMIT)."""
    last = table[table["kind"] == "cascade"].iloc[-1]
    protos = table[table["kind"] == "prototypes"].iloc[-1]
    out: dict[str, float | bool] = {}
    for kind in ("prp", "upsample"):
        out[f"sanity_cascade_{kind}"] = float(last[kind])
        out[f"sanity_prototypes_{kind}"] = float(protos[kind])
        out[f"sanity_passes_{kind}"] = bool(last[kind] <= SANITY_LIMIT)
        out[f"sanity_prototypes_passes_{kind}"] = bool(protos[kind] <= SANITY_LIMIT)
    return out
