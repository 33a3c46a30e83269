"""ISIC 2018 Task 3: one-hot ground truth -> protoprune's class order, official layouts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from data_fixtures import write_jpeg

from protoprune.config import DataConfig
from protoprune.data import build_splits
from protoprune.data.ham10000 import HAM10000_CLASSES
from protoprune.data.isic2018 import load_isic2018
from protoprune.errors import DataError

ISIC_ORDER = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]


def write_isic(folder, dx_codes, name="ISIC2018_Task3_Test_GroundTruth.csv", image_folder="images"):
    """Ground truth in the official one-hot format (floats, ISIC's column order) + one JPEG a row."""
    rows = []
    for i, dx in enumerate(dx_codes):
        image_id = f"ISIC_{34525 + i:07d}"
        onehot = {c: float(c == dx.upper()) for c in ISIC_ORDER}
        rows.append({"image": image_id, **onehot})
        write_jpeg(folder / image_folder / f"{image_id}.jpg", (10 * i % 255, 80, 120))
    df = pd.DataFrame(rows)
    df.to_csv(folder / name, index=False)
    return df


def test_one_hot_columns_map_to_protoprune_order(tmp_path):
    dx = ["mel", "nv", "bcc", "akiec", "bkl", "df", "vasc", "nv", "mel"]
    write_isic(tmp_path, dx)
    ds = load_isic2018(tmp_path)
    assert ds.class_names == HAM10000_CLASSES == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert [ds.class_names[t] for t in ds.targets] == dx
    assert ds.targets.tolist() == [4, 5, 1, 0, 2, 3, 6, 5, 4]
    assert ds.image_ids[0] == "ISIC_0034525" and ds.load_image(0).size == (16, 12)


def test_training_ground_truth_and_official_input_folder(tmp_path):
    write_isic(
        tmp_path,
        ["nv", "mel"],
        name="ISIC2018_Task3_Training_GroundTruth.csv",
        image_folder="ISIC2018_Task3_Training_Input",
    )
    ds = load_isic2018(tmp_path)
    assert [ds.class_names[t] for t in ds.targets] == ["nv", "mel"]


def test_images_next_to_csv_and_root_as_csv_file(tmp_path):
    write_isic(tmp_path, ["df", "vasc"], image_folder=".")
    ds = load_isic2018(tmp_path / "ISIC2018_Task3_Test_GroundTruth.csv")
    assert ds.targets.tolist() == [3, 6]


def test_not_one_hot_rows_are_named(tmp_path):
    df = write_isic(tmp_path, ["nv", "mel", "bkl"])
    df.loc[1, "NV"] = 1.0  # two diagnoses
    df.to_csv(tmp_path / "ISIC2018_Task3_Test_GroundTruth.csv", index=False)
    with pytest.raises(DataError, match="not one-hot.*ISIC_0034526"):
        load_isic2018(tmp_path)


def test_missing_class_column_and_ambiguous_files(tmp_path):
    df = write_isic(tmp_path, ["nv", "mel"], name="ISIC2018_Task3_Validation_GroundTruth.csv")
    df.drop(columns="VASC").to_csv(
        tmp_path / "ISIC2018_Task3_Validation_GroundTruth.csv", index=False
    )
    with pytest.raises(DataError, match="lacks the column\\(s\\) VASC"):
        load_isic2018(tmp_path)
    df.to_csv(tmp_path / "ISIC2018_Task3_Training_GroundTruth.csv", index=False)
    with pytest.raises(DataError, match="several ISIC 2018 ground-truth files"):
        load_isic2018(tmp_path)
    with pytest.raises(DataError, match="no ISIC 2018 Task 3 ground truth"):
        load_isic2018(tmp_path / "images")


def test_registered_split_is_stratified_by_image(tmp_path):
    dx = [c for c in HAM10000_CLASSES for _ in range(10)]
    write_isic(tmp_path, dx)
    splits = build_splits(
        DataConfig(dataset="isic2018", root=str(tmp_path), split_ratios=[0.6, 0.2, 0.2]), seed=0
    )
    for name in ("val", "test"):
        assert np.array_equal(getattr(splits, name).class_counts(), [2] * 7)
    assert splits.train.groups is None and len(splits.train) == 42
