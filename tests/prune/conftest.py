"""Tiny models and inputs for the filter-pruning tests (CPU, seconds)."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class TinyNet(nn.Module):
    """conv-bn-relu x2, global pool, hidden Linear, head: every prunable kind in a few KB."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 12, 3, padding=1, bias=False),
            nn.BatchNorm2d(12),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@pytest.fixture
def tiny_data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two batches where class = brightest colour channel: learnable in a few steps."""
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(2):
        y = torch.randint(0, 3, (12,), generator=g)
        x = torch.randn(12, 3, 8, 8, generator=g) * 0.3
        x[torch.arange(12), y] += 1.0
        batches.append((x, y))
    return batches


def train_briefly(model: nn.Module, batches, steps: int = 30) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        for x, y in batches:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval()
