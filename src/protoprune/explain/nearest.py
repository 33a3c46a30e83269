"""The k nearest training (or test) patches of every prototype, at most one patch per image.

As the original's find_nearest: an image contributes only its closest patch to a prototype, so
the k neighbours come from k different images. One pass over the loader; per batch, the images'
closest-patch distances (B, P) are merged with the running (P, k) best by one `topk` on the
device: no per-prototype Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader

from .. import distributed
from ..errors import ConfigError, DataError
from ..progress import tqdm
from ..protopnet.model import ProtoPNet


@dataclass
class NearestPatches:
    """Per prototype its k nearest patches, nearest first; -1 / inf where fewer than k images."""

    distances: torch.Tensor  # (P, k) float
    image_index: torch.Tensor  # (P, k) long: index into the loader's dataset
    position: torch.Tensor  # (P, k) long: flat position in the (H', W') distance map
    image_class: torch.Tensor  # (P, k) long: the image's label
    map_shape: tuple[int, int]  # (H', W') of the distance maps
    input_hw: tuple[int, int]  # the network's input size

    @property
    def k(self) -> int:
        return self.distances.shape[1]

    def class_counts(self, num_classes: int) -> torch.Tensor:
        """(P, C): how many of each prototype's k neighbours come from each class."""
        valid = self.image_index >= 0
        onehot = torch.nn.functional.one_hot(self.image_class.clamp_min(0), num_classes)
        return (onehot * valid[..., None]).sum(1)

    def own_class_count(self, prototype_classes: torch.Tensor) -> torch.Tensor:
        """(P,): neighbours from the prototype's own class (the pruning criterion)."""
        own = self.image_class == prototype_classes.to(self.image_class.device)[:, None]
        return (own & (self.image_index >= 0)).sum(1)

    def table(
        self,
        prototype_classes: torch.Tensor,
        class_names: list[str],
        image_ids: list[str] | None = None,
        split: str = "train",
    ) -> pd.DataFrame:
        """One row per (prototype, rank): distance, image id and class, latent position."""
        p, k = self.distances.shape
        w = self.map_shape[1]
        idx = self.image_index.cpu()
        pos = self.position.cpu()
        rows: list[dict[str, Any]] = []
        for j in range(p):
            for r in range(k):
                i = int(idx[j, r])
                if i < 0:
                    continue
                rows.append(
                    {
                        "prototype": j,
                        "prototype_class": class_names[int(prototype_classes[j])],
                        "split": split,
                        "rank": r + 1,
                        "image_index": i,
                        "image_id": image_ids[i] if image_ids is not None else str(i),
                        "image_class": class_names[int(self.image_class[j, r])],
                        "distance": float(self.distances[j, r]),
                        "latent_h": int(pos[j, r]) // w,
                        "latent_w": int(pos[j, r]) % w,
                    }
                )
        return pd.DataFrame(rows)


def merge_topk(
    best: tuple[torch.Tensor, ...], candidates: tuple[torch.Tensor, ...], k: int
) -> tuple[torch.Tensor, ...]:
    """Keep the k smallest of (P, k) running values and (P, B) new candidates.

    Each tuple is (distances, *payloads) of matching shapes; payloads follow their distances.
    Exact ties go to the earlier column (the running best before the candidates, and the
    candidates in their order): a stable sort, where `topk` leaves the choice unspecified. So an
    image seen earlier keeps its place against a later one at the same distance, as in the
    original's find_nearest, whose heap drops a newcomer that only equals its farthest entry.
    """
    values = torch.cat([best[0], candidates[0]], 1)
    kk = min(k, values.shape[1])
    top, order = values.sort(dim=1, stable=True)
    top, order = top[:, :kk], order[:, :kk]
    return (top, *(torch.cat([b, c], 1).gather(1, order) for b, c in zip(best[1:], candidates[1:])))


