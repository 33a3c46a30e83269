"""Where the training pipeline gets its resized images: decoded per epoch, or cached as uint8.

Decoding and resizing a 600 x 450 JPEG costs more than augmenting the resized image, and every
epoch repeats it. `data.cache` keeps the output of the transforms' resize step, (N, S, S, 3)
uint8 per split: `memory` in this process (DataLoader workers share it through fork), `disk` as
a numpy file memory-mapped by every process, kept between runs and keyed by the images' paths,
sizes and modification times, the size S and the decoding, so any change builds a new one. The
transforms still run on every access, so augmentation is drawn afresh each epoch, and the
tensors equal the uncached ones exactly (the resize of an S x S image to S x S is a copy).
`data.jpeg_draft` decodes each JPEG at reduced size (PIL `draft`) before that resize.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError
from ..io import atomic_write_json
from .base import ImageDataset

log = logging.getLogger(__name__)

CACHE_MODES = ("none", "memory", "disk")
CACHE_FORMAT = 1  # bump when the stored pixels would change for the same key


class ReducedDecode:
    """Pixel source: each image decoded at reduced size where the format allows, then resized."""

    def __init__(self, dataset: ImageDataset, size: int):
        self.dataset, self.size = dataset, size

    def __call__(self, index: int) -> Image.Image:
        return self.dataset.load_resized(index, self.size, draft=True)


class CachedPixels:
    """Pixel source: resized uint8 images (N, S, S, 3), in memory or memory-mapped from `path`.

    Pickled (to spawned workers) as the path alone, so a disk cache is never copied.
    """

    def __init__(self, array: np.ndarray | None = None, path: Path | None = None):
        self.path = path
        self._array = array if array is not None else _open(path)

    def __call__(self, index: int) -> Image.Image:
        return Image.fromarray(np.asarray(self._array[index]), "RGB")

    def __len__(self) -> int:
        return len(self._array)

    def __getstate__(self) -> dict:
        return {"path": self.path, "_array": None if self.path is not None else self._array}

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]
        self._array = state["_array"] if self.path is None else _open(self.path)


def _open(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r", allow_pickle=False)


class _Resized(Dataset):
    """The resized uint8 pixels of each image, for decoding a split with DataLoader workers."""

    def __init__(self, dataset: ImageDataset, size: int, draft: bool):
        self.dataset, self.size, self.draft = dataset, size, draft

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> np.ndarray:
        return np.asarray(self.dataset.load_resized(index, self.size, self.draft), dtype=np.uint8)


def _stack(items: list[np.ndarray]) -> np.ndarray:
    return np.stack(items)


def _decode_into(out: np.ndarray, dataset: ImageDataset, size: int, draft: bool, workers: int) -> None:
    loader = DataLoader(_Resized(dataset, size, draft), batch_size=32, num_workers=workers, collate_fn=_stack)
    start = 0
    for batch in loader:
        out[start : start + len(batch)] = batch
        start += len(batch)


def cache_key(dataset: ImageDataset, size: int, draft: bool) -> str:
    """Hash of every image's signature (path, size, mtime), the size and the decoding."""
    h = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, "size": size, "draft": draft}).encode())
    try:
        signatures = dataset.image_signatures()
    except NotImplementedError:
        raise ConfigError(
            f"data.cache: disk cannot tell when the images of a {type(dataset).__name__} change",
            "use data.cache: memory (rebuilt every run) or none",
        ) from None
    for signature in signatures:
        h.update(signature.encode())
        h.update(b"\0")
    return h.hexdigest()


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/protoprune/images (~/.cache/protoprune/images)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "protoprune" / "images"


def _usable(path: Path, shape: tuple[int, ...]) -> bool:
    try:
        arr = _open(path)
    except (OSError, ValueError):
        return False
    return arr.shape == shape and arr.dtype == np.uint8


def disk_cache(
    dataset: ImageDataset, size: int, draft: bool, folder: Path, name: str, workers: int = 0
) -> CachedPixels:
    """The split's cache file in `folder`, built (atomically: written aside, then renamed) if absent."""
    key = cache_key(dataset, size, draft)
    path = folder / f"{name}-{size}px-{key[:20]}.npy"
    shape = (len(dataset), size, size, 3)
    if not _usable(path, shape):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the image cache folder {folder} ({exc})",
                              "set data.cache_dir to a writable folder, or data.cache: memory") from None  # fmt: skip
        log.info("image cache: decoding %d %s images at %d px into %s", len(dataset), name, size, path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            _decode_into(out, dataset, size, draft, workers)
            out.flush()
            del out
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        atomic_write_json(path.with_suffix(".json"), {"key": key, "images": len(dataset), "size": size,
                                                      "jpeg_draft": draft, "format": CACHE_FORMAT})  # fmt: skip
    return CachedPixels(path=path)


def memory_cache(dataset: ImageDataset, size: int, draft: bool, workers: int = 0) -> CachedPixels:
    out = np.empty((len(dataset), size, size, 3), dtype=np.uint8)
    _decode_into(out, dataset, size, draft, workers)
    return CachedPixels(array=out)


def with_pixel_source(
    dataset: ImageDataset,
    size: int,
    cache: str = "none",
    draft: bool = False,
    folder: str | Path | None = None,
    name: str = "images",
    workers: int = 0,
) -> ImageDataset:
    """`dataset` reading its images as configured: as stored (none, no draft), reduced-size
    decoded, or from a memory or disk cache of the resized images (built here, `workers` decoding)."""
    if cache not in CACHE_MODES:
        raise ConfigError(f"data.cache = {cache!r} is not one of {', '.join(CACHE_MODES)}",
                          "set data.cache to none, memory or disk")  # fmt: skip
    if cache == "memory":
        return dataset.with_pixels(memory_cache(dataset, size, draft, workers))
    if cache == "disk":
        folder = Path(folder).expanduser() if folder else default_cache_dir()
        return dataset.with_pixels(disk_cache(dataset, size, draft, folder, name, workers))
    return dataset.with_pixels(ReducedDecode(dataset, size)) if draft else dataset
