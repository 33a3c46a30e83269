"""check_data: opens every image and collects missing/corrupt files, counts lesions, finds leaks."""

from __future__ import annotations

import json

import pandas as pd
from data_fixtures import image_file

from protoprune.config import DataConfig
from protoprune.data.checks import check_data
from protoprune.data.ham10000 import HAM10000_CLASSES


def test_finds_missing_and_corrupt_images(ham_root):
    meta = pd.read_csv(ham_root / "HAM10000_metadata.csv")
    missing_id, corrupt_id = meta["image_id"].iloc[0], meta["image_id"].iloc[7]
    image_file(ham_root, missing_id).unlink()
    bad = image_file(ham_root, corrupt_id)
    bad.write_bytes(bad.read_bytes()[:60])
    cfg = DataConfig(dataset="ham10000", root=str(ham_root))

    report = check_data(cfg, seed=0, progress=False)

    assert not report.ok
    assert report.missing == [missing_id]
    assert [c["image_id"] for c in report.corrupt] == [corrupt_id]
    assert bad.name in report.corrupt[0]["problem"]
    assert report.n_checked == len(meta) - 1  # every image that is present was opened
    assert report.n_images == len(meta) - 1
    assert report.image_sizes == {"16x12": len(meta) - 2}
    md = report.to_markdown()
    assert "PROBLEMS FOUND" in md and missing_id in md and corrupt_id in md
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False and data["missing"] == [missing_id]


def test_partial_download_is_reported_but_ok(ham_root):
    meta = pd.read_csv(ham_root / "HAM10000_metadata.csv")
    gone = meta["image_id"].iloc[[1, 2]].tolist()
    for image_id in gone:
        image_file(ham_root, image_id).unlink()
    report = check_data(DataConfig(dataset="ham10000", root=str(ham_root)), progress=False)
    assert report.ok and report.missing == gone and report.corrupt == []
    assert "2 listed images are not on disk and were left out" in report.to_markdown()


def test_counts_lesions_per_class_and_split(ham_root):
    meta = pd.read_csv(ham_root / "HAM10000_metadata.csv")
    report = check_data(DataConfig(dataset="ham10000", root=str(ham_root)), progress=False)
    assert report.ok and report.leaked_groups == []
    assert report.groups_total == {c: 4 for c in HAM10000_CLASSES}
    assert sum(sum(v.values()) for v in report.groups.values()) == meta["lesion_id"].nunique()
    images = {s: sum(c.values()) for s, c in report.counts.items()}
    assert sum(images.values()) == len(meta)
    assert (
        "| mel |" in report.to_markdown() and "Lesions (groups) per class" in report.to_markdown()
    )


def test_split_file_that_leaks_a_lesion_is_flagged(ham_root, tmp_path):
    from protoprune.data import build_splits

    cfg = DataConfig(dataset="ham10000", root=str(ham_root))
    table = build_splits(cfg).split_table()
    lesion = table.groupby("group").size().idxmax()  # a lesion with several images
    rows = table.index[table["group"] == lesion]
    table.loc[rows[0], "split"] = "train"
    table.loc[rows[1:], "split"] = "test"
    path = tmp_path / "split.csv"
    table.to_csv(path, index=False)
    report = check_data(
        DataConfig(dataset="ham10000", root=str(ham_root), split_file=str(path)), progress=False
    )
    assert report.leaked_groups == [lesion] and not report.ok


def test_array_dataset_without_groups():
    from protoprune.data import build_splits

    report = check_data(DataConfig(dataset="bundled", max_per_split=10), progress=False)
    splits = build_splits(DataConfig(dataset="bundled", max_per_split=10))
    assert report.ok and report.groups is None
    # the splits training uses: max_per_split caps each of train, val and test at 10 images
    assert report.counts == {
        s: dict(zip(report.class_names, getattr(splits, s).class_counts().tolist(), strict=True))
        for s in ("train", "val", "test")
    }
    assert report.n_images == 30 and report.max_per_split == 10
    assert report.n_checked == 30 and report.image_sizes == {"28x28": 30}
    assert "capped at 10 images (data.max_per_split)" in report.to_markdown()
