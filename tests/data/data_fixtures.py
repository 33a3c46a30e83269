"""Writers of tiny data sets in their real on-disk layouts, shared by the data tests."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from protoprune.data.ham10000 import HAM10000_CLASSES


def class_color(k: int, n: int = 7) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(k / n, 0.8, 0.9)
    return int(r * 255), int(g * 255), int(b * 255)


def write_jpeg(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (16, 12)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, "JPEG", quality=95)
    return path


def ham_metadata(lesions_per_class: int = 4, seed: int = 0) -> pd.DataFrame:
    """A HAM10000-style metadata table: several images (1-3) per lesion, one dx per lesion."""
    rng = np.random.default_rng(seed)
    rows, image_no, lesion_no = [], 24306, 0
    for dx in HAM10000_CLASSES:
        for _ in range(lesions_per_class):
            lesion_no += 1
            for _ in range(int(rng.integers(1, 4))):
                rows.append(
                    {
                        "lesion_id": f"HAM_{lesion_no:07d}",
                        "image_id": f"ISIC_{image_no:07d}",
                        "dx": dx,
                        "dx_type": "histo",
                        "age": 50.0,
                        "sex": "male",
                        "localization": "back",
                    }
                )
                image_no += 1
    return pd.DataFrame(rows)


def write_ham(root: Path, meta: pd.DataFrame, layout: str = "official") -> Path:
    """Write HAM10000_metadata.csv and one JPEG per row (coloured by class).

    layout "official": images alternate between HAM10000_images_part_1/ and _part_2/;
    "images": all in images/.
    """
    root.mkdir(parents=True, exist_ok=True)
    meta.to_csv(root / "HAM10000_metadata.csv", index=False)
    for i, row in enumerate(meta.itertuples()):
        folder = "images" if layout == "images" else f"HAM10000_images_part_{1 + i % 2}"
        write_jpeg(
            root / folder / f"{row.image_id}.jpg", class_color(HAM10000_CLASSES.index(row.dx))
        )
    return root


def image_file(root: Path, image_id: str) -> Path:
    (path,) = root.glob(f"*/{image_id}.jpg")
    return path
