"""HAM10000 in its real layouts: metadata validation, image lookup, missing/corrupt files, lesion-wise split."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pandas as pd
import pytest
from data_fixtures import class_color, ham_metadata, image_file, write_ham

from protoprune.config import DataConfig
from protoprune.data import DATASETS, build_splits, bundled_path
from protoprune.data.ham10000 import HAM10000_CLASSES, ham10000_splits, load_ham10000
from protoprune.errors import ConfigError, DataError


def test_loads_official_two_folder_layout(ham_root):
    meta = pd.read_csv(ham_root / "HAM10000_metadata.csv")
    ds = load_ham10000(ham_root)
    assert len(ds) == len(meta)
    assert ds.class_names == HAM10000_CLASSES
    assert ds.image_ids == meta["image_id"].tolist()
    assert ds.groups == meta["lesion_id"].tolist()
    expected = meta["dx"].map({c: i for i, c in enumerate(HAM10000_CLASSES)}).to_numpy()
    assert np.array_equal(ds.targets, expected)
    # the label really belongs to the file: each class was written in its own colour
    for i in (0, len(ds) // 2, len(ds) - 1):
        pixel = np.asarray(ds.load_image(i))[6, 8]
        assert np.abs(pixel.astype(int) - class_color(int(ds.targets[i]))).max() < 12


def test_loads_merged_images_layout(tmp_path):
    root = write_ham(tmp_path / "ham", ham_metadata(2), layout="images")
    assert len(load_ham10000(root)) == len(ham_metadata(2))


def test_partial_download_drops_missing_rows_with_warning(ham_root, caplog):
    meta = pd.read_csv(ham_root / "HAM10000_metadata.csv")
    gone = meta["image_id"].iloc[[0, 5]].tolist()
    for image_id in gone:
        image_file(ham_root, image_id).unlink()
    with caplog.at_level(logging.WARNING):
        ds = load_ham10000(ham_root)
    assert len(ds) == len(meta) - 2 and not set(gone) & set(ds.image_ids)
    assert (
        f"2 of {len(meta)} listed images are not on disk" in caplog.text and gone[0] in caplog.text
    )
    with pytest.raises(DataError, match=gone[0]) as err:
        load_ham10000(ham_root, missing="error")
    assert "restore these files" in err.value.fix


def test_no_images_at_all_is_an_error(ham_root):
    for folder in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        shutil.rmtree(ham_root / folder)
    with pytest.raises(DataError, match="none of the") as err:
        load_ham10000(ham_root)
    assert "HAM10000_images_part_1" in err.value.fix


def test_missing_metadata_names_the_file(tmp_path):
    with pytest.raises(DataError, match="HAM10000_metadata.csv"):
        load_ham10000(tmp_path)


def test_corrupt_jpeg_is_reported_with_its_name(ham_root):
    ds = load_ham10000(ham_root)
    bad = image_file(ham_root, ds.image_ids[3])
    bad.write_bytes(bad.read_bytes()[:40])  # truncated JPEG
    with pytest.raises(DataError, match=bad.name) as err:
        ds.load_image(3)
    assert "corrupt or truncated" in str(err.value)


def test_unknown_dx_is_named(ham_root):
    path = ham_root / "HAM10000_metadata.csv"
    meta = pd.read_csv(path)
    meta.loc[1, "dx"] = "melanoma"
    meta.to_csv(path, index=False)
    with pytest.raises(DataError, match="'melanoma' \\(1 rows\\)") as err:
        load_ham10000(ham_root)
    assert "akiec" in err.value.fix


def test_missing_column_is_named(ham_root):
    path = ham_root / "HAM10000_metadata.csv"
    pd.read_csv(path).drop(columns="lesion_id").to_csv(path, index=False)
    with pytest.raises(DataError, match="lacks the column\\(s\\) lesion_id"):
        load_ham10000(ham_root)


def test_duplicate_image_id_is_an_error(ham_root):
    path = ham_root / "HAM10000_metadata.csv"
    meta = pd.read_csv(path)
    pd.concat([meta, meta.iloc[[2]]]).to_csv(path, index=False)
    with pytest.raises(DataError, match=f"more than once: {meta['image_id'][2]}"):
        load_ham10000(ham_root)


def test_splits_are_lesion_wise_stratified_and_seeded(tmp_path):
    root = write_ham(tmp_path / "ham", ham_metadata(lesions_per_class=8, seed=2))
    a = ham10000_splits(root, (0.7, 0.15, 0.15), seed=0)
    b = ham10000_splits(root, (0.7, 0.15, 0.15), seed=0)
    c = ham10000_splits(root, (0.7, 0.15, 0.15), seed=1)
    lesions = {s: set(getattr(a, s).groups) for s in ("train", "val", "test")}
    assert not (
        lesions["train"] & lesions["val"]
        or lesions["train"] & lesions["test"]
        or lesions["val"] & lesions["test"]
    )
    assert a.test.image_ids == b.test.image_ids and a.val.image_ids == b.val.image_ids
    assert a.test.image_ids != c.test.image_ids
    # 8 lesions a class: at least one lesion of every class in each split
    for name in ("train", "val", "test"):
        assert (getattr(a, name).class_counts() > 0).all()
    assert "lesion-wise" in a.description
    assert len(a.train) + len(a.val) + len(a.test) == len(load_ham10000(root))


def test_registered_dataset_uses_config_and_split_file(ham_root, tmp_path):
    cfg = DataConfig(dataset="ham10000", root=str(ham_root), split_ratios=[0.5, 0.25, 0.25])
    splits = build_splits(cfg, seed=3)
    path = tmp_path / "split.csv"
    splits.split_table().to_csv(path, index=False)
    cfg_reuse = DataConfig(dataset="ham10000", root=str(ham_root), split_file=str(path))
    again = build_splits(cfg_reuse, seed=0)
    assert (
        again.test.image_ids == splits.test.image_ids
        and again.train.image_ids == splits.train.image_ids
    )
    with pytest.raises(ConfigError, match="data.root"):
        DATASETS.get("ham10000")(DataConfig(dataset="ham10000"), 0)


def test_bundled_ham10000_folder():
    root = bundled_path("ham10000")
    ds = load_ham10000(root, missing="error")
    assert len(ds) == 21 and ds.class_counts().tolist() == [3] * 7
    assert len(set(ds.groups)) == 21
    assert ds.load_image(0).size == (128, 96)
    splits = ham10000_splits(root, (0.7, 0.15, 0.15), seed=0)
    assert [len(splits.train), len(splits.val), len(splits.test)] == [14, 3, 4]
    ids = splits.split_table()["image_id"]
    assert ids.is_unique and len(ids) == 21
