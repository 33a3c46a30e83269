"""How good the Otsu lesion proxy (explain.lesion.proxy_mask) is, against HAM10000's real masks.

For a seeded sample of HAM10000 images (default 1,500, every class): the proxy's Dice with the
real lesion mask at the images' 200 x 150 px and at DermaMNIST's 28 x 28 px (where the proxy was
used), beside a control that knows nothing of the image: a centred ellipse covering the mean lesion
area (0.27 of an image). A proxy is worth keeping only where it beats that control clearly.
Prints a markdown table per class; `--json` writes the numbers.

Usage: python scripts/lesion_proxy_dice.py [HAM10000_ROOT] [--images N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from protoprune.data.base import read_mask
from protoprune.data.ham10000 import MASK_FOLDER, read_ham10000_metadata
from protoprune.explain.lesion import proxy_mask

SIZES = {"200x150": (200, 150), "28x28": (28, 28)}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """2|A∩B| / (|A| + |B|) (1 when both are empty)."""
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else 1.0


def centred_ellipse(hw: tuple[int, int], area_share: float) -> np.ndarray:
    """A centred ellipse with the image's aspect ratio covering `area_share` of it."""
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.sqrt(area_share / np.pi)  # radius as a share of each side
    return ((yy + 0.5 - h / 2) / (r * h)) ** 2 + ((xx + 0.5 - w / 2) / (r * w)) ** 2 <= 1


def measure(root: Path, n: int, seed: int) -> pd.DataFrame:
    meta = read_ham10000_metadata(root / "HAM10000_metadata.csv")
    meta = meta.sample(n=min(n, len(meta)), random_state=seed)
    rows = []
    for image_id, dx in zip(meta["image_id"], meta["dx"]):
        with Image.open(root / "images" / f"{image_id}.jpg") as im:
            image = im.convert("RGB")
        for name, size in SIZES.items():
            real = read_mask(root / MASK_FOLDER, image_id, size)
            if real is None:
                continue
            pixels = np.asarray(image.resize(size, Image.BILINEAR))
            rows.append({"image_id": image_id, "dx": dx, "size": name, "area": real.mean(),
                         "proxy": dice(proxy_mask(pixels), real),
                         "ellipse": dice(centred_ellipse(real.shape, 0.266), real)})  # fmt: skip
    return pd.DataFrame(rows)


def table(df: pd.DataFrame) -> str:
    lines = ["| size | class | images | lesion area | proxy Dice (mean) | proxy Dice (median) | "
             "proxy Dice > 0.5 | centred ellipse Dice (mean) | proxy − ellipse |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for size, by_size in df.groupby("size", sort=False):
        for dx, g in [*by_size.groupby("dx"), ("all", by_size)]:
            diff = g["proxy"] - g["ellipse"]
            half = 1.96 * diff.std(ddof=1) / np.sqrt(len(g)) if len(g) > 1 else float("nan")
            lines.append(
                f"| {size} | {dx} | {len(g)} | {g['area'].mean():.3f} | {g['proxy'].mean():.3f} | "
                f"{g['proxy'].median():.3f} | {(g['proxy'] > 0.5).mean():.0%} | "
                f"{g['ellipse'].mean():.3f} | {diff.mean():+.3f} [{diff.mean() - half:+.3f}, "
                f"{diff.mean() + half:+.3f}] |"
            )
    return "\n".join(lines)


def main() -> None:
    default = Path(__file__).resolve().parents[1].parent / "shared/data/ham10000"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", type=Path, default=default)
    ap.add_argument("--images", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    df = measure(args.root, args.images, args.seed)
    print(f"{df['image_id'].nunique()} images, seed {args.seed}\n")
    print(table(df))
    if args.json:
        summary = {size: {"images": len(g), "proxy_dice_mean": g["proxy"].mean(),
                          "ellipse_dice_mean": g["ellipse"].mean()}
                   for size, g in df.groupby("size")}  # fmt: skip
        args.json.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
