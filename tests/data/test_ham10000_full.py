"""The lesion-wise split on the full HAM10000 (the team's copy, when it sits beside this checkout):
no lesion in two splits, every class in every split, about 70 / 15 / 15 of the lesions per class,
the same split for the same seed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from protoprune.config import DataConfig
from protoprune.data import build_splits

ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ham10000"
pytestmark = pytest.mark.skipif(not (ROOT / "HAM10000_metadata.csv").is_file(),
                                reason="the full HAM10000 is not beside this checkout")  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1])
def test_full_ham10000_split_keeps_every_lesion_in_one_split(seed):
    splits = build_splits(DataConfig(dataset="ham10000", root=str(ROOT), masks="none"), seed)
    table = splits.split_table()
    meta = pd.read_csv(ROOT / "HAM10000_metadata.csv")
    assert len(table) == len(meta) == 10015
    lesion = dict(zip(meta["image_id"], meta["lesion_id"]))
    table["lesion"] = table["image_id"].map(lesion)  # from the metadata, not the loader's groups
    assert (table.groupby("lesion")["split"].nunique() == 1).all()
    per = table.drop_duplicates("lesion").groupby(["dx", "split"]).size().unstack()
    assert (per > 0).all().all()
    share = per.div(per.sum(axis=1), axis=0)
    assert share["train"].between(0.64, 0.76).all() and share["test"].between(0.1, 0.2).all(), share
    again = build_splits(DataConfig(dataset="ham10000", root=str(ROOT), masks="none"), seed).split_table()
    assert again["split"].tolist() == table["split"].tolist()
