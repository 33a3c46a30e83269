"""Data: loaders for real dermoscopy formats, lesion-wise splits, transforms and sampling."""

from .base import ArrayImageDataset, DataSplits, FileImageDataset, ImageDataset, open_rgb
from .checks import DataReport, check_data
from .ham10000 import HAM10000_CLASSES, load_ham10000
from .isic2018 import load_isic2018
from .loaders import build_loaders, build_splits
from .registry import DATASETS, bundled_path
from .splits import lesion_wise_split, resplit_from_file, split_dataset, stratified_split

__all__ = [
    "DATASETS",
    "HAM10000_CLASSES",
    "ArrayImageDataset",
    "DataReport",
    "DataSplits",
    "FileImageDataset",
    "ImageDataset",
    "build_loaders",
    "build_splits",
    "bundled_path",
    "check_data",
    "lesion_wise_split",
    "load_ham10000",
    "load_isic2018",
    "open_rgb",
    "resplit_from_file",
    "split_dataset",
    "stratified_split",
]
