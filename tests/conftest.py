"""Shared fixtures: tiny real-data configs so the suite stays fast on 2 CPU cores."""

from __future__ import annotations

import pytest
import torch

from protoprune.config import RunConfig, load_config

torch.set_num_threads(2)


def tiny_overrides(**extra) -> list[str]:
    base = {
        "data.dataset": "bundled",
        "data.max_per_split": 70,
        "data.batch_size": 32,
        "train.epochs": 2,
        "train.progress": False,
        "train.device": "cpu",
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture
def tiny_config() -> RunConfig:
    """ResNet18 (small-image variant) on 70 real bundled DermaMNIST images per split, 2 epochs."""
    return load_config(None, tiny_overrides())
