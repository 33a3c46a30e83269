#!/usr/bin/env python3
"""Regenerate protoprune's bundled default data set from $PROTOPRUNE_DATA (or given paths).

Writes src/protoprune/data/bundled/:
- dermamnist_subset.npz: a seeded, class-stratified subset of each official DermaMNIST split
  (MedMNIST layout), with every class present in every split;
- ham10000/: a few higher-resolution HAM10000 images per class in the official layout
  (HAM10000_metadata.csv + images/), for explanation figures and loader tests;
- LICENSE.md: attribution and licence (CC BY-NC 4.0).

Usage: python scripts/make_bundled_data.py [--dermamnist PATH] [--ham10000 DIR]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

SIZES = {"train": 1000, "val": 200, "test": 400}
HIRES_PER_CLASS = 3
OUT = Path(__file__).resolve().parents[1] / "src" / "protoprune" / "data" / "bundled"

LICENSE = """# Bundled data: attribution and licence

Real dermoscopy images from HAM10000, licence **CC BY-NC 4.0** (non-commercial research use,
with attribution).

- Tschandl P., Rosendahl C., Kittler H. The HAM10000 dataset, a large collection of
  multi-source dermatoscopic images of common pigmented skin lesions. Sci. Data 5, 180161 (2018),
  doi:10.1038/sdata.2018.161.
- Yang J. et al. MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image
  classification. Sci. Data 10, 41 (2023) (DermaMNIST, 28x28).

`dermamnist_subset.npz`: a seeded (seed 0), class-stratified subset of DermaMNIST's official
train/val/test splits ({sizes}), MedMNIST npz layout, labels 0..6 = akiec, bcc, bkl, df, mel, nv,
vasc; each image keeps its index in the official split in `{{split}}_index`.
`ham10000/`: {hires} higher-resolution images per class (128x96 JPEG, downsized from the 600x450
originals) with their rows of the original HAM10000_metadata.csv.

Regenerate with `python scripts/make_bundled_data.py`.
"""


def stratified_take(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n indices, proportional per class but at least 3 of every class."""
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.maximum(3, np.floor(counts / counts.sum() * n).astype(int))
    while quota.sum() > n:
        quota[np.argmax(quota)] -= 1
    while quota.sum() < n:
        quota[np.argmax(counts / quota)] += 1
    picked = [rng.choice(np.flatnonzero(labels == c), size=q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picked))


def main() -> None:
    from protoprune.config import data_dir

    shared = Path(data_dir())  # $PROTOPRUNE_DATA, as the shipped configs read it
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dermamnist", type=Path, default=shared / "dermamnist" / "dermamnist.npz")
    ap.add_argument("--ham10000", type=Path, default=shared / "ham10000")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    OUT.mkdir(parents=True, exist_ok=True)

    src = np.load(args.dermamnist)
    arrays = {}
    for split, n in SIZES.items():
        labels = src[f"{split}_labels"].reshape(-1)
        idx = stratified_take(labels, n, rng)
        arrays[f"{split}_images"] = src[f"{split}_images"][idx]
        arrays[f"{split}_labels"] = src[f"{split}_labels"][idx]
        arrays[f"{split}_index"] = idx
    np.savez_compressed(OUT / "dermamnist_subset.npz", **arrays)

    meta = pd.read_csv(args.ham10000 / "HAM10000_metadata.csv")
    present = {p.stem for p in (args.ham10000 / "images").glob("*.jpg")}
    meta = meta[meta.image_id.isin(present)].sort_values("image_id")
    # one image per lesion so the bundled HAM10000 set can be split lesion-wise without leaks
    meta = meta.drop_duplicates("lesion_id")
    chosen = meta.groupby("dx", group_keys=False).apply(
        lambda g: g.sample(min(HIRES_PER_CLASS, len(g)), random_state=args.seed)
    )
    chosen = meta.loc[chosen.index]  # pandas >= 3 drops the grouping column (dx) in apply
    ham_out = OUT / "ham10000"
    if ham_out.exists():
        shutil.rmtree(ham_out)
    (ham_out / "images").mkdir(parents=True)
    for image_id in chosen.image_id:
        shutil.copy2(args.ham10000 / "images" / f"{image_id}.jpg", ham_out / "images" / f"{image_id}.jpg")
    chosen.sort_values("image_id").to_csv(ham_out / "HAM10000_metadata.csv", index=False)

    sizes = ", ".join(f"{k} {v}" for k, v in SIZES.items())
    (OUT / "LICENSE.md").write_text(LICENSE.format(sizes=sizes, hires=HIRES_PER_CLASS))
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
