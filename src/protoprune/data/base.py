"""The one data abstraction: labelled images with ids, whatever their on-disk format.

Every loader returns `ImageDataset`s that yield `(tensor, label)` and also expose
`image_ids`, `targets`, `class_names` and the untransformed PIL image (for rendering
prototypes and explanations), so training, push and reports never care about the format.
"""

from __future__ import annotations

import abc
import copy
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..errors import DataError
from .transforms import resize_step


class ImageDataset(Dataset, abc.ABC):
    """Base class: subclasses implement `load_image(i) -> PIL.Image` (RGB).

    `pixels` (see `protoprune.data.cache`), when set, is where `__getitem__` gets each image
    before the transform: already resized, from a cache or a reduced-size decode. `load_image`
    always gives the image as stored, for rendering.
    """

    pixels: Callable[[int], Image.Image] | None = None
    mask_dir: Path | None = None  # lesion masks <image_id>_segmentation.png, when the data has them

    def __init__(
        self,
        targets: Sequence[int] | np.ndarray,
        class_names: Sequence[str],
        image_ids: Sequence[str],
        groups: Sequence[str] | None = None,
        transform: Callable | None = None,
    ):
        self.targets = integer_labels(targets)
        self.class_names = list(class_names)
        self.image_ids = [str(i) for i in image_ids]
        self.groups = None if groups is None else [str(g) for g in groups]
        self.transform = transform
        if len(self.image_ids) != len(self.targets):
            raise DataError(
                f"{len(self.image_ids)} image ids but {len(self.targets)} labels", "fix the data files"
            )
        if len(self.targets) and (self.targets.min() < 0 or self.targets.max() >= len(self.class_names)):
            raise DataError(
                f"labels span {self.targets.min()}..{self.targets.max()} but there are "
                f"{len(self.class_names)} classes",
                "check the label column and the class names of the data set",
            )

    def __len__(self) -> int:
        return len(self.targets)

    @abc.abstractmethod
    def load_image(self, index: int) -> Image.Image:
        """The untransformed RGB image at `index`."""

    def load_resized(self, index: int, size: int, draft: bool = False) -> Image.Image:
        """The image resized to `size` x `size` as the transforms resize it; `draft`: decoded at
        reduced size first where the file format allows it (JPEG), never below `size`."""
        return resize_step(size)(self.load_image(index))

    def load_mask(self, index: int, size: tuple[int, int] | None = None) -> np.ndarray | None:
        """(H, W) bool lesion mask of image `index` (lesion pixels > 127, read as grey: HAM10000's
        palette PNGs carry an inverted palette), resized to `size` (width, height) by nearest
        neighbour, e.g. the size the image is drawn or fed at; None without a mask file."""
        return read_mask(self.mask_dir, self.image_ids[index], size)

    def image_signatures(self) -> list[str]:
        """One string per image that changes when the image does (keys the disk cache); a
        dataset that cannot say raises NotImplementedError, which `data.cache` turns into an
        error naming the fix."""
        raise NotImplementedError(f"{type(self).__name__} has no image signatures")

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.load_image(index) if self.pixels is None else self.pixels(index)
        x = self.transform(image) if self.transform is not None else image
        return x, int(self.targets[index])

    def with_pixels(self, pixels: Callable[[int], Image.Image] | None) -> ImageDataset:
        """A shallow copy whose `__getitem__` reads its images from `pixels`."""
        other = copy.copy(self)
        other.pixels = pixels
        return other

    def with_transform(self, transform: Callable | None) -> ImageDataset:
        """A shallow copy that applies another transform (the images are shared, not copied)."""
        other = copy.copy(self)
        other.transform = transform
        return other

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageDataset:
        return SubsetImageDataset(self, np.asarray(indices, dtype=np.int64))

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.targets, minlength=len(self.class_names))

    def table(self) -> pd.DataFrame:
        """One row per image: image_id, label index, class name (and group, e.g. lesion_id)."""
        df = pd.DataFrame(
            {
                "image_id": self.image_ids,
                "label": self.targets,
                "dx": [self.class_names[t] for t in self.targets],
            }
        )
        if self.groups is not None:
            df["group"] = self.groups
        return df


