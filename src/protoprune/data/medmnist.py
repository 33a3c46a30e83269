"""MedMNIST npz files (any 2D MedMNIST data set and size), with their official split."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..config import data_root_fix
from ..errors import DataError, not_a_file
from .base import ArrayImageDataset, DataSplits, integer_labels

# Short diagnosis codes in DermaMNIST's label order (MedMNIST INFO; HAM10000's dx column).
DERMAMNIST_CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]

_SPLITS = ("train", "val", "test")


def medmnist_class_names(path: Path, labels: np.ndarray, npz: np.lib.npyio.NpzFile) -> list[str]:
    """The npz's own class_names, DermaMNIST's for a `dermamnist*.npz`, else `0`..`K-1`.

    A label outside a known class list is an error (it would add a class and rename all of them).
    """
    if "class_names" in npz.files:
        return [str(c) for c in npz["class_names"]]
    if path.name.lower().startswith("dermamnist"):
        if labels.max() >= len(DERMAMNIST_CLASSES):
            raise DataError(
                f"{path} holds label {int(labels.max())}, but DermaMNIST has "
                f"{len(DERMAMNIST_CLASSES)} classes (0..{len(DERMAMNIST_CLASSES) - 1}: "
                f"{', '.join(DERMAMNIST_CLASSES)})",
                "fix the labels, or if this is another data set, rename the file (not "
                "dermamnist*.npz) or give it a class_names array",
            )
        return list(DERMAMNIST_CLASSES)
    return [str(i) for i in range(int(labels.max()) + 1)]


def _require_classes_everywhere(path: Path, labels: dict[str, np.ndarray], names: list[str]) -> None:
    """Classes inferred from the labels (no class list): each must occur in every split.

    A class absent from a split of an npz whose classes are only numbers more likely means wrong
    labels than a rare class, and its metrics there would be undefined: refuse rather than warn.
    """
    for split, y in labels.items():
        absent = sorted(set(range(len(names))) - set(np.unique(y).tolist()))
        if absent:
            raise DataError(
                f"{path}: class(es) {', '.join(map(str, absent))} of 0..{len(names) - 1} have no "
                f"images in the {split} split (classes are inferred from the labels)",
                "check the labels of every split, or give the npz a class_names array",
            )


def load_medmnist(path: str | Path) -> DataSplits:
    """Read a MedMNIST npz (`{split}_images`, `{split}_labels`) into train/val/test datasets."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            not_a_file("MedMNIST file", path),
            data_root_fix("a MedMNIST .npz file"),
        )
    try:
        arrays, names = _read_npz(path)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(
            f"{path} is not a readable npz file ({type(exc).__name__}: {exc})",
            "the file is truncated or corrupt: re-download the MedMNIST file",
        ) from None
    datasets = {}
    for split, (images, labels) in arrays.items():
        ids = [f"{split}_{i:05d}" for i in range(len(images))]
        try:
            datasets[split] = ArrayImageDataset(images, labels, names, ids)
        except DataError as exc:
            raise DataError(f"{path} {split}_images: {exc.problem}", exc.fix) from None
    return DataSplits(
        datasets["train"], datasets["val"], datasets["test"], names,
        description=f"MedMNIST {path.name}, official split",
    )


def _labels(path: Path, split: str, raw: np.ndarray) -> np.ndarray:
    try:
        return integer_labels(raw)
    except DataError as exc:
        raise DataError(f"{path} {split}_labels: {exc.problem}", exc.fix) from None


def _array(path: Path, npz: Any, key: str) -> np.ndarray:
    """npz[key], or a clear error for an object array (ragged images: sizes that differ)."""
    try:
        return npz[key]
    except ValueError:  # numpy refuses object arrays without pickle, which is never allowed
        raise DataError(
            f"{path} {key} is an object array, e.g. images that differ in size within the split",
            "store each split as one uint8 array (N, H, W, 3) of equal-sized images, or use "
            "image files in class folders (data.dataset: folder)",
        ) from None


def _read_npz(path: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    with np.load(path, allow_pickle=False) as npz:
        missing = [f"{s}_{k}" for s in _SPLITS for k in ("images", "labels") if f"{s}_{k}" not in npz.files]
        if missing:
            raise DataError(
                f"{path} lacks the MedMNIST arrays {', '.join(missing)} (has {', '.join(npz.files)})",
                "use a MedMNIST-format npz with train_/val_/test_ images and labels",
            )
        arrays = {s: (_array(path, npz, f"{s}_images"), _array(path, npz, f"{s}_labels"))
                  for s in _SPLITS}  # fmt: skip
        columns = {a[1].reshape(len(a[1]), -1).shape[1] for a in arrays.values()}
        if columns != {1}:
            raise DataError(
                f"{path} holds multi-label targets ({max(columns)} columns)",
                "protoprune classifies single-label data; use a single-label MedMNIST set",
            )
        labels = {s: _labels(path, s, a[1]) for s, a in arrays.items()}
        everything = np.concatenate(list(labels.values()))
        if everything.min() < 0:
            raise DataError(f"{path} holds negative labels ({int(everything.min())})", "labels are 0..K-1")
        names = medmnist_class_names(path, everything, npz)
        if "class_names" not in npz.files and not path.name.lower().startswith("dermamnist"):
            _require_classes_everywhere(path, labels, names)
    return {s: (arrays[s][0], labels[s]) for s in _SPLITS}, names
