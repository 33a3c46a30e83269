"""Inference over a loader and the metrics of the result."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .. import distributed
from ..metrics import compute_metrics
from ..progress import tqdm


@torch.no_grad()
def predict(
    model: nn.Module, loader: DataLoader, device: torch.device | str = "cpu", progress: bool = False, desc: str = "predict"
) -> tuple[np.ndarray, np.ndarray]:
    """Targets and softmax probabilities for every sample of `loader`, in loader order.

    Under torchrun (a DistributedSampler) each rank predicts its shard and the predictions of
    all ranks are gathered in dataset order, so every rank returns the whole split once.
    """
    was_training = model.training
    model.eval()
    targets, probs = [], []
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not progress):
        logits = model(x.to(device, non_blocking=True))
        probs.append(torch.softmax(logits.float(), 1).cpu())
        targets.append(y)
    model.train(was_training)
    y, p = torch.cat(targets), torch.cat(probs)
    y = distributed.gather_in_order(y, loader.sampler)  # no-op in a single process
    p = distributed.gather_in_order(p, loader.sampler)
    return y.numpy(), p.numpy()


def evaluate_model(
    model: nn.Module, loader: DataLoader, class_names: list[str], device: torch.device | str = "cpu", progress: bool = False
) -> dict:
    y, p = predict(model, loader, device, progress=progress, desc="evaluate")
    return compute_metrics(y, p, class_names)


def ensemble_probs(prob_list: list[np.ndarray]) -> np.ndarray:
    """Mean of member probabilities."""
    return np.mean(np.stack(prob_list), 0)
