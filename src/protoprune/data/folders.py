"""General image data sets in their usual on-disk layouts: ImageFolder, CIFAR-10, CUB-200-2011.

These let protoprune run on non-dermoscopy data (ProtoPNet's own benchmark is CUB-200-2011)
from the files a user already has; nothing is downloaded.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from torchvision.datasets import CIFAR10
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from ..config import data_root_fix
from ..errors import DataError
from .base import ArrayImageDataset, DataSplits, FileImageDataset
from .splits import split_dataset

# --- ImageFolder -----------------------------------------------------------------------------

_SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


def _split_folders(root: Path) -> dict[str, Path]:
    """The train/val/test subfolders of `root` (any case), if it has a train folder."""
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    found = {}
    for split, names in _SPLIT_FOLDERS.items():
        for name in names:
            if name in subdirs:
                found[split] = subdirs[name]
                break
    return found if "train" in found else {}


def _folder_samples(
    folder: Path, class_to_idx: dict[str, int], allow_empty: bool
) -> list[tuple[str, int]]:
    try:
        return make_dataset(
            folder, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=allow_empty
        )
    except FileNotFoundError as exc:
        raise DataError(
            f"image folder {folder}: {exc}",
            f"put the images of each class in {folder}/<class>/ (extensions {', '.join(IMG_EXTENSIONS)})",
        ) from None


def imagefolder_splits(
    root: str | Path,
    ratios: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    split_file: str | Path | None = None,
) -> DataSplits:
    """torchvision ImageFolder layout: root/<class>/<image>, or root/{train,val,test}/<class>/<image>.

    With split folders, their split is kept and a missing val (or test) is carved out of train,
    stratified and seeded; without, the images are split in `ratios`. Classes come from train
    (sorted folder names, as ImageFolder does). Image ids are paths relative to `root`.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"image folder {root} does not exist",
            data_root_fix("a folder laid out as <root>/<class>/<image> or <root>/train/<class>/<image>"),
        )
    folders = _split_folders(root) or {None: root}
    class_source = folders.get("train", root)
    try:
        classes, class_to_idx = find_classes(class_source)
    except FileNotFoundError:
        raise DataError(
            f"no class folders in {class_source}",
            "lay the images out as <root>/<class>/<image> (or <root>/train/<class>/<image>)",
        ) from None
    paths, labels, predefined = [], [], []
    for split, folder in folders.items():
        if split not in (None, "train"):
            extra = sorted({p.name for p in folder.iterdir() if p.is_dir()} - set(classes))
            if extra:
                raise DataError(
                    f"{folder} has class folder(s) {', '.join(extra)} that {class_source} lacks",
                    "use the same class folders in every split (train defines the classes)",
                )
        samples = _folder_samples(folder, class_to_idx, allow_empty=split in ("val", "test"))
        paths += [p for p, _ in samples]
        labels += [c for _, c in samples]
        predefined += [split] * len(samples)
    ids = [Path(p).relative_to(root).as_posix() for p in paths]
    full = FileImageDataset(paths, labels, classes, ids)
    return split_dataset(
        full,
        ratios,
        seed,
        split_file,
        predefined=predefined if None not in folders else None,
        description=f"image folder {root}: {len(full)} images, {len(classes)} classes",
    )


# --- CIFAR-10 --------------------------------------------------------------------------------

CIFAR10_FOLDER = CIFAR10.base_folder  # "cifar-10-batches-py"


class _LocalCIFAR10(CIFAR10):
    """torchvision's CIFAR-10 reader, checking that the files exist but not their MD5.

    torchvision insists on the official checksums and, when they differ, suggests a download;
    protoprune never downloads and also reads copies in the same format (e.g. test fixtures).
    """

    train_list = [[name, None] for name, _ in CIFAR10.train_list]
    test_list = [[name, None] for name, _ in CIFAR10.test_list]
    meta = {**CIFAR10.meta, "md5": None}


def _cifar10_root(root: Path) -> Path:
    """The folder that holds cifar-10-batches-py (`root` may also be that folder itself)."""
    root = root.expanduser()
    base = root if root.name == CIFAR10_FOLDER else root / CIFAR10_FOLDER
    names = [n for n, _ in _LocalCIFAR10.train_list + _LocalCIFAR10.test_list] + [
        _LocalCIFAR10.meta["filename"]
    ]
    absent = [n for n in names if not (base / n).is_file()]
    if absent:
        raise DataError(
            f"CIFAR-10 folder {base} is missing {', '.join(absent)}",
            f"set data.root to the folder that holds {CIFAR10_FOLDER}/ (extract cifar-10-python.tar.gz "
            "from https://www.cs.toronto.edu/~kriz/cifar.html there; protoprune downloads nothing)",
        )
    return base.parent


def load_cifar10(root: str | Path) -> tuple[ArrayImageDataset, list[str]]:
    """All 60,000 CIFAR-10 images (ids train_NNNNN, test_NNNNN) and each one's official split."""
    base = _cifar10_root(Path(root))
    try:
        train = _LocalCIFAR10(str(base), train=True, download=False)
        test = _LocalCIFAR10(str(base), train=False, download=False)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as exc:
        raise DataError(
            f"the CIFAR-10 batches in {base / CIFAR10_FOLDER} are not readable ({type(exc).__name__}: {exc})",
            "re-extract cifar-10-python.tar.gz (the python version of CIFAR-10)",
        ) from None
    images = np.concatenate([train.data, test.data])
    ids = [f"train_{i:05d}" for i in range(len(train.data))] + [
        f"test_{i:05d}" for i in range(len(test.data))
    ]
    dataset = ArrayImageDataset(
        images, np.asarray(train.targets + test.targets), train.classes, ids
    )
    return dataset, ["train"] * len(train.data) + ["test"] * len(test.data)


