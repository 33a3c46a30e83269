"""Lesion-wise splits: no group in two splits, stratified, seeded; split files read back exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from data_fixtures import ham_metadata

from protoprune.data import bundled_path
from protoprune.data.base import ArrayImageDataset
from protoprune.data.medmnist import load_medmnist
from protoprune.data.splits import (
    complete_split,
    lesion_wise_split,
    resplit_from_file,
    split_dataset,
    split_from_file,
    stratified_split,
)
from protoprune.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    """7 classes x 20 lesions, 1-3 images per lesion (about 280 rows)."""
    return ham_metadata(lesions_per_class=20, seed=1)


def _groups_by_split(table: pd.DataFrame, split: pd.Series) -> dict[str, set]:
    return {s: set(table.loc[split == s, "lesion_id"]) for s in ("train", "val", "test")}


def test_no_lesion_in_two_splits(table):
    split = lesion_wise_split(table, (0.7, 0.15, 0.15), seed=0)
    assert split.index.equals(table.index) and set(split) == {"train", "val", "test"}
    g = _groups_by_split(table, split)
    assert (
        not (g["train"] & g["val"]) and not (g["train"] & g["test"]) and not (g["val"] & g["test"])
    )
    # every image of a lesion lands in the same split
    assert (table.assign(split=split).groupby("lesion_id")["split"].nunique() == 1).all()


def test_lesion_ratios_and_every_class_in_every_split(table):
    split = lesion_wise_split(table, (0.7, 0.15, 0.15), seed=3)
    n_lesions = table["lesion_id"].nunique()
    g = _groups_by_split(table, split)
    assert abs(len(g["test"]) / n_lesions - 0.15) < 0.03
    assert abs(len(g["val"]) / n_lesions - 0.15) < 0.03
    per_class = table.assign(split=split).groupby(["dx", "split"])["lesion_id"].nunique().unstack()
    # 20 lesions per class: 3 each in val and test, stratified
    assert per_class.notna().all().all()
    assert per_class["test"].between(2, 4).all() and per_class["val"].between(2, 4).all()


def test_split_is_reproducible_and_seed_dependent(table):
    a = lesion_wise_split(table, (0.7, 0.15, 0.15), seed=7)
    b = lesion_wise_split(table, (0.7, 0.15, 0.15), seed=7)
    c = lesion_wise_split(table, (0.7, 0.15, 0.15), seed=8)
    assert a.equals(b)
    assert not a.equals(c)


def test_split_ignores_row_order(table):
    shuffled = table.sample(frac=1.0, random_state=0)
    a = lesion_wise_split(table, (0.7, 0.15, 0.15), seed=2)
    b = lesion_wise_split(shuffled, (0.7, 0.15, 0.15), seed=2)
    assert a.loc[table.index].equals(b.loc[table.index])


def test_zero_ratio_gives_empty_split(table):
    split = lesion_wise_split(table, (0.8, 0.0, 0.2), seed=0)
    assert set(split) == {"train", "test"}


def test_mixed_label_lesion_stays_together():
    df = pd.DataFrame(
        {
            "lesion_id": ["a", "a", "a"] + [f"g{i}" for i in range(30)],
            "dx": ["mel", "mel", "nv"] + ["mel", "nv"] * 15,
        }
    )
    split = lesion_wise_split(df, (0.6, 0.2, 0.2), seed=0)
    assert split.iloc[:3].nunique() == 1


def test_bad_inputs_raise():
    df = pd.DataFrame({"lesion_id": ["a", "b"], "dx": ["mel", "nv"]})
    with pytest.raises(ConfigError, match="split ratios"):
        lesion_wise_split(df, (0.5, 0.2, 0.2))
    with pytest.raises(DataError, match="column 'image_group'"):
        lesion_wise_split(df, (0.7, 0.15, 0.15), group_col="image_group")
    with pytest.raises(DataError, match="2 group"):
        lesion_wise_split(df, (0.7, 0.15, 0.15))


def test_complete_split_keeps_official_and_carves_val():
    labels = np.repeat(np.arange(5), 40)
    predefined = np.where(np.arange(200) % 4 == 0, "test", "train")
    split = complete_split(predefined, labels, (0.7, 0.15, 0.15), seed=0)
    assert (split[predefined == "test"] == "test").all()
    carved = split[predefined == "train"]
    assert set(carved) == {"train", "val"}
    # val is 15/85 of the official training rows, stratified: 150 * 0.176 = 26.5
    assert 25 <= (carved == "val").sum() <= 28
    assert len(np.unique(labels[split == "val"])) == 5


def test_stratified_split_without_groups():
    labels = np.repeat(np.arange(4), 50)
    split = stratified_split(labels, (0.6, 0.2, 0.2), seed=0)
    for s in ("val", "test"):
        assert np.bincount(labels[split == s], minlength=4).tolist() == [10, 10, 10, 10]


def _dataset(table: pd.DataFrame) -> ArrayImageDataset:
    images = np.zeros((len(table), 4, 4, 3), dtype=np.uint8)
    classes = sorted(table["dx"].unique())
    targets = table["dx"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    return ArrayImageDataset(
        images, targets, classes, table["image_id"].tolist(), groups=table["lesion_id"].tolist()
    )


def test_split_file_round_trip(table, tmp_path):
    ds = _dataset(table)
    splits = split_dataset(ds, (0.7, 0.15, 0.15), seed=5)
    path = tmp_path / "split.csv"
    splits.split_table().to_csv(path, index=False)
    again = split_dataset(ds, (0.7, 0.15, 0.15), seed=99, split_file=path)
    for name in ("train", "val", "test"):
        assert getattr(again, name).image_ids == getattr(splits, name).image_ids
    assert str(path) in again.description


def test_split_file_errors(table, tmp_path):
    ds = _dataset(table)
    table_out = split_dataset(ds, (0.7, 0.15, 0.15), seed=0).split_table()
    path = tmp_path / "split.csv"

    table_out.assign(
        image_id=table_out["image_id"].where(table_out.index != 0, "ISIC_9999999")
    ).to_csv(path, index=False)
    with pytest.raises(DataError, match="ISIC_9999999"):
        split_from_file(ds, path)

    wrong = table_out.copy()
    wrong.loc[0, "dx"] = "vasc" if wrong.loc[0, "dx"] != "vasc" else "mel"
    wrong.to_csv(path, index=False)
    with pytest.raises(DataError, match="other classes"):
        split_from_file(ds, path)

    pd.concat([table_out, table_out.iloc[:1]]).to_csv(path, index=False)
    with pytest.raises(DataError, match="more than once"):
        split_from_file(ds, path)

    table_out.assign(split="holdout").to_csv(path, index=False)
    with pytest.raises(DataError, match="holdout"):
        split_from_file(ds, path)

    table_out.drop(columns="split").to_csv(path, index=False)
    with pytest.raises(DataError, match="lacks the column"):
        split_from_file(ds, path)

    with pytest.raises(DataError, match="does not exist"):
        split_from_file(ds, tmp_path / "nope.csv")


def test_split_file_subset_leaves_other_rows_out(table, tmp_path):
    ds = _dataset(table)
    full = split_dataset(ds, (0.7, 0.15, 0.15), seed=0).split_table()
    path = tmp_path / "split.csv"
    full.iloc[::2].to_csv(path, index=False)
    again = split_dataset(ds, (0.7, 0.15, 0.15), seed=0, split_file=path)
    assert len(again.train) + len(again.val) + len(again.test) == len(full.iloc[::2])


def test_resplit_from_file_moves_medmnist_rows(tmp_path):
    splits = load_medmnist(bundled_path("dermamnist_subset.npz"))
    table = splits.split_table()
    moved = table["image_id"].str.startswith("val_")
    table.loc[moved, "split"] = "train"
    path = tmp_path / "split.csv"
    table[~table["image_id"].str.startswith("test_")].to_csv(path, index=False)
    again = resplit_from_file(splits, path)
    assert len(again.train) == len(splits.train) + len(splits.val)
    assert len(again.val) == 0 and len(again.test) == 0
    i = again.train.image_ids.index(splits.val.image_ids[0])
    assert np.array_equal(
        np.asarray(again.train.load_image(i)), np.asarray(splits.val.load_image(0))
    )


@pytest.mark.parametrize("n", [3, 50, 97, 100, 120])
def test_cap_keeps_n_images_even_close_to_the_split_size(n):
    """max_per_split just under a split's size leaves fewer images out than there are classes:
    the cap must still give exactly n images (it fell back to an unstratified draw)."""
    from protoprune.data.loaders import _cap

    rng = np.random.default_rng(0)
    targets = np.repeat(np.arange(7), [40, 20, 10, 10, 8, 7, 5])  # 100 images, 7 classes
    ds = ArrayImageDataset(
        rng.integers(0, 255, (100, 4, 4, 3), dtype=np.uint8), targets, [f"c{i}" for i in range(7)]
    )
    capped = _cap(ds, n, seed=0)
    assert len(capped) == min(n, 100)
    assert _cap(ds, n, seed=0).image_ids == capped.image_ids  # seeded
