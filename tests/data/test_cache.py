"""The input pipeline's pixel sources: JPEG draft decoding, memory and disk caches, loader defaults.

The images are real dermoscopy photographs (ISIC 2018 test set) upsampled to the 600 x 450 of the
original HAM10000/ISIC JPEGs, so the draft decode meets the scales it meets in real use.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from protoprune.config import config_from_dict
from protoprune.data import cache as cache_mod
from protoprune.data.base import ArrayImageDataset, FileImageDataset, open_rgb
from protoprune.data.cache import with_pixel_source
from protoprune.data.loaders import loader_settings
from protoprune.data.transforms import build_transform
from protoprune.errors import ConfigError

ISIC = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "isic2018-task3-test" / "images"
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> list[Path]:
    sources = sorted(ISIC.glob("*.jpg"))[:6]
    if len(sources) < 6:
        pytest.skip("the ISIC 2018 test images are not available")
    out = tmp_path_factory.mktemp("jpg600")
    paths = []
    for p in sources:
        q = out / p.name
        Image.open(p).convert("RGB").resize((600, 450), Image.LANCZOS).save(q, quality=90)
        paths.append(q)
    return paths


def dataset(paths: list[Path]) -> FileImageDataset:
    return FileImageDataset(paths, [i % 2 for i in range(len(paths))], ["a", "b"])


def items(ds, transform, seed: int | None = None) -> list[torch.Tensor]:
    """Every transformed image; with `seed`, the augmentation's draws seeded per image."""
    ds = ds.with_transform(transform)
    out = []
    for i in range(len(ds)):
        if seed is not None:
            torch.manual_seed(seed + i)
        out.append(ds[i][0])
    return out


def test_draft_decodes_the_smallest_scale_that_keeps_the_target_size(jpegs, tmp_path) -> None:
    # 600 x 450: 1/2 (300 x 225) is the last scale with both sides >= 224; 1/8 (75 x 57) for 28
    assert open_rgb(jpegs[0], draft=(224, 224)).size == (300, 225)
    assert open_rgb(jpegs[0], draft=(28, 28)).size == (75, 57)
    assert open_rgb(jpegs[0], draft=(300, 300)).size == (600, 450)  # 1/2 would be too small
    png = tmp_path / "a.png"
    Image.open(jpegs[0]).save(png)
    assert open_rgb(png, draft=(28, 28)).size == (600, 450)  # only JPEG has reduced decoding


@pytest.mark.parametrize(("size", "mean_tol", "p99_tol"), [(224, 0.5, 3), (28, 1.5, 10)])
def test_draft_decode_is_close_to_full_decode_and_resize(jpegs, size, mean_tol, p99_tol) -> None:
    """Tolerance in 0-255 levels, measured on 40 such images: 224 px mean 0.36, 99th pct 2;
    28 px mean 1.03, 99th pct 8 (libjpeg's DCT scaling against PIL's antialiased bilinear)."""
    ds = dataset(jpegs)
    full = np.stack([np.asarray(ds.load_resized(i, size), np.int16) for i in range(len(ds))])
    draft = np.stack([np.asarray(ds.load_resized(i, size, draft=True), np.int16) for i in range(len(ds))])
    direct = np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR),
                                  np.int16) for p in jpegs])  # fmt: skip
    np.testing.assert_array_equal(full, direct)  # the full path is PIL's own decode + resize
    diff = np.abs(full - draft)
    assert diff.mean() <= mean_tol and np.percentile(diff, 99) <= p99_tol
    assert diff.max() > 0  # a reduced decode really happened


