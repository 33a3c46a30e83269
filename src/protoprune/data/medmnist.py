"""MedMNIST npz files (any 2D MedMNIST data set and size), with their official split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import ArrayImageDataset, DataSplits

# Short diagnosis codes in DermaMNIST's label order (MedMNIST INFO; HAM10000's dx column).
DERMAMNIST_CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]

_SPLITS = ("train", "val", "test")


def medmnist_class_names(path: Path, n_classes: int, npz: np.lib.npyio.NpzFile) -> list[str]:
    if "class_names" in npz.files:
        return [str(c) for c in npz["class_names"]]
    if path.name.lower().startswith("dermamnist") and n_classes <= len(DERMAMNIST_CLASSES):
        return list(DERMAMNIST_CLASSES)
    return [str(i) for i in range(n_classes)]


def load_medmnist(path: str | Path) -> DataSplits:
    """Read a MedMNIST npz (`{split}_images`, `{split}_labels`) into train/val/test datasets."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"MedMNIST file {path} does not exist",
            "set data.root to a MedMNIST .npz file such as ../shared/data/dermamnist/dermamnist.npz",
        )
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable npz file ({exc})", "re-download the MedMNIST file") from None
    with npz:
        missing = [f"{s}_{k}" for s in _SPLITS for k in ("images", "labels") if f"{s}_{k}" not in npz.files]
        if missing:
            raise DataError(
                f"{path} lacks the MedMNIST arrays {', '.join(missing)} (has {', '.join(npz.files)})",
                "use a MedMNIST-format npz with train_/val_/test_ images and labels",
            )
        arrays = {s: (npz[f"{s}_images"], npz[f"{s}_labels"]) for s in _SPLITS}
        labels_all = np.concatenate([a[1].reshape(len(a[1]), -1) for a in arrays.values()])
        if labels_all.shape[1] != 1:
            raise DataError(
                f"{path} holds multi-label targets ({labels_all.shape[1]} columns)",
                "protoprune classifies single-label data; use a single-label MedMNIST set",
            )
        n_classes = int(labels_all.max()) + 1
        class_names = medmnist_class_names(path, n_classes, npz)
    datasets = {}
    for split, (images, labels) in arrays.items():
        ids = [f"{split}_{i:05d}" for i in range(len(images))]
        datasets[split] = ArrayImageDataset(images, labels.reshape(-1), class_names, ids)
    return DataSplits(
        datasets["train"], datasets["val"], datasets["test"], class_names,
        description=f"MedMNIST {path.name}, official split",
    )
