"""The push under torchrun: each prototype's global winner over the ranks' running minima."""

from __future__ import annotations

import torch

from ... import distributed


def global_winners(dist_, img, pos, rows, cols, patches, maps):
    """Per prototype, the rank with the smallest (distance, global image index); its values.

    All-gathers the P running minima of every rank (a few floats per prototype, plus the P
    candidate patches and maps) instead of any latent map.
    """
    d = torch.cat(distributed.all_gather_tensor(dist_[None]))  # (W, P)
    i = torch.cat(distributed.all_gather_tensor(img[None]))
    best = d.amin(0)
    candidate = (d == best) & (i >= 0)
    big = torch.iinfo(i.dtype).max
    win = torch.where(candidate, i, big).argmin(0)  # ties: lowest global index, as in one process
    cols_ = torch.arange(d.shape[1], device=d.device)

    def pick(t: torch.Tensor) -> torch.Tensor:
        return torch.cat(distributed.all_gather_tensor(t[None]))[win, cols_]

    return best, i[win, cols_], pick(pos), pick(rows), pick(cols), pick(patches), pick(maps)
