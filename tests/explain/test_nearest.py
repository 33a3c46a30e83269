"""The k-nearest search breaks exact ties as the original's find_nearest: the earlier image stays."""

from __future__ import annotations

import heapq

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from protoprune.explain.nearest import k_nearest_patches

from .fixtures import identity_protopnet


def _images(distances: list[float]) -> TensorDataset:
    """1x1 images whose squared distance to a black prototype is `distances` (red = sqrt(d))."""
    x = torch.zeros(len(distances), 3, 1, 1)
    x[:, 0, 0, 0] = torch.tensor(distances).sqrt()
    return TensorDataset(x, torch.zeros(len(distances), dtype=torch.long))


def _original_heap(distances: list[float], k: int) -> list[int]:
    """Port of find_k_nearest_patches_to_prototypes (find_nearest.py) for one prototype: a heap of
    ImagePatchInfo ordered by negative distance, heappush until k, then heappushpop."""

    class ImagePatchInfo:
        def __init__(self, index: int, distance: float):
            self.index, self.negative_distance = index, -distance

        def __lt__(self, other):
            return self.negative_distance < other.negative_distance

    heap: list[ImagePatchInfo] = []
    for i, d in enumerate(distances):
        if len(heap) < k:
            heapq.heappush(heap, ImagePatchInfo(i, d))
        else:
            heapq.heappushpop(heap, ImagePatchInfo(i, d))
    heap.sort()
    return sorted(p.index for p in heap[::-1])


def _search(distances: list[float], k: int, batch_size: int):
    model = identity_protopnet(torch.zeros(1, 3), [0], 1)
    loader = DataLoader(_images(distances), batch_size=batch_size, shuffle=False)
    return k_nearest_patches(model, loader, k=k, progress=False)


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_a_later_image_at_the_same_distance_does_not_displace_an_earlier_one(batch_size) -> None:
    # the 4th image (index 4) ties the kept ones at 1.0: the original keeps images 1 and 2
    distances = [4.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    assert _original_heap(distances, 3) == [1, 2, 3]
    found = _search(distances, 3, batch_size)
    assert found.image_index[0].tolist() == [3, 1, 2]  # nearest first, ties in image order
    assert found.distances[0].tolist() == [0.0, 1.0, 1.0]


@pytest.mark.parametrize("batch_size", [1, 3, 7, 64])
def test_many_ties_keep_the_earliest_images_for_any_batching(batch_size) -> None:
    g = torch.Generator().manual_seed(0)
    distances = torch.randint(0, 4, (64,), generator=g).float().tolist()  # squares: exact ties
    distances = [d * d / 4 for d in distances]
    # brute force: every image ranked by (distance, index)
    expected = sorted(range(len(distances)), key=lambda i: (distances[i], i))[:6]
    found = _search(distances, 6, batch_size)
    assert found.image_index[0].tolist() == expected
