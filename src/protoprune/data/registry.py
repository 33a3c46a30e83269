"""Data sets by name: each builder turns a DataConfig (+ seed) into untransformed DataSplits."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

from ..config import DataConfig
from ..errors import ConfigError
from ..registry import Registry
from .base import DataSplits
from .medmnist import load_medmnist
from .splits import resplit_from_file

DATASETS: Registry[Callable[[DataConfig, int], DataSplits]] = Registry("dataset")


def bundled_path(*parts: str) -> Path:
    """Path of a file in the package's bundled data (a real DermaMNIST/HAM10000 subset)."""
    return Path(str(resources.files("protoprune.data").joinpath("bundled", *parts)))


def _require_root(cfg: DataConfig, what: str) -> Path:
    if not cfg.root:
        raise ConfigError(f"data.root is not set for data set {cfg.dataset!r}", f"set data.root to {what}")
    return Path(cfg.root).expanduser()


@DATASETS.register("bundled")
def _bundled(cfg: DataConfig, seed: int) -> DataSplits:
    splits = load_medmnist(bundled_path("dermamnist_subset.npz"))
    splits.description = "bundled DermaMNIST subset (official split, stratified subset)"
    return resplit_from_file(splits, cfg.split_file) if cfg.split_file else splits


@DATASETS.register("medmnist")
def _medmnist(cfg: DataConfig, seed: int) -> DataSplits:
    splits = load_medmnist(_require_root(cfg, "a MedMNIST .npz file"))
    return resplit_from_file(splits, cfg.split_file) if cfg.split_file else splits


DATASETS.register("dermamnist", _medmnist)


# --- file-based data sets in their real on-disk layouts (split by protoprune.data.splits) ---


@DATASETS.register("ham10000")
def _ham10000(cfg: DataConfig, seed: int) -> DataSplits:
    from .ham10000 import ham10000_splits

    root = _require_root(cfg, "the folder holding HAM10000_metadata.csv and the images")
    return ham10000_splits(root, cfg.split_ratios, seed, cfg.split_file)


@DATASETS.register("isic2018")
def _isic2018(cfg: DataConfig, seed: int) -> DataSplits:
    from .isic2018 import isic2018_splits

    root = _require_root(
        cfg, "the folder holding ISIC2018_Task3_Test_GroundTruth.csv and the images"
    )
    return isic2018_splits(root, cfg.split_ratios, seed, cfg.split_file)


@DATASETS.register("imagefolder")
def _imagefolder(cfg: DataConfig, seed: int) -> DataSplits:
    from .folders import imagefolder_splits

    root = _require_root(
        cfg, "a folder laid out as <root>/<class>/<image> or <root>/train/<class>/<image>"
    )
    return imagefolder_splits(root, cfg.split_ratios, seed, cfg.split_file)


@DATASETS.register("cifar10")
def _cifar10(cfg: DataConfig, seed: int) -> DataSplits:
    from .folders import cifar10_splits

    return cifar10_splits(
        _require_root(cfg, "the folder holding cifar-10-batches-py"),
        cfg.split_ratios,
        seed,
        cfg.split_file,
    )


@DATASETS.register("cub200")
def _cub200(cfg: DataConfig, seed: int) -> DataSplits:
    from .folders import cub200_splits

    return cub200_splits(
        _require_root(cfg, "the extracted CUB_200_2011 folder"),
        cfg.split_ratios,
        seed,
        cfg.split_file,
    )
