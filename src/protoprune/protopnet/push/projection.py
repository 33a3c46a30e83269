"""The push's projection: each pushed prototype becomes its winning latent patch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from ... import distributed
from ..model import ProtoPNet
from .merge import global_winners
from .search import Found


@dataclass
class Winners:
    """Per prototype its global winner: distance, global image index (-1: not pushed), latent
    row and column, and its similarity map on the source image."""

    distance: torch.Tensor
    image: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    maps: torch.Tensor


def project(model: ProtoPNet, found: Found, shard) -> Winners:
    """Replace each pushed prototype by its winning patch (merged over ranks under torchrun)."""
    k, z_all, best_img = model.prototype_size, found.latents, found.image
    pushed = best_img >= 0
    w_lat = z_all.shape[3] - k + 1
    best_dist, best_pos = found.distance, found.position
    rows, cols = best_pos // w_lat, best_pos % w_lat
    src = best_img.clamp_min(0)
    offsets = torch.arange(k, device=z_all.device)
    hh = (rows[:, None] + offsets)[:, :, None]  # (P, k, 1)
    ww = (cols[:, None] + offsets)[:, None, :]  # (P, 1, k)
    patches = z_all[src[:, None, None], :, hh, ww].permute(0, 3, 1, 2)  # (P, D, k, k)
    # each winner's similarity map on its own source image, before the prototypes change
    candidates = torch.where(pushed[:, None, None, None], patches, model.prototype_vectors.float())
    maps = winner_maps(model, z_all[src], candidates)  # (P, H', W')
    if shard is None:
        winner = best_img
    else:  # the global winner of every prototype over all ranks; its patch and map from its rank
        global_idx = torch.as_tensor(shard, device=z_all.device)
        winner = torch.where(pushed, global_idx[src], -1)
        best_dist, winner, best_pos, rows, cols, patches, maps = global_winners(
            best_dist, winner, best_pos, rows, cols, patches, maps
        )
        pushed = winner >= 0
    new_protos = torch.where(pushed[:, None, None, None], patches, model.prototype_vectors.float())
    model.prototype_vectors.data.copy_(new_protos.to(model.prototype_vectors.dtype))
    return Winners(best_dist, winner, rows, cols, maps)


def pushed_similarities(model: ProtoPNet, latents: torch.Tensor, push_loader: DataLoader) -> torch.Tensor:
    """The pushed model's (N, P) similarity vectors of the whole push set, in dataset order, from
    the kept latents (no second forward pass): the accuracy after the push and the cached
    last-layer inputs."""
    batch = max(1, push_loader.batch_size or 64)
    sims = torch.cat(
        [
            model.distance_to_similarity(model.prototype_distances(latents[i : i + batch]).flatten(2).amin(2))
            for i in range(0, len(latents), batch)
        ]
    )
    return distributed.gather_in_order(sims, push_loader.sampler)


def winner_maps(model: ProtoPNet, z: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """(P, H', W') similarity map of each (pushed) prototype on its source latent map `z`.

    Computed from the candidate prototypes before the push, so that under DDP each rank
    provides the maps of its own candidates (identical to the pushed model's maps).
    """
    return model.distance_to_similarity(model.paired_distances(z, prototypes))
