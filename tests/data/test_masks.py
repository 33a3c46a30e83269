"""Lesion masks travel with the data: HAM10000's own segmentation folder is found, masks are read
as grey (the inverted-palette PNGs), resized by nearest neighbour, reported by check-data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_fixtures import ham_metadata, write_ham
from PIL import Image

from protoprune.config import DataConfig
from protoprune.data import build_splits
from protoprune.data.checks import check_data
from protoprune.data.ham10000 import MASK_FOLDER
from protoprune.errors import DataError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ham10000" / MASK_FOLDER


def _write_masks(root: Path, ids: list[str], skip: int = 0) -> dict[str, np.ndarray]:
    """A rectangle of known area per image (16 x 12 px images): left half x top 6 rows + k columns."""
    folder = root / MASK_FOLDER
    folder.mkdir()
    truth = {}
    for k, image_id in enumerate(ids[skip:]):
        m = np.zeros((36, 48), np.uint8)  # 3x the image, as HAM10000's 600 x 450 masks
        m[:18, : 3 * (1 + k % 8)] = 255
        Image.fromarray(m).save(folder / f"{image_id}_segmentation.png")
        truth[image_id] = m > 127
    return truth


def test_ham10000_masks_are_found_resized_and_reported(tmp_path):
    meta = ham_metadata(2)
    root = write_ham(tmp_path / "ham", meta)
    truth = _write_masks(root, meta["image_id"].tolist(), skip=1)
    cfg = DataConfig(dataset="ham10000", root=str(root), split_ratios=[0.6, 0.2, 0.2])
    splits = build_splits(cfg, seed=0)
    assert all(getattr(splits, s).mask_dir == root / MASK_FOLDER for s in ("train", "val", "test"))
    ds = splits.train
    i = next(i for i, x in enumerate(ds.image_ids) if x in truth)
    full = truth[ds.image_ids[i]]
    assert np.array_equal(ds.load_mask(i), full)
    small = ds.load_mask(i, (16, 12))  # nearest neighbour at 1/3: every third pixel
    assert small.shape == (12, 16) and np.array_equal(small, full[1::3, 1::3])
    report = check_data(cfg, seed=0, progress=False)
    masks = report.masks
    assert masks["found"] == len(meta) - 1 and masks["missing"] == [meta["image_id"].iloc[0]]
    areas = [t.mean() for t in truth.values()]
    assert masks["area"]["all"]["mean"] == pytest.approx(np.mean(areas))
    assert "## Lesion masks" in report.to_markdown() and report.ok
    none = check_data(DataConfig(**{**cfg.__dict__, "masks": "none"}), seed=0, progress=False)
    assert none.masks is None


def test_unreadable_mask_is_reported_and_a_bad_folder_refused(tmp_path):
    meta = ham_metadata(2)
    root = write_ham(tmp_path / "ham", meta)
    _write_masks(root, meta["image_id"].tolist())
    bad = root / MASK_FOLDER / f"{meta['image_id'].iloc[3]}_segmentation.png"
    bad.write_bytes(b"not a png")
    report = check_data(DataConfig(dataset="ham10000", root=str(root), split_ratios=[0.6, 0.2, 0.2]),
                        seed=0, progress=False)  # fmt: skip
    assert [u["image_id"] for u in report.masks["unreadable"]] == [meta["image_id"].iloc[3]]
    assert not report.ok
    with pytest.raises(DataError, match="segmentation.png") as err:
        build_splits(DataConfig(dataset="ham10000", root=str(root), masks=str(tmp_path)), 0)
    assert "auto" in err.value.fix


@pytest.mark.skipif(not SHARED.is_dir(), reason="the team's HAM10000 masks are not next to this checkout")
def test_real_palette_masks_read_as_lesion_not_inverted(tmp_path):
    """HAM10000 ships 402 palette PNGs whose palette is inverted (index 0 is white): read as raw
    indices their lesion would be the background. Read as grey, the lesion is the minority of
    pixels in the middle of the image, as in the plain greyscale masks."""
    palette, grey = [], []
    for path in sorted(SHARED.glob("*.png")):
        with Image.open(path) as im:
            (palette if im.mode == "P" else grey).append(path)
        if len(palette) >= 3 and len(grey) >= 3:
            break
    assert palette, "expected palette-mode masks in HAM10000"
    from protoprune.data.base import read_mask

    for path in palette[:3] + grey[:3]:
        mask = read_mask(path.parent, path.name.replace("_segmentation.png", ""))
        h, w = mask.shape
        assert (h, w) == (450, 600) and 0.0 < mask.mean() < 0.9
        assert mask[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3].mean() > mask.mean()
    with Image.open(palette[0]) as im:
        raw = np.asarray(im) > 127  # the wrong reading: indices, not grey levels
    right = read_mask(palette[0].parent, palette[0].name.replace("_segmentation.png", ""))
    assert np.array_equal(raw, ~right)  # read as indices, every pixel is the other way round
