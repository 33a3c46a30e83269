"""The global analysis searches k = 6 training and 5 test patches, as the original's script."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from torchvision import transforms as T

from protoprune.data.base import ArrayImageDataset
from protoprune.explain.global_ import global_analysis

from .fixtures import identity_protopnet


def _dataset(seed: int, n: int) -> ArrayImageDataset:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
    ds = ArrayImageDataset(images, rng.integers(0, 2, n), ["a", "b"])
    return ds.with_transform(T.ToTensor())


def _brute_force_nearest(ds: ArrayImageDataset, prototype: torch.Tensor, k: int) -> list[int]:
    """Each image's closest pixel to the prototype colour; the k nearest images."""
    x = torch.stack([ds[i][0] for i in range(len(ds))])  # (N, 3, 4, 4)
    d = ((x - prototype.view(1, 3, 1, 1)) ** 2).sum(1).flatten(1).amin(1)
    return sorted(range(len(ds)), key=lambda i: (float(d[i]), i))[:k]


def test_six_training_and_five_test_neighbours(tmp_path) -> None:
    prototypes = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.1, 0.9]])
    model = identity_protopnet(prototypes, [0, 1], 2)
    train, test = _dataset(0, 30), _dataset(1, 20)
    splits = {
        name: (DataLoader(ds, batch_size=7, shuffle=False), ds)
        for name, ds in (("train", train), ("test", test))
    }
    out = global_analysis(model, splits, ["a", "b"], tmp_path, progress=False)
    assert out["nearest"]["train"].k == 6 and out["nearest"]["test"].k == 5
    for split, ds, k in (("train", train, 6), ("test", test, 5)):
        table = pd.read_csv(tmp_path / f"nearest_{split}.csv")
        for j in range(2):
            rows = table[table.prototype == j].sort_values("rank")
            assert rows["image_index"].tolist() == _brute_force_nearest(ds, prototypes[j], k)
