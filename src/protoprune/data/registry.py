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
    return splits


@DATASETS.register("medmnist")
def _medmnist(cfg: DataConfig, seed: int) -> DataSplits:
    return load_medmnist(_require_root(cfg, "a MedMNIST .npz file"))


DATASETS.register("dermamnist", _medmnist)