def integer_labels(targets: Sequence[int] | np.ndarray) -> np.ndarray:
    """Labels as int64; fractional or non-numeric labels would be truncated or fail: refuse them."""
    raw = np.asarray(targets).reshape(-1)
    if raw.dtype.kind not in "iuf" and len(raw):
        raise DataError(f"labels are of type {raw.dtype}, not class indices", "give integer labels 0..K-1")
    if raw.dtype.kind == "f" and not np.all(np.isfinite(raw) & (raw == np.round(raw))):
        bad = raw[~(np.isfinite(raw) & (raw == np.round(raw)))]
        raise DataError(
            f"{len(bad)} labels are not whole numbers (e.g. {bad[0]:g}): they would be truncated",
            "give integer class indices 0..K-1",
        )
    return raw.astype(np.int64)


def mask_path(folder: Path, image_id: str) -> Path:
    """Where the ISIC 2018 Task 1 layout keeps an image's lesion mask."""
    return folder / f"{Path(image_id).stem}_segmentation.png"


def read_mask(folder: Path | None, image_id: str, size: tuple[int, int] | None = None) -> np.ndarray | None:
    """The bool lesion mask of `image_id` in `folder` (see `ImageDataset.load_mask`), or None."""
    if folder is None or not (path := mask_path(folder, image_id)).is_file():
        return None
    try:
        with Image.open(path) as im:
            grey = im.convert("L")
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"lesion mask {path} is unreadable ({exc})", "re-export or remove this mask") from None
    if size is not None and grey.size != tuple(size):
        grey = grey.resize(tuple(size), Image.NEAREST)
    return np.asarray(grey) > 127


class SubsetImageDataset(ImageDataset):
    """A view on some rows of another ImageDataset."""

    @property
    def mask_dir(self) -> Path | None:  # the parent's, so a subset never loses its masks
        return self.parent.mask_dir

    @mask_dir.setter
    def mask_dir(self, value: Path | None) -> None:
        self.parent.mask_dir = value

    def __init__(self, parent: ImageDataset, indices: np.ndarray):
        self.parent = parent
        self.indices = indices
        groups = None if parent.groups is None else [parent.groups[i] for i in indices]
        super().__init__(
            parent.targets[indices],
            parent.class_names,
            [parent.image_ids[i] for i in indices],
            groups,
            parent.transform,
        )

    def load_image(self, index: int) -> Image.Image:
        return self.parent.load_image(int(self.indices[index]))

    def load_resized(self, index: int, size: int, draft: bool = False) -> Image.Image:
        return self.parent.load_resized(int(self.indices[index]), size, draft)

    def image_signatures(self) -> list[str]:
        signatures = self.parent.image_signatures()
        return [signatures[i] for i in self.indices]


def stacked_images(images: Any) -> np.ndarray:
    """One array of a sequence of equal-sized images; a clear error where their sizes differ
    (a batch needs one size, and resizing arrays silently would hide a mix-up of sources)."""
    if isinstance(images, np.ndarray) and images.dtype != object:
        return images
    arrays = [np.asarray(a) for a in images]
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) > 1:
        first = next(i for i, a in enumerate(arrays) if a.shape != arrays[0].shape)
        raise DataError(
            f"the images differ in size within one split: image 0 is {arrays[0].shape}, image "
            f"{first} is {arrays[first].shape} ({len(shapes)} sizes in all)",
            "resize them to one size first, or save them as image files in class folders "
            "(data.dataset: folder), which protoprune resizes to data.image_size",
        )
    return np.stack(arrays) if arrays else np.zeros((0, 1, 1), np.uint8)