def cifar10_splits(
    root: str | Path,
    ratios: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    split_file: str | Path | None = None,
) -> DataSplits:
    """CIFAR-10's official train/test split, with val carved out of train (stratified, seeded)."""
    full, official = load_cifar10(root)
    return split_dataset(
        full,
        ratios,
        seed,
        split_file,
        predefined=official,
        description=f"CIFAR-10 {Path(root)}: {len(full)} images",
    )


# --- CUB-200-2011 ----------------------------------------------------------------------------

CUB_FILES = (
    "images.txt",
    "image_class_labels.txt",
    "train_test_split.txt",
    "bounding_boxes.txt",
    "classes.txt",
)


class BoxCroppedImageDataset(FileImageDataset):
    """Image files cropped to a bounding box (x, y, width, height in pixels) when loaded."""

    def __init__(self, paths, boxes: np.ndarray, targets, class_names, image_ids=None, **kwargs):
        self.boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        super().__init__(paths, targets, class_names, image_ids, **kwargs)
        if len(self.boxes) != len(self.paths):
            raise DataError(
                f"{len(self.boxes)} boxes for {len(self.paths)} images", "give one box per image"
            )

    def load_image(self, index: int) -> Image.Image:
        image = super().load_image(index)
        x, y, w, h = self.boxes[index]
        # the smallest pixel rectangle that holds the (sub-pixel) box, kept inside the image
        left, top = max(0, math.floor(x)), max(0, math.floor(y))
        right, bottom = min(image.width, math.ceil(x + w)), min(image.height, math.ceil(y + h))
        if right <= left or bottom <= top:
            raise DataError(
                f"bounding box {x, y, w, h} of {self.paths[index]} lies outside the "
                f"{image.width}x{image.height} image",
                "fix its row in bounding_boxes.txt",
            )
        return image.crop((left, top, right, bottom))


def _cub_base(root: Path) -> Path:
    """The CUB_200_2011 folder: `root` itself or its CUB_200_2011 subfolder."""
    root = root.expanduser()
    nested = root / "CUB_200_2011"
    base = nested if not (root / "images.txt").is_file() and nested.is_dir() else root
    absent = [n for n in CUB_FILES if not (base / n).is_file()]
    absent += [] if (base / "images").is_dir() else ["images/"]
    if absent:
        raise DataError(
            f"CUB-200-2011 folder {base} is missing {', '.join(absent)}",
            "set data.root to the extracted CUB_200_2011 folder (or the folder holding it)",
        )
    return base


def _read_table(path: Path, names: list[str]) -> pd.DataFrame:
    try:
        df = pd.read_csv(
            path, sep=r"\s+", header=None, names=names, dtype={"path": str, "name": str}
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise DataError(f"{path} is not readable ({exc})", "re-extract CUB_200_2011.tgz") from None
    if df.isna().any().any():
        raise DataError(f"{path} has rows with missing fields", "re-extract CUB_200_2011.tgz")
    return df.set_index(names[0])


def load_cub200(root: str | Path, crop: bool = True) -> tuple[FileImageDataset, list[str]]:
    """CUB-200-2011 (all 11,788 images, each cropped to its bird's box by default) and their official split.

    ProtoPNet (Chen et al. 2019) trains and tests on the box crops. Class names drop the
    numeric prefix ("001.Black_footed_Albatross" -> "Black_footed_Albatross"); image ids are
    the paths in images.txt without extension.
    """
    base = _cub_base(Path(root))
    images = _read_table(base / "images.txt", ["id", "path"])
    labels = _read_table(base / "image_class_labels.txt", ["id", "cls"])
    split = _read_table(base / "train_test_split.txt", ["id", "is_train"])
    boxes = _read_table(base / "bounding_boxes.txt", ["id", "x", "y", "w", "h"])
    classes = _read_table(base / "classes.txt", ["cls", "name"])
    for name, table in (
        ("image_class_labels.txt", labels),
        ("train_test_split.txt", split),
        ("bounding_boxes.txt", boxes),
    ):
        if set(table.index) != set(images.index):
            raise DataError(
                f"{base / name} and images.txt list different image ids",
                "re-extract CUB_200_2011.tgz",
            )
    order = sorted(classes.index)
    if order != list(range(1, len(order) + 1)) or not labels["cls"].isin(order).all():
        raise DataError(
            f"{base / 'classes.txt'} and image_class_labels.txt disagree on the class ids",
            "re-extract CUB_200_2011.tgz",
        )
    ids = images.index
    class_names = [n.split(".", 1)[-1] for n in classes.loc[order, "name"]]
    paths = [base / "images" / p for p in images["path"]]
    targets = labels.loc[ids, "cls"].to_numpy() - 1
    image_ids = [str(Path(p).with_suffix("")) for p in images["path"]]
    if crop:
        dataset: FileImageDataset = BoxCroppedImageDataset(
            paths, boxes.loc[ids, ["x", "y", "w", "h"]].to_numpy(), targets, class_names, image_ids
        )
    else:
        dataset = FileImageDataset(paths, targets, class_names, image_ids)
    return dataset, np.where(split.loc[ids, "is_train"].to_numpy() == 1, "train", "test").tolist()


def cub200_splits(
    root: str | Path,
    ratios: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    split_file: str | Path | None = None,
    crop: bool = True,
) -> DataSplits:
    """CUB-200-2011's official train/test split, val carved out of train (stratified, seeded)."""
    full, official = load_cub200(root, crop)
    return split_dataset(
        full,
        ratios,
        seed,
        split_file,
        predefined=official,
        description=f"CUB-200-2011 {Path(root)}: {len(full)} images{', bounding-box crops' if crop else ''}",
    )
