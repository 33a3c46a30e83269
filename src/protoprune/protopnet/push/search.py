"""The push's search: one pass over the push set keeps each prototype's nearest own-class patch.

Per batch, one masked min over (images x positions) for all prototypes at once keeps the running
minima on the device; the pass's latents, targets and logits are kept for what follows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from ...errors import DataError
from ...progress import tqdm
from ...train import precision
from ..model import ProtoPNet


@dataclass
class Found:
    """The search's outcome on this rank: per prototype the nearest own-class patch so far
    (distance, local image position, latent position; image -1 where none), and the pass's kept
    latents, targets and logits."""

    distance: torch.Tensor
    image: torch.Tensor
    position: torch.Tensor
    latents: torch.Tensor
    targets: torch.Tensor
    logits: torch.Tensor
    input_hw: tuple[int, int]


def search(model: ProtoPNet, push_loader: DataLoader, device: torch.device, progress: bool, amp: bool) -> Found:
    """One pass over the push set: running minima over (images x positions) for all prototypes."""
    classes, n_protos = model.prototype_classes, model.num_prototypes
    best_dist = torch.full((n_protos,), float("inf"), device=device)
    best_img = torch.full((n_protos,), -1, dtype=torch.long, device=device)  # local position
    best_pos = torch.zeros(n_protos, dtype=torch.long, device=device)
    latents, targets, logits = [], [], []
    offset, input_hw = 0, None
    for x, y in tqdm(push_loader, desc="push", leave=False, disable=not progress):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        input_hw = tuple(x.shape[-2:])
        with precision.autocast(device, amp):  # enabled=False also switches an outer one off
            out = model.forward_details(x)
        latents.append(out.latent.float())
        targets.append(y)
        logits.append(out.logits.float())
        dmin, pos = out.distances.flatten(2).min(dim=2)  # (B, P): nearest position per image
        dmin = dmin.masked_fill(y[:, None] != classes[None, :], float("inf"))  # own class only
        batch_min, batch_img = dmin.min(dim=0)  # (P,)
        better = batch_min < best_dist
        best_dist = torch.where(better, batch_min, best_dist)
        best_img = torch.where(better, batch_img + offset, best_img)
        best_pos = torch.where(better, pos.gather(0, batch_img[None]).squeeze(0), best_pos)
        offset += len(y)
    if offset == 0:
        raise DataError("the push set is empty", "push over the (non-empty) training split")
    return Found(best_dist, best_img, best_pos, torch.cat(latents), torch.cat(targets), torch.cat(logits), input_hw)