class ArrayImageDataset(ImageDataset):
    """Images held in memory as a uint8 array (N, H, W[, C]), e.g. a MedMNIST npz."""

    def __init__(self, images: np.ndarray, targets, class_names, image_ids=None, **kwargs):
        images = stacked_images(images)
        if images.ndim not in (3, 4) or images.dtype != np.uint8:
            raise DataError(
                f"image array has shape {images.shape} and dtype {images.dtype}",
                "expected uint8 images shaped (N, H, W) or (N, H, W, C)",
            )
        if images.ndim == 4 and images.shape[-1] not in (1, 3):
            raise DataError(
                f"image array has {images.shape[-1]} channels (shape {images.shape})",
                "give grey (N, H, W) or (N, H, W, 1) or RGB (N, H, W, 3) uint8 images",
            )
        self.images = images
        if image_ids is None:
            image_ids = [f"{i:05d}" for i in range(len(images))]
        super().__init__(targets, class_names, image_ids, **kwargs)

    def load_image(self, index: int) -> Image.Image:
        arr = self.images[index]
        if arr.ndim == 2 or arr.shape[-1] == 1:
            return Image.fromarray(arr.squeeze(-1) if arr.ndim == 3 else arr, "L").convert("RGB")
        return Image.fromarray(arr, "RGB")

    def image_signatures(self) -> list[str]:
        return [hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest() for a in self.images]


def open_rgb(path: str | Path, draft: tuple[int, int] | None = None) -> Image.Image:
    """Open an image file fully (so truncation shows now, not mid-epoch) with a clear error.

    `draft` (width, height): a JPEG is decoded at the smallest of 1/1, 1/2, 1/4, 1/8 of its size
    that is at least this large in both directions (libjpeg's DCT scaling, PIL's `draft`), which
    decodes 2-8x fewer pixels; other formats are decoded in full.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"image path {path} is a folder, not an image file", "point at the image file itself")
    if not path.is_file():
        raise DataError(f"image file {path} is missing", "restore the file or remove its row from the metadata")
    try:
        with Image.open(path) as im:
            if draft is not None and im.format == "JPEG":
                im.draft("RGB", draft)
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(
            f"image file {path} is corrupt or truncated ({exc})",
            "re-download or re-export this image, or remove its row from the metadata",
        ) from None


class FileImageDataset(ImageDataset):
    """Images stored as files (JPEG/PNG), read lazily."""

    def __init__(self, paths: Sequence[str | Path], targets, class_names, image_ids=None, **kwargs):
        self.paths = [Path(p) for p in paths]
        if image_ids is None:
            image_ids = [p.stem for p in self.paths]
        super().__init__(targets, class_names, image_ids, **kwargs)

    def load_image(self, index: int) -> Image.Image:
        return open_rgb(self.paths[index])

    def load_resized(self, index: int, size: int, draft: bool = False) -> Image.Image:
        if not draft:
            return super().load_resized(index, size)
        return resize_step(size)(open_rgb(self.paths[index], draft=(size, size)))

    def image_signatures(self) -> list[str]:
        return [_file_signature(p) for p in self.paths]


def _file_signature(path: Path) -> str:
    """Path, size and modification time: a replaced or edited file gets another signature."""
    try:
        st = path.stat()
    except OSError:
        raise DataError(f"image file {path} is missing", "restore the file or remove its row from the metadata") from None
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


@dataclass
class DataSplits:
    """Train/validation/test datasets (untransformed) and where the split came from."""

    train: ImageDataset
    val: ImageDataset
    test: ImageDataset
    class_names: list[str]
    description: str = ""
    extra: dict = field(default_factory=dict)

    def split_table(self) -> pd.DataFrame:
        """The split as a table (image_id, label, dx, split), written to every run folder."""
        parts = []
        for name in ("train", "val", "test"):
            df = getattr(self, name).table()
            df.insert(0, "split", name)
            parts.append(df)
        return pd.concat(parts, ignore_index=True)
