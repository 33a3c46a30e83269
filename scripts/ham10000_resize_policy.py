"""How much lesion each resize policy of HAM10000's 4:3 images loses, from the real lesion masks.

Squash (resize to a square, protoprune's `data.image_size` policy) keeps every pixel and changes the
aspect ratio by 4:3; centre crop to a square drops the outer eighths of the width; padding keeps all
but spends a quarter of the input on padding. Per image: the share of its lesion pixels outside the
centre square (what a centre crop loses). Prints a markdown table per class.

Usage: python scripts/ham10000_resize_policy.py [HAM10000_ROOT]   (default ../shared/data/ham10000)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from protoprune.data.base import read_mask
from protoprune.data.ham10000 import MASK_FOLDER, read_ham10000_metadata


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1].parent / "shared/data/ham10000")
    meta = read_ham10000_metadata(root / "HAM10000_metadata.csv")
    rows = []
    for image_id, dx in zip(meta["image_id"], meta["dx"]):
        mask = read_mask(root / MASK_FOLDER, image_id, (200, 150))  # the images' size
        if mask is None:
            continue
        area = mask.sum()
        lost = mask[:, :25].sum() + mask[:, 175:].sum()  # outside the centre 150 x 150
        rows.append({"dx": dx, "area_share": area / mask.size, "crop_lost": lost / max(area, 1)})
    df = pd.DataFrame(rows)
    print(f"{len(df)} masks\n")
    print("| class | images | lesion area share (mean) | centre crop loses (mean share of lesion) | images losing > 10 % of their lesion |")
    print("|---|---:|---:|---:|---:|")
    for dx, g in [*df.groupby("dx"), ("all", df)]:
        print(f"| {dx} | {len(g)} | {g['area_share'].mean():.3f} | {g['crop_lost'].mean():.3f} | "
              f"{(g['crop_lost'] > 0.1).mean():.1%} |")
    print(f"\nmedian lesion area share: {np.median(df['area_share']):.3f}")


if __name__ == "__main__":
    main()
