"""Class imbalance handling, applied to the training split only (never before splitting)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler


def class_balanced_sampler(targets: np.ndarray, n_classes: int, generator: torch.Generator | None = None) -> WeightedRandomSampler:
    """Oversample so that each class is drawn equally often in expectation (one epoch = N draws)."""
    counts = np.bincount(targets, minlength=n_classes).astype(np.float64)
    per_class = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    weights = torch.as_tensor(per_class[targets], dtype=torch.double)
    return WeightedRandomSampler(weights, num_samples=len(targets), replacement=True, generator=generator)


def class_weights(targets: np.ndarray, n_classes: int) -> torch.Tensor:
    """Loss weights N / (K * n_c): a class-weighted cross-entropy as an alternative to oversampling."""
    counts = np.bincount(targets, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, len(targets) / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.as_tensor(w, dtype=torch.float32)
