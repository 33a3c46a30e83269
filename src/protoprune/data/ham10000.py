"""HAM10000 in its official layout: HAM10000_metadata.csv plus the JPEGs, split lesion-wise.

The official download (Harvard Dataverse doi:10.7910/DVN/DBW86T) ships the images in two
folders, HAM10000_images_part_1/ and HAM10000_images_part_2/; many mirrors merge them into
images/. Both layouts work unchanged. HAM10000 holds up to six images of one lesion, so the
split is by lesion_id (see splits.lesion_wise_split).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..config import data_root_fix
from ..errors import DataError
from .base import DataSplits, FileImageDataset
from .files import match_image_files
from .medmnist import DERMAMNIST_CLASSES
from .splits import split_dataset

METADATA_FILE = "HAM10000_metadata.csv"
# protoprune's class order for dermoscopy (= DermaMNIST's label order), HAM10000 dx codes
HAM10000_CLASSES = list(DERMAMNIST_CLASSES)
IMAGE_FOLDERS = (
    "images",
    "HAM10000_images_part_1",
    "HAM10000_images_part_2",
    "ham10000_images_part_1",  # the Kaggle mirror's lower-case copies
    "ham10000_images_part_2",
)
REQUIRED_COLUMNS = ("lesion_id", "image_id", "dx")
MASK_FOLDER = "HAM10000_segmentations_lesion_tschandl"  # Tschandl et al. 2020's lesion masks
LAYOUT_HINT = "<root>/images/ or <root>/HAM10000_images_part_1/ and <root>/HAM10000_images_part_2/"


def _metadata_path(root: str | Path) -> Path:
    root = Path(root).expanduser()
    path = root if root.is_file() else root / METADATA_FILE
    if not path.is_file():
        raise DataError(
            f"HAM10000 metadata {path} does not exist",
            data_root_fix(f"the folder holding {METADATA_FILE} and the image folders")
            + " (download: https://doi.org/10.7910/DVN/DBW86T)",
        )
    return path


def read_ham10000_metadata(path: str | Path) -> pd.DataFrame:
    """The metadata table, validated: required columns, known dx codes, unique image ids.

    Adds a `label` column (index into HAM10000_CLASSES).
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={c: str for c in REQUIRED_COLUMNS})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{path} is not a readable CSV ({exc})", "re-download HAM10000_metadata.csv"
        ) from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{path} lacks the column(s) {', '.join(missing)} (has {', '.join(map(str, df.columns))})",
            f"use the official {METADATA_FILE}, whose header starts lesion_id,image_id,dx",
        )
    for col in REQUIRED_COLUMNS:
        df[col] = df[col].str.strip()
        empty = df.index[df[col].isna() | (df[col] == "")]
        if len(empty):
            raise DataError(
                f"{path}: {len(empty)} row(s) have no {col} (first at data row {empty[0] + 1})",
                f"fill in {col} or remove those rows",
            )
    df["dx"] = df["dx"].str.lower()
    unknown = df.loc[~df["dx"].isin(HAM10000_CLASSES), "dx"].value_counts()
    if len(unknown):
        listed = ", ".join(f"{k!r} ({v} rows)" for k, v in unknown.items())
        raise DataError(
            f"{path} has unknown dx label(s) {listed}",
            f"use the HAM10000 codes {', '.join(HAM10000_CLASSES)}, or remove those rows",
        )
    dup = df.loc[df["image_id"].duplicated(), "image_id"].unique().tolist()
    if dup:
        raise DataError(
            f"{path} lists image id(s) more than once: {', '.join(dup[:5])}"
            f"{f' and {len(dup) - 5} more' if len(dup) > 5 else ''}",
            "keep one row per image (the official file has no duplicates)",
        )
    df["label"] = df["dx"].map({c: i for i, c in enumerate(HAM10000_CLASSES)})
    return df


def ham10000_table(root: str | Path, missing: str = "drop") -> tuple[pd.DataFrame, list[str]]:
    """The validated metadata rows whose image is on disk (with a `path` column) and the absent ids."""
    meta_path = _metadata_path(root)
    df = read_ham10000_metadata(meta_path)
    folders = [meta_path.parent / name for name in IMAGE_FOLDERS]
    paths, absent = match_image_files(
        df["image_id"].tolist(), folders, missing, str(meta_path), LAYOUT_HINT
    )
    df["path"] = paths
    return df[df["path"].notna()].reset_index(drop=True), absent


def _as_dataset(df: pd.DataFrame) -> FileImageDataset:
    return FileImageDataset(
        df["path"].tolist(),
        df["label"].to_numpy(),
        HAM10000_CLASSES,
        df["image_id"].tolist(),
        groups=df["lesion_id"].tolist(),
    )


def load_ham10000(root: str | Path, missing: str = "drop") -> FileImageDataset:
    """All HAM10000 images present under `root`, labelled by dx, grouped by lesion_id.

    `missing="drop"` keeps only rows whose image exists (logging how many were dropped), so a
    partial download works; `"error"` demands every listed image. Corrupt files are not opened
    here (that would read all 10,015 images): loading one raises a DataError naming it, and
    `protoprune.data.checks.check_data` opens them all and lists every problem.
    """
    return _as_dataset(ham10000_table(root, missing)[0])


def _mask_folder(root: Path) -> Path | None:
    """HAM10000's lesion segmentations when they sit next to the metadata, else None."""
    folder = _metadata_path(root).parent / MASK_FOLDER
    return folder if folder.is_dir() else None


def ham10000_splits(
    root: str | Path,
    ratios: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    split_file: str | Path | None = None,
    missing: str = "drop",
) -> DataSplits:
    """Lesion-wise, dx-stratified, seeded train/val/test split (or the split of `split_file`).

    `extra["missing_images"]` lists the metadata ids without an image file.
    """
    df, absent = ham10000_table(root, missing)
    full = _as_dataset(df)
    description = (
        f"HAM10000 {Path(root)}: {len(full)} images of {df['lesion_id'].nunique()} lesions"
        + (f" ({len(absent)} metadata rows without image left out)" if absent else "")
    )
    return split_dataset(
        full,
        ratios,
        seed,
        split_file,
        description=description,
        extra={"missing_images": absent, "mask_dir": _mask_folder(Path(root))},
        group_name="lesion",
    )