@pytest.mark.parametrize("mode", ["memory", "disk"])
@pytest.mark.parametrize("draft", [False, True])
def test_cached_tensors_equal_uncached_with_and_without_augmentation(jpegs, tmp_path, mode, draft) -> None:
    ds = dataset(jpegs)
    cached = with_pixel_source(ds, 64, mode, draft, tmp_path / "cache", "train")
    plain = with_pixel_source(ds, 64, "none", draft)
    assert cached.pixels is not None and (plain.pixels is not None) == draft
    t_eval = build_transform(64, MEAN, STD, train=False)
    t_train = build_transform(64, MEAN, STD, train=True)
    for a, b in zip(items(cached, t_eval), items(plain, t_eval), strict=True):
        assert torch.equal(a, b)
    # augmentation runs after the cache: same draws, same tensors; other draws, other tensors
    for a, b in zip(items(cached, t_train, 0), items(plain, t_train, 0), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(items(cached, t_train, 0)[0], items(cached, t_train, 1)[0])
    assert cached.load_image(0).size == (600, 450)  # rendering still gets the stored image


def test_disk_cache_is_reused_and_rebuilt_when_a_file_or_the_size_changes(jpegs, tmp_path, monkeypatch) -> None:
    paths = []
    for p in jpegs:  # a copy the test may edit
        paths.append(tmp_path / p.name)
        paths[-1].write_bytes(p.read_bytes())
    folder = tmp_path / "cache"
    builds = []
    real = cache_mod._decode_into
    monkeypatch.setattr(cache_mod, "_decode_into", lambda *a, **k: (builds.append(1), real(*a, **k)))

    def cached(size: int):
        ds = with_pixel_source(dataset(paths), size, "disk", False, folder, "train")
        return ds, ds.pixels.path

    ds, first = cached(32)
    assert len(builds) == 1 and first.is_file()
    assert [f.name for f in folder.iterdir() if f.name.startswith(".")] == []  # no leftovers
    assert cached(32)[1] == first and len(builds) == 1  # unchanged: read back, not rebuilt

    Image.new("RGB", (600, 450), (200, 10, 30)).save(paths[2], quality=90)  # another image
    os.utime(paths[2], ns=(1, 1))
    ds, second = cached(32)
    assert second != first and len(builds) == 2
    assert np.abs(np.asarray(ds[2][0], np.int16) - (200, 10, 30)).max() <= 3  # the new pixels
    assert np.array_equal(np.asarray(ds[0][0]), np.asarray(dataset(jpegs).load_resized(0, 32)))

    third = cached(48)[1]
    assert third not in (first, second) and len(builds) == 3
    assert np.load(third, mmap_mode="r").shape == (6, 48, 48, 3)


def test_a_damaged_cache_file_is_rebuilt(jpegs, tmp_path) -> None:
    ds = with_pixel_source(dataset(jpegs), 32, "disk", False, tmp_path, "val")
    path = ds.pixels.path
    path.write_bytes(path.read_bytes()[:200])  # truncated, e.g. by a full disk
    again = with_pixel_source(dataset(jpegs), 32, "disk", False, tmp_path, "val")
    assert again.pixels.path == path and len(again.pixels) == 6
    assert np.array_equal(np.asarray(again[5][0]), np.asarray(dataset(jpegs).load_resized(5, 32)))


def test_disk_cache_travels_to_workers_as_its_path(jpegs, tmp_path) -> None:
    ds = with_pixel_source(dataset(jpegs), 32, "disk", False, tmp_path, "train")
    blob = pickle.dumps(ds.pixels)
    assert len(blob) < 1000  # 6 x 32 x 32 x 3 = 18 kB of pixels are not in it
    assert np.array_equal(np.asarray(pickle.loads(blob)(3)), np.asarray(ds.pixels(3)))


def test_array_images_are_cached_too() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 20, 20, 3), dtype=np.uint8)
    ds = ArrayImageDataset(images, [0, 1, 0, 1, 0], ["a", "b"])
    t = build_transform(16, MEAN, STD)
    cached = with_pixel_source(ds, 16, "memory")
    assert all(torch.equal(a, b) for a, b in zip(items(cached, t), items(ds, t), strict=True))
    changed = images.copy()
    changed[3, 0, 0] ^= 1
    sig = ds.image_signatures()
    new = ArrayImageDataset(changed, [0] * 5, ["a", "b"]).image_signatures()
    assert [a != b for a, b in zip(sig, new, strict=True)] == [False, False, False, True, False]


def test_bad_cache_values_are_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"data": {"cache": "ram"}})
    assert "data.cache" in str(err.value) and "none, memory, disk" in str(err.value)
    with pytest.raises(ConfigError, match="data.cache"):
        with_pixel_source(dataset([]), 32, "gpu")
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    with pytest.raises(ConfigError, match="data.cache_dir"):
        with_pixel_source(ArrayImageDataset(np.zeros((1, 4, 4, 3), np.uint8), [0], ["a"]), 4, "disk",
                          folder=blocker / "cache")  # fmt: skip
    with pytest.raises(ConfigError, match="data.num_workers"):
        config_from_dict({"data": {"num_workers": -1}})


def test_loader_defaults_suit_the_device(monkeypatch) -> None:
    d = config_from_dict({}).data
    assert d.num_workers is None  # auto
    assert loader_settings(d, "cpu") == {"num_workers": 0, "pin_memory": False, "persistent_workers": False}
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(16)))
    assert loader_settings(d, "cuda:0") == {"num_workers": 8, "pin_memory": True, "persistent_workers": True}
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(4)))
    assert loader_settings(d, "cuda")["num_workers"] == 3
    d.num_workers = 2
    assert loader_settings(d, "cpu") == {"num_workers": 2, "pin_memory": False, "persistent_workers": True}


def test_numpy_collation_equals_default_collate() -> None:
    from torch.utils.data import default_collate

    from protoprune.data.loaders import collate_in_numpy

    g = torch.Generator().manual_seed(0)
    batch = [(torch.randn(3, 9, 7, generator=g), i % 3) for i in range(5)]
    ours, ref = collate_in_numpy(batch), default_collate(batch)
    assert torch.equal(ours[0], ref[0]) and ours[0].dtype == ref[0].dtype and ours[0].is_contiguous()
    assert torch.equal(ours[1], ref[1]) and ours[1].dtype == ref[1].dtype == torch.int64
    half = [(t.half(), y) for t, y in batch]
    assert torch.equal(collate_in_numpy(half)[0], default_collate(half)[0])
    assert collate_in_numpy(half)[0].dtype == torch.float16
    bf16 = [(t.bfloat16(), y) for t, y in batch]  # numpy has no bfloat16: torch stacks those
    assert torch.equal(collate_in_numpy(bf16)[0], default_collate(bf16)[0])