def _by_image_index(
    tensors: tuple[torch.Tensor, ...], image_index: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Reorder the columns of each (P, n) tensor by ascending image index (missing, -1, last)."""
    key = image_index.masked_fill(image_index < 0, torch.iinfo(image_index.dtype).max)
    order = key.sort(dim=1, stable=True).indices
    return tuple(t.gather(1, order) for t in tensors)


def require_k_images(k: int, n_images: int) -> None:
    """The k nearest patches are one per image: a k above the image count cannot be met."""
    if k > n_images:
        raise ConfigError(
            f"k = {k} nearest patches, but the search set has {n_images} training images "
            "(one patch per image)",
            f"use k <= {n_images} (--k or prune_prototypes.k; the default is 6)",
        )


@torch.no_grad()
def k_nearest_patches(
    model: ProtoPNet,
    loader: DataLoader,
    k: int = 6,
    device: torch.device | str = "cpu",
    progress: bool = True,
    desc: str = "nearest patches",
) -> NearestPatches:
    """The k nearest patches (one per image at most) of every prototype over `loader`.

    Under torchrun (an unshuffled DistributedSampler) each rank searches its shard and the ranks'
    (P, k) bests are merged into the global k nearest, the same on every rank.
    """
    shard = distributed.ordered_shard(loader)  # None in a single process
    device = torch.device(device)
    was_training = model.training
    model.eval()
    p = model.num_prototypes
    dist = torch.full((p, 0), float("inf"), device=device)
    img = torch.zeros((p, 0), dtype=torch.long, device=device)
    pos = torch.zeros((p, 0), dtype=torch.long, device=device)
    cls = torch.zeros((p, 0), dtype=torch.long, device=device)
    offset, map_shape, input_hw = 0, (0, 0), (0, 0)
    n_images = len(loader.dataset)
    global_index = None if shard is None else torch.tensor(shard, device=device)
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not progress):
        x, y = x.to(device), y.to(device)
        input_hw = tuple(x.shape[-2:])
        with torch.autocast(device_type=device.type, enabled=device.type == "cuda"):
            z = model.conv_features(x)
        d = model.prototype_distances(z)  # (B, P, H', W'), float32
        map_shape = tuple(d.shape[-2:])
        dmin, where = d.flatten(2).min(2)  # one patch per image: its closest
        b = len(y)
        seen = torch.arange(b, device=device) + offset  # positions in this rank's loader
        batch_img = seen
        if global_index is not None:
            batch_img = global_index[seen]
            # DistributedSampler pads the last round with repeats of the first images: drop them
            padding = seen * distributed.world_size() + distributed.rank() >= n_images
            dmin = dmin.masked_fill(padding[:, None], float("inf"))
        batch_img = batch_img[None].expand(p, b)
        dist, img, pos, cls = merge_topk(
            (dist, img, pos, cls),
            (dmin.t(), batch_img, where.t(), y[None].expand(p, b)),
            k,
        )
        offset += b
    if global_index is not None:  # merge the ranks' bests: the global k nearest on every rank
        dist, img, pos, cls = (torch.cat(distributed.all_gather_tensor(t.t().contiguous())).t()
                               for t in (dist, img, pos, cls))  # fmt: skip
        # the ranks hold interleaved shards: ties go to the earlier image of the whole data set
        dist, img, pos, cls = _by_image_index((dist, img, pos, cls), img)
        dist, img, pos, cls = merge_topk(
            (dist[:, :0], img[:, :0], pos[:, :0], cls[:, :0]), (dist, img, pos, cls), k
        )
        offset = n_images
        img = img.masked_fill(dist.isinf(), -1)  # a padding repeat, never a real neighbour
    if offset == 0:
        raise DataError(
            "the data set for the nearest-patch search is empty", "give a non-empty split"
        )
    if dist.shape[1] < k:  # fewer images than k: pad with "missing"
        pad = k - dist.shape[1]
        dist = torch.cat([dist, torch.full((p, pad), float("inf"), device=device)], 1)
        img, pos, cls = (
            torch.cat([t, torch.full((p, pad), -1, device=device)], 1) for t in (img, pos, cls)
        )
    model.train(was_training)
    return NearestPatches(dist.cpu(), img.cpu(), pos.cpu(), cls.cpu(), map_shape, input_hw)
