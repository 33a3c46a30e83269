"""Seeded, stratified train/val/test splits that never put one group (lesion) in two splits.

HAM10000 holds several images of the same lesion; a split by image leaks lesions from training
into the test set and inflates every reported metric. Here whole groups are assigned to a split,
stratified by each group's label, with scikit-learn doing the stratified sampling. A split can
also be read back from the split.csv an earlier run wrote, so a run can be repeated exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.model_selection import train_test_split

from ..errors import ConfigError, DataError, not_a_file
from .base import DataSplits, ImageDataset, SubsetImageDataset

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    r = tuple(float(x) for x in ratios)
    if len(r) != 3 or any(x < 0 for x in r) or abs(sum(r) - 1) > 1e-6 or r[0] == 0:
        raise ConfigError(
            f"split ratios {list(ratios)} must be three non-negative numbers (train > 0) summing to 1",
            "for example --set data.split_ratios=[0.7,0.15,0.15]",
        )
    return r  # type: ignore[return-value]


def _holdout(labels: np.ndarray, fraction: float, seed: int, what: str) -> np.ndarray:
    """Boolean mask of the units held out: a `fraction` of them, stratified by label.

    Labels too rare to stratify (a single unit) are pooled; if stratification is still
    impossible (fewer held-out units than labels), the holdout is random and says so.
    """
    n = len(labels)
    mask = np.zeros(n, dtype=bool)
    if fraction <= 0 or n == 0:
        return mask
    if fraction >= 1:
        return ~mask
    strata = np.asarray(labels).astype(str)
    values, counts = np.unique(strata, return_counts=True)
    rare = np.isin(strata, values[counts < 2])
    # sklearn cannot stratify a label with one unit: pool such labels, or (if only one) fold
    # it into the most common label
    strata[rare] = "\0rare" if rare.sum() >= 2 else values[np.argmax(counts)]
    units = np.arange(n)
    try:
        _, held = train_test_split(units, test_size=fraction, random_state=seed, stratify=strata)
    except ValueError as exc:
        log.warning("the %s split is random, not stratified: %s", what, exc)
        try:
            _, held = train_test_split(units, test_size=fraction, random_state=seed)
        except ValueError as exc2:
            raise DataError(
                f"cannot hold out {fraction:.0%} of {n} groups for the {what} split ({exc2})",
                "use more data or other data.split_ratios",
            ) from None
    mask[held] = True
    return mask


def lesion_wise_split(
    table: pd.DataFrame,
    ratios: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    group_col: str = "lesion_id",
    label_col: str = "dx",
) -> pd.Series:
    """Assign each row to train/val/test so that no group spans two splits.

    Groups (not images) are split in `ratios`, stratified by the group's label (its most
    frequent one if a group mixes labels): test is held out first, then val from the rest.
    The result depends only on the groups, labels and seed, not on the row order, and every
    class with enough groups (about 1/ratio) appears in every split. Returns a Series of split
    names aligned with `table.index`.
    """
    r_train, r_val, r_test = _check_ratios(ratios)
    for col in (group_col, label_col):
        if col not in table.columns:
            raise DataError(
                f"cannot split: column {col!r} is missing (columns: {', '.join(map(str, table.columns))})",
                f"give a table with the group column {group_col!r} and the label column {label_col!r}",
            )
    if table[[group_col, label_col]].isna().any().any():
        raise DataError(
            f"cannot split: empty values in {group_col!r} or {label_col!r}",
            "fill in or remove the rows without a group or label",
        )
    by_group = table.groupby(group_col, sort=True)[label_col]
    group_label = by_group.first()
    mixed = by_group.nunique() > 1
    if mixed.any():
        group_label[mixed] = by_group.agg(lambda s: s.mode().iloc[0])[mixed]
    groups = group_label.index.to_numpy()
    labels = group_label.to_numpy()
    needed = sum(x > 0 for x in (r_train, r_val, r_test))
    if len(groups) < needed:
        raise DataError(
            f"cannot split {len(groups)} group(s) ({group_col}) into {needed} non-empty splits",
            "use more data, or set a split ratio to 0",
        )
    split = np.full(len(groups), "train", dtype=object)
    test = _holdout(labels, r_test, seed, "test")
    split[test] = "test"
    rest = np.flatnonzero(~test)
    val = _holdout(labels[rest], r_val / (r_train + r_val), seed, "val")
    split[rest[val]] = "val"
    assignment = pd.Series(split, index=groups)
    return pd.Series(
        assignment.loc[table[group_col].to_numpy()].to_numpy(), index=table.index, name="split"
    )


def complete_split(
    predefined: Sequence[str | None],
    labels: Sequence,
    ratios: Sequence[float],
    seed: int,
    groups: Sequence[str] | None = None,
) -> np.ndarray:
    """Fill in the splits a data set does not define by carving them out of its train rows.

    `predefined` names each row's official split (None: no official split). Splits that have no
    rows (e.g. CIFAR-10's val) are taken from the train rows in proportion to `ratios`: with an
    official test set and 70/15/15, val is 15/85 of the official train set. Without any official
    split the rows are split in `ratios` outright. Splits are by group when `groups` is given.
    """
    r = _check_ratios(ratios)
    pre = np.array([p if p is not None else "train" for p in predefined], dtype=object)
    unknown = set(pre) - set(SPLIT_NAMES)
    if unknown:
        raise ValueError(f"unknown split names {sorted(unknown)}")
    present = {s for s in SPLIT_NAMES if (pre == s).any()}
    carve = [r[0], r[1] if "val" not in present else 0.0, r[2] if "test" not in present else 0.0]
    if carve[1] == 0 and carve[2] == 0:
        return pre
    total = sum(carve)
    pool = np.flatnonzero(pre == "train")
    table = pd.DataFrame(
        {
            "group": np.asarray(groups, dtype=object)[pool]
            if groups is not None
            else pool.astype(str),
            "label": np.asarray(labels)[pool],
        }
    )
    carved = lesion_wise_split(table, [c / total for c in carve], seed, "group", "label")
    pre[pool] = carved.to_numpy()
    return pre


def stratified_split(labels: Sequence, ratios: Sequence[float], seed: int) -> np.ndarray:
    """Train/val/test names for rows without groups: a seeded split stratified by label."""
    return complete_split([None] * len(labels), labels, ratios, seed)


def read_split_file(path: str | Path) -> pd.DataFrame:
    """A split.csv (split, image_id, ...) as written by `DataSplits.split_table()`, validated."""
    path = Path(path).expanduser()
    fix = "set data.split_file to the split.csv of an earlier run on the same data, or unset it"
    if not path.is_file():
        raise DataError(not_a_file("split file", path), fix)
    try:
        df = pd.read_csv(path, dtype={"image_id": str, "split": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"split file {path} is not a readable CSV ({exc})", fix) from None
    missing = [c for c in ("split", "image_id") if c not in df.columns]
    if missing:
        raise DataError(f"split file {path} lacks the column(s) {', '.join(missing)}", fix)
    bad = sorted(set(df["split"].dropna()) - set(SPLIT_NAMES)) + (
        ["(empty)"] if df["split"].isna().any() else []
    )
    if bad:
        raise DataError(
            f"split file {path} has unknown split names {bad}", f"use only {', '.join(SPLIT_NAMES)}"
        )
    dup = df["image_id"][df["image_id"].duplicated()].unique().tolist()
    if dup:
        raise DataError(
            f"split file {path} lists image ids more than once: {', '.join(map(str, dup[:5]))}",
            "each image may be in one split only; " + fix,
        )
    return df


def split_from_file(dataset: ImageDataset, path: str | Path) -> np.ndarray:
    """Each row's split as given by a split file (None for rows the file does not list).

    Rows the file lists but the data lacks, or whose class differs, are errors: the split was
    made on other data. Rows the data has but the file lacks are left out (a run capped with
    max_per_split writes only the rows it used).
    """
    df = read_split_file(path)
    position = pd.Series(np.arange(len(dataset)), index=pd.Index(dataset.image_ids))
    unknown = df.loc[~df["image_id"].isin(position.index), "image_id"].tolist()
    if unknown:
        raise DataError(
            f"split file {path} lists {len(unknown)} image(s) that are not in the data set: "
            f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}",
            "use the split file with the data it was made on (same data.dataset and data.root), "
            "or unset data.split_file to make a new split",
        )
    rows = position.loc[df["image_id"]].to_numpy()
    if "dx" in df.columns:
        expected = np.asarray(dataset.class_names, dtype=object)[dataset.targets[rows]]
        differ = df["image_id"][expected != df["dx"].astype(str).to_numpy()].tolist()
        if differ:
            raise DataError(
                f"split file {path} gives other classes than the data for {len(differ)} image(s): "
                f"{', '.join(differ[:5])}",
                "the labels changed since the split was made; unset data.split_file to make a new split",
            )
    assignment = np.full(len(dataset), None, dtype=object)
    assignment[rows] = df["split"].to_numpy()
    return assignment


def make_splits(
    dataset: ImageDataset,
    assignment: Sequence[str | None],
    description: str,
    extra: dict | None = None,
) -> DataSplits:
    """DataSplits of the rows assigned to train/val/test (other rows are left out), in data order."""
    assignment = np.asarray(assignment, dtype=object)
    parts = {s: dataset.subset(np.flatnonzero(assignment == s)) for s in SPLIT_NAMES}
    return DataSplits(
        parts["train"],
        parts["val"],
        parts["test"],
        list(dataset.class_names),
        description,
        dict(extra or {}),
    )


def split_dataset(
    dataset: ImageDataset,
    ratios: Sequence[float],
    seed: int,
    split_file: str | Path | None = None,
    predefined: Sequence[str | None] | None = None,
    description: str = "",
    extra: dict | None = None,
    group_name: str = "group",
) -> DataSplits:
    """The one place a loader's full data set becomes DataSplits: reuse a split file or make a split.

    The split is by `dataset.groups` when the data set has groups (lesion-wise for HAM10000),
    stratified by class, seeded, and keeps any official splits given in `predefined`.
    """
    if split_file:
        assignment = split_from_file(dataset, split_file)
        how = f"split read from {split_file}"
    else:
        assignment = complete_split(
            predefined if predefined is not None else [None] * len(dataset),
            dataset.targets,
            ratios,
            seed,
            dataset.groups,
        )
        by = f"{group_name}-wise " if dataset.groups is not None else ""
        kept = " (official splits kept)" if predefined is not None else ""
        how = f"{by}stratified split {'/'.join(f'{r:g}' for r in ratios)}, seed {seed}{kept}"
    return make_splits(dataset, assignment, f"{description}, {how}" if description else how, extra)


class _PooledImageDataset(ImageDataset):
    """Several datasets with the same classes seen as one (to re-split a data set's splits)."""

    def __init__(self, parts: Sequence[ImageDataset]):
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        has_groups = all(p.groups is not None for p in self.parts)
        super().__init__(
            np.concatenate([p.targets for p in self.parts]),
            self.parts[0].class_names,
            [i for p in self.parts for i in p.image_ids],
            [g for p in self.parts for g in p.groups] if has_groups else None,  # type: ignore[union-attr]
        )

    def load_image(self, index: int) -> Image.Image:
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.parts[part].load_image(index - int(self.offsets[part]))


def resplit_from_file(splits: DataSplits, path: str | Path) -> DataSplits:
    """Re-split any DataSplits (e.g. MedMNIST's official split) as a split file says."""
    parts = [splits.train, splits.val, splits.test]
    parents = {id(p.parent) for p in parts if isinstance(p, SubsetImageDataset)}
    if len(parents) == 1 and all(isinstance(p, SubsetImageDataset) for p in parts):
        pool: ImageDataset = parts[0].parent  # type: ignore[attr-defined]
    else:
        pool = _PooledImageDataset(parts)
    if len(set(pool.image_ids)) != len(pool):
        raise DataError(
            "image ids repeat across the splits of this data set, so a split file cannot name rows",
            "unset data.split_file for this data set",
        )
    return make_splits(
        pool,
        split_from_file(pool, path),
        f"{splits.description}; split read from {path}",
        splits.extra,
    )
