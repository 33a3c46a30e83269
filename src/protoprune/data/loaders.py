"""From a DataConfig to DataLoaders: split, subsample, transform, balance."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, DistributedSampler, default_collate

from .. import distributed
from ..config import DataConfig
from ..errors import DataError
from .base import DataSplits, ImageDataset
from .cache import with_pixel_source
from .registry import DATASETS
from .sampling import class_balanced_sampler, class_weights
from .transforms import build_transform

log = logging.getLogger(__name__)


def _cap(ds: ImageDataset, n: int | None, seed: int) -> ImageDataset:
    if n is None or len(ds) <= n:
        return ds
    counts = ds.class_counts()
    present = int((counts > 0).sum())
    # stratification needs two images a class and room for every class on both sides of the cut
    can_stratify = counts[counts > 0].min() >= 2 and min(n, len(ds) - n) >= present
    stratify = ds.targets if can_stratify else None
    idx, _ = train_test_split(np.arange(len(ds)), train_size=n, random_state=seed, stratify=stratify)
    return ds.subset(np.sort(idx))


def build_splits(cfg: DataConfig, seed: int = 0) -> DataSplits:
    """The configured data set's train/val/test split (untransformed), capped by max_per_split."""
    splits = DATASETS.get(cfg.dataset)(cfg, seed)
    if cfg.max_per_split is not None:
        splits.train = _cap(splits.train, cfg.max_per_split, seed)
        splits.val = _cap(splits.val, cfg.max_per_split, seed)
        splits.test = _cap(splits.test, cfg.max_per_split, seed)
    for name in ("train", "val", "test"):
        if len(getattr(splits, name)) == 0:
            raise DataError(f"the {name} split of {cfg.dataset!r} is empty", "check the data and data.split_ratios")
    folder = mask_dir(cfg, splits)
    for name in ("train", "val", "test"):
        getattr(splits, name).mask_dir = folder
    return splits


def mask_dir(cfg: DataConfig, splits: DataSplits) -> Path | None:
    """The lesion-mask folder `data.masks` names: auto = the data set's own (`extra["mask_dir"]`,
    e.g. HAM10000's segmentations next to its images), a folder, or none."""
    if cfg.masks in (None, "none"):
        return None
    if cfg.masks == "auto":
        return splits.extra.get("mask_dir")
    folder = Path(cfg.masks).expanduser()
    if not folder.is_dir() or not any(folder.glob("*_segmentation.png")):
        raise DataError(
            f"data.masks = {cfg.masks}: no <image_id>_segmentation.png files there",
            "give the folder of lesion masks in the ISIC 2018 Task 1 layout, or auto / none",
        )
    return folder


def check_class_coverage(splits: DataSplits) -> None:
    """Training needs every class in the train split; a class missing from val or test only warns.

    A class without training images still gets an output unit, which is never trained yet is
    scored in every metric: the run would look valid and be meaningless, so it is an error. A
    class missing from val/test (common with tiny or partial data) leaves its per-class metrics
    undefined but the run is still sound, so it is a loud warning.
    """
    names = splits.class_names
    absent = [names[k] for k, n in enumerate(splits.train.class_counts()) if n == 0]
    if absent:
        raise DataError(
            f"class(es) {', '.join(absent)} have no images in the train split "
            f"({len(splits.train)} training images)",
            "use more data or another seed/data.split_ratios so every class reaches the train "
            "split, or remove the class from the data set",
        )
    for split in ("val", "test"):
        missing = [names[k] for k, n in enumerate(getattr(splits, split).class_counts()) if n == 0]
        if missing:
            log.warning(
                "WARNING: class(es) %s have no images in the %s split: their recall and the "
                "AUROC over classes are undefined there; use more data for reliable metrics",
                ", ".join(missing), split,
            )


@dataclass
class Loaders:
    """DataLoaders for one run. `push` is the training set without augmentation, in order."""

    train: DataLoader
    push: DataLoader
    val: DataLoader
    test: DataLoader
    class_names: list[str]
    loss_weights: torch.Tensor | None
    generator: torch.Generator | None = None


class CappedLoader:
    """A DataLoader whose every pass stops after `max_batches` batches: a partial epoch.

    Fine-tuning between pruning steps needs a few hundred gradient steps, not a pass over a large
    training set; each pass draws a fresh shuffled (or class-balanced) sample of the loader.
    Attributes (dataset, sampler, batch_size) are the wrapped loader's.
    """

    def __init__(self, loader: DataLoader, max_batches: int):
        self.loader, self.max_batches = loader, int(max_batches)

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i >= self.max_batches:
                break
            yield batch

    def __len__(self) -> int:
        return min(len(self.loader), self.max_batches)

    def __getattr__(self, name: str):
        if name == "loader":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)


