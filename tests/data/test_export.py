"""write_image_folder: a torch Dataset written as files the imagefolder loader reads back exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from protoprune.data.export import write_image_folder
from protoprune.data.folders import imagefolder_splits
from protoprune.errors import DataError


class Items(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_pixels_and_labels_come_back_as_given(tmp_path) -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (12, 10, 3), dtype=np.uint8) for _ in range(6)]
    train = Items([(arrays[0], 0), (Image.fromarray(arrays[1]), 1), (torch.from_numpy(arrays[2]).permute(2, 0, 1) / 255.0, 2)])
    test = Items([(arrays[3], 2), (arrays[4], 1), (arrays[5][..., 0], 0)])  # a grey image too
    root = write_image_folder({"train": train, "test": test}, tmp_path / "data", ["c0", "c1", "c2"])
    back = np.asarray(Image.open(root / "train" / "c2" / "000002.png"))
    assert np.array_equal(back, arrays[2])  # a [0, 1] tensor rounds back to its bytes
    grey = np.asarray(Image.open(root / "test" / "c0" / "000002.png"))
    assert np.array_equal(grey, np.repeat(arrays[5][..., :1], 3, axis=2))
    splits = imagefolder_splits(root, seed=0)
    assert list(splits.class_names) == ["c0", "c1", "c2"]
    assert sorted(splits.test.targets.tolist()) == [0, 1, 2]
    assert not list(tmp_path.glob(".data.writing-*"))


def test_refuses_normalised_tensors_bad_labels_and_a_used_folder(tmp_path) -> None:
    normalised = Items([(torch.full((3, 4, 4), -1.5), 0)])
    with pytest.raises(DataError, match="looks normalised"):
        write_image_folder({"train": normalised}, tmp_path / "a", ["x"])
    assert not (tmp_path / "a").exists() and not list(tmp_path.glob(".a.writing-*"))
    with pytest.raises(DataError, match="label 3, outside 0..1"):
        write_image_folder({"train": Items([(np.zeros((4, 4, 3), np.uint8), 3)])}, tmp_path / "b", ["x", "y"])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "mine.txt").write_text("a user's file")
    with pytest.raises(DataError, match="not empty"):
        write_image_folder({"train": Items([(np.zeros((4, 4, 3), np.uint8), 0)])}, tmp_path / "c", ["x"])
    assert (tmp_path / "c" / "mine.txt").read_text() == "a user's file"
