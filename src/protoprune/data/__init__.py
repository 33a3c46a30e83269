"""Data: loaders for real dermoscopy formats, lesion-wise splits, transforms and sampling."""

from .base import ArrayImageDataset, DataSplits, FileImageDataset, ImageDataset, open_rgb
from .loaders import build_loaders, build_splits
from .registry import DATASETS, bundled_path

__all__ = [
    "DATASETS",
    "ArrayImageDataset",
    "DataSplits",
    "FileImageDataset",
    "ImageDataset",
    "build_loaders",
    "build_splits",
    "bundled_path",
    "open_rgb",
]
