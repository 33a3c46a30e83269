"""A user's torch `Dataset` written once as an image folder, so every command can read it.

A run does not end with training: the push renders each prototype's source patch, `report` and
`explain` reload test images, `--resume` and `prune-filters` rebuild the loaders, each from the
run's saved config, often in another process. A Dataset object lives only in the Python session
that made it, so protoprune reads a user's data from files: `write_image_folder` turns any
Dataset of (image, label) into the ImageFolder layout (`data.dataset: imagefolder`) that
`load_config` then points at, with the split kept as given.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DataError

SPLITS = ("train", "val", "test")


def to_pil(image: Any) -> Image.Image:
    """A PIL image from a PIL image, an (H, W[, C]) uint8 array or a (C, H, W) tensor in [0, 1]
    (`ToTensor`'s output). A normalised tensor cannot be turned back into pixels: refused."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)  # C, H, W -> H, W, C
    if array.dtype != np.uint8:
        if array.size and (np.nanmin(array) < 0 or np.nanmax(array) > 1):
            raise DataError(
                f"an image tensor holds values in [{np.nanmin(array):.2f}, {np.nanmax(array):.2f}], "
                "not pixels in [0, 1]: it looks normalised",
                "give the Dataset without its Normalize transform (protoprune normalises with "
                "data.mean / data.std)",
            )
        array = np.round(array * 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise DataError(f"an image of shape {array.shape} is not an image", "give (H, W, C) or (C, H, W)")
    return Image.fromarray(array).convert("RGB")


def write_image_folder(
    splits: Mapping[str, Any], root: str | Path, class_names: Sequence[str]
) -> Path:
    """Write `splits` ({"train": Dataset, "val": ..., "test": ...}, each yielding (image, label))
    as root/<split>/<class>/<index>.png; returns `root`, for `data.root`.

    Missing val or test splits are carved out of train by the run (stratified, seeded). An
    existing non-empty `root` is refused, never overwritten; the folder appears only once every
    image is written (a half-written export is left under a temporary name and removed). As in
    torchvision's ImageFolder, the run numbers the classes in the sorted order of their names."""
    root = Path(root)
    unknown = set(splits) - set(SPLITS)
    if "train" not in splits or unknown:
        raise DataError(f"splits {sorted(splits)}: need 'train', may add 'val' and 'test'",
                        "pass {'train': ..., 'val': ..., 'test': ...}")  # fmt: skip
    if root.exists() and any(root.iterdir()):
        raise DataError(f"{root} exists and is not empty", "choose a new folder, or remove this one")
    tmp = root.with_name(f".{root.name}.writing-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for split, dataset in splits.items():
            _write_split(dataset, tmp / split, class_names, split)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if root.exists():
        root.rmdir()  # empty (checked above)
    tmp.rename(root)
    return root


def _write_split(dataset: Any, folder: Path, class_names: Sequence[str], split: str) -> None:
    for i in range(len(dataset)):
        image, label = dataset[i][:2]
        label = int(label)
        if not 0 <= label < len(class_names):
            raise DataError(f"{split} item {i} has label {label}, outside 0..{len(class_names) - 1}",
                            "give class_names for every label the Dataset yields")  # fmt: skip
        (folder / class_names[label]).mkdir(parents=True, exist_ok=True)
        to_pil(image).save(folder / class_names[label] / f"{i:06d}.png")
