"""Ensembles of ProtoPNets (or any classifiers): logits summed, as the original's combine_models.

Summing logits keeps a ProtoPNet ensemble interpretable: the ensemble's logit is the sum of every
member's prototype contributions (explain.local lists them per member). Each member sees the same
images through its own input transform, so members trained at different sizes can be combined.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..config import RunConfig
from ..data.transforms import build_transform
from ..errors import CheckpointError
from ..metrics import compute_metrics
from ..progress import tqdm
from ..seed import resolve_device


class SummedLogits(nn.Module):
    """An ensemble module: logits = sum of the members' logits (members share one input)."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x).float() for m in self.members]).sum(0)


@torch.no_grad()
def member_logits(
    model: nn.Module, loader: DataLoader, device: torch.device, desc: str
) -> torch.Tensor:
    model.eval()
    return torch.cat(
        [model(x.to(device)).float().cpu() for x, _ in tqdm(loader, desc=desc, leave=False)]
    )


def evaluate_ensemble(
    checkpoints: Sequence[str | Path | dict],
    cfg: RunConfig | None = None,
    split: str = "test",
    device: str = "auto",
) -> dict[str, Any]:
    """Metrics of each member and of the summed-logit ensemble on one split.

    The images and split come from `cfg` (default: the first member's config); all members must
    have the same classes. Returns {"split", "members": [{"checkpoint", "metrics"}], "ensemble"}.
    """
    from ..train.checkpoint import checkpoint_config, load_checkpoint, model_from_checkpoint
    from ..train.run import prepare_data

    if len(checkpoints) < 2:
        raise CheckpointError(
            f"an ensemble needs at least two checkpoints, got {len(checkpoints)}",
            "give two or more: protoprune evaluate A --ensemble B C",
        )
    ckpts = [c if isinstance(c, dict) else load_checkpoint(c) for c in checkpoints]
    names = ckpts[0]["class_names"]
    for c in ckpts[1:]:
        if c["class_names"] != names:
            raise CheckpointError(
                f"{c.get('path')} has classes {c['class_names']}, the first member {names}",
                "combine models trained on the same classes",
            )
    data_cfg = cfg or checkpoint_config(ckpts[0])
    loaders, splits = prepare_data(data_cfg)
    if loaders.class_names != names:
        raise CheckpointError(
            f"the data's classes {loaders.class_names} differ from the members' {names}",
            "evaluate on a data set with the same classes",
        )
    images = getattr(splits, split)
    y = images.targets
    dev = resolve_device(device)
    members, logits = [], []
    for n, c in enumerate(ckpts):
        d = checkpoint_config(c).data
        transform = build_transform(d.image_size, d.mean, d.std, train=False)
        loader = DataLoader(
            images.with_transform(transform), batch_size=data_cfg.data.batch_size, shuffle=False,
            num_workers=data_cfg.data.num_workers,
        )  # fmt: skip
        out = member_logits(model_from_checkpoint(c).to(dev), loader, dev, f"member {n}")
        logits.append(out)
        probs = torch.softmax(out, 1).numpy()
        members.append({"checkpoint": c.get("path"), "metrics": compute_metrics(y, probs, names)})
    total = torch.stack(logits).sum(0)
    ensemble = compute_metrics(y, torch.softmax(total, 1).numpy(), names)
    return {
        "split": split,
        "members": members,
        "ensemble": ensemble,
        "logits": total.numpy(),
        "member_logits": np.stack([t.numpy() for t in logits]),
    }