def _device_type(device: torch.device | str | None) -> str:
    if device is None or str(device) == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device).type


def loader_settings(cfg: DataConfig, device: torch.device | str | None = None) -> dict:
    """DataLoader keywords for the device: `num_workers` (None: auto), pinned memory on CUDA,
    workers kept alive between epochs.

    Auto workers are 0 on CPU (decoding in the main process; on few cores worker processes take
    the model's cores) and on CUDA one less than this rank's share of the cores, at most 8.
    """
    cuda = _device_type(device) == "cuda"
    workers = cfg.num_workers
    if workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        workers = min(8, max(0, cores // distributed.world_size() - 1)) if cuda else 0
    return {"num_workers": workers, "pin_memory": cuda, "persistent_workers": workers > 0}


def collate_in_numpy(batch: list) -> list:
    """default_collate for (image tensor, label) pairs, with the images stacked by numpy.

    In the main process (`num_workers: 0`) torch.stack spreads the copy of a batch over torch's
    threads: at 224 px (32 x 602 kB) on 2 shared cores it took 0.57 s a batch, 58 % of the
    pipeline's time. numpy copies on one thread. Workers keep default_collate (one thread there,
    and its batches go to shared memory without a copy).
    """
    images, labels = zip(*batch, strict=True)
    if not all(isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.dtype != torch.bfloat16
               for t in images):  # fmt: skip
        return default_collate(batch)
    stacked = np.stack([t.numpy(force=True) for t in images])
    return [torch.from_numpy(stacked), default_collate(list(labels))]


def _pixel_sources(splits: DataSplits, cfg: DataConfig, workers: int) -> dict[str, ImageDataset]:
    """Each split reading its images as data.cache and data.jpeg_draft say (caches built here)."""
    return {
        name: with_pixel_source(getattr(splits, name), cfg.image_size, cfg.cache, cfg.jpeg_draft,
                                cfg.cache_dir, name, workers)  # fmt: skip
        for name in ("train", "val", "test")
    }


def build_loaders(
    splits: DataSplits,
    cfg: DataConfig,
    generator: torch.Generator | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> Loaders:
    """Transforms and samplers: augmentation and balancing touch the training split only.

    Inside a torchrun process group every loader gets a distributed sampler: each rank reads
    its shard (train: reshuffled per epoch from `seed`; push/val/test: in order, gathered back
    by `distributed.gather_in_order`) and `cfg.batch_size` is the per-rank batch. `device`
    (None: CUDA if available) picks the worker and pinned-memory defaults (`loader_settings`).
    """
    t_train = build_transform(cfg.image_size, cfg.mean, cfg.std, train=True, augment=cfg.augment)
    t_eval = build_transform(cfg.image_size, cfg.mean, cfg.std, train=False)
    n_classes = len(splits.class_names)
    settings = loader_settings(cfg, device)
    sources = _pixel_sources(splits, cfg, settings["num_workers"])
    train_ds = sources["train"].with_transform(t_train)
    sampler = None
    if cfg.balance == "oversample":
        sampler = class_balanced_sampler(splits.train.targets, n_classes, generator)
    weights = class_weights(splits.train.targets, n_classes) if cfg.balance == "weighted_loss" else None
    collate = collate_in_numpy if settings["num_workers"] == 0 else None
    common = {"batch_size": cfg.batch_size, "collate_fn": collate, **settings}
    ordered = {}  # push/val/test samplers: sequential in one process
    if distributed.is_distributed():
        if sampler is not None:
            sampler = distributed.DistributedWeightedSampler(sampler.weights, len(train_ds), seed=seed)
        else:
            sampler = DistributedSampler(train_ds, shuffle=True, seed=seed)
        ordered = {
            name: DistributedSampler(getattr(splits, name), shuffle=False) for name in ("train", "val", "test")
        }
    n_train = len(sampler) if sampler is not None else len(train_ds)
    return Loaders(
        train=DataLoader(
            train_ds, sampler=sampler, shuffle=sampler is None, generator=generator,
            # a last batch of one image breaks BatchNorm on 1x1 maps: drop just that case
            drop_last=n_train % cfg.batch_size == 1, **common,
        ),
        push=DataLoader(sources["train"].with_transform(t_eval), sampler=ordered.get("train"), shuffle=False, **common),
        val=DataLoader(sources["val"].with_transform(t_eval), sampler=ordered.get("val"), shuffle=False, **common),
        test=DataLoader(sources["test"].with_transform(t_eval), sampler=ordered.get("test"), shuffle=False, **common),
        class_names=list(splits.class_names),
        loss_weights=weights,
        generator=generator,
    )
