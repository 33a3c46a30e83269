"""ISIC 2018 Task 3 (lesion diagnosis) in its official layout, mainly as an external test set.

The ground truth is a one-hot CSV (image, MEL, NV, BCC, AKIEC, BKL, DF, VASC), named
ISIC2018_Task3_Test_GroundTruth.csv (or ..._Training_/..._Validation_GroundTruth.csv); images
sit in images/, next to the CSV, or in the official ISIC2018_Task3_*_Input/ folder. The seven
classes are HAM10000's, mapped to protoprune's order so a HAM10000 model can be tested as is.
ISIC 2018 gives no lesion ids, so its DATASETS entry splits by image (stratified, seeded).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import data_root_fix
from ..errors import DataError
from .base import DataSplits, FileImageDataset
from .files import match_image_files
from .ham10000 import HAM10000_CLASSES
from .splits import split_dataset

TEST_GROUND_TRUTH = "ISIC2018_Task3_Test_GroundTruth.csv"
GROUND_TRUTH_PATTERN = "ISIC2018_Task3_*GroundTruth.csv"
# ISIC column -> protoprune class (HAM10000 dx code)
ISIC2018_COLUMNS = {
    "MEL": "mel",
    "NV": "nv",
    "BCC": "bcc",
    "AKIEC": "akiec",
    "BKL": "bkl",
    "DF": "df",
    "VASC": "vasc",
}
LAYOUT_HINT = "<root>/images/, next to the ground-truth CSV, or <root>/ISIC2018_Task3_<part>_Input/"


def find_ground_truth(root: str | Path) -> Path:
    """The ground-truth CSV: `root` itself, or the one ISIC2018_Task3_*GroundTruth.csv in it.

    The official test file wins when several are present; otherwise more than one is ambiguous.
    """
    root = Path(root).expanduser()
    if root.is_file():
        return root
    fix = (
        f"set data.root to the folder holding {TEST_GROUND_TRUTH} (or another "
        f"{GROUND_TRUTH_PATTERN}) and the images, or to the CSV file itself"
    )
    if not root.is_dir():
        raise DataError(f"ISIC 2018 folder {root} does not exist", data_root_fix(
            f"the folder holding {TEST_GROUND_TRUTH} and the images"))  # fmt: skip
    found = sorted(root.glob(GROUND_TRUTH_PATTERN)) + sorted(root.glob(f"*/{GROUND_TRUTH_PATTERN}"))
    tests = [p for p in found if p.name == TEST_GROUND_TRUTH]
    if tests:
        return tests[0]
    if len(found) == 1:
        return found[0]
    if not found:
        raise DataError(f"no ISIC 2018 Task 3 ground truth ({GROUND_TRUTH_PATTERN}) in {root}", fix)
    raise DataError(
        f"several ISIC 2018 ground-truth files in {root}: {', '.join(p.name for p in found)}",
        "set data.root to the CSV file you mean",
    )


def read_isic2018_ground_truth(path: str | Path) -> pd.DataFrame:
    """image_id, dx and label (index into HAM10000_CLASSES) from the one-hot ground truth."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"image": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{path} is not a readable CSV ({exc})", "re-download the ground-truth file"
        ) from None
    missing = [c for c in ("image", *ISIC2018_COLUMNS) if c not in df.columns]
    if missing:
        raise DataError(
            f"{path} lacks the column(s) {', '.join(missing)} (has {', '.join(map(str, df.columns))})",
            "use the official ground truth with columns image,MEL,NV,BCC,AKIEC,BKL,DF,VASC",
        )
    onehot = df[list(ISIC2018_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy()
    valid = np.isin(onehot, (0.0, 1.0)).all(axis=1) & (np.nan_to_num(onehot).sum(axis=1) == 1)
    if not valid.all():
        bad = df["image"][~valid].tolist()
        raise DataError(
            f"{path}: {len(bad)} row(s) are not one-hot (exactly one 1, the rest 0): {', '.join(map(str, bad[:5]))}",
            "fix those rows; each image has exactly one diagnosis",
        )
    image_ids = df["image"].str.strip()
    dup = image_ids[image_ids.duplicated()].unique().tolist()
    if dup:
        raise DataError(
            f"{path} lists image id(s) more than once: {', '.join(dup[:5])}",
            "keep one row per image",
        )
    dx = np.asarray(list(ISIC2018_COLUMNS.values()))[onehot.argmax(axis=1)]
    labels = pd.Series(dx).map({c: i for i, c in enumerate(HAM10000_CLASSES)}).to_numpy()
    return pd.DataFrame({"image_id": image_ids, "dx": dx, "label": labels})


def isic2018_table(root: str | Path, missing: str = "drop") -> tuple[pd.DataFrame, list[str]]:
    """Ground-truth rows whose image is on disk (with a `path` column) and the absent ids."""
    csv = find_ground_truth(root)
    df = read_isic2018_ground_truth(csv)
    folders = [
        csv.parent / "images",
        csv.parent,
        *sorted(csv.parent.glob("ISIC2018_Task3_*_Input")),
    ]
    if csv.parent.parent != csv.parent:  # the official zips nest the CSV one folder down
        folders += [
            csv.parent.parent / "images",
            *sorted(csv.parent.parent.glob("ISIC2018_Task3_*_Input")),
        ]
    paths, absent = match_image_files(
        df["image_id"].tolist(), folders, missing, str(csv), LAYOUT_HINT
    )
    df["path"] = paths
    return df[df["path"].notna()].reset_index(drop=True), absent


def load_isic2018(root: str | Path, missing: str = "drop") -> FileImageDataset:
    """The ISIC 2018 images present under `root` as one dataset (an external test set)."""
    df, _ = isic2018_table(root, missing)
    return FileImageDataset(
        df["path"].tolist(), df["label"].to_numpy(), HAM10000_CLASSES, df["image_id"].tolist()
    )


def isic2018_splits(
    root: str | Path,
    ratios: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    split_file: str | Path | None = None,
    missing: str = "drop",
) -> DataSplits:
    """A stratified, seeded split by image (ISIC 2018 has no lesion ids), or a split file's."""
    df, absent = isic2018_table(root, missing)
    full = FileImageDataset(
        df["path"].tolist(), df["label"].to_numpy(), HAM10000_CLASSES, df["image_id"].tolist()
    )
    description = f"ISIC 2018 Task 3 {Path(root)}: {len(full)} images" + (
        f" ({len(absent)} ground-truth rows without image left out)" if absent else ""
    )
    return split_dataset(
        full, ratios, seed, split_file, description=description, extra={"missing_images": absent}
    )
