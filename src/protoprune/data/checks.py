"""Check a configured data set before training: counts, lesions, leaks, missing and corrupt images.

A corrupt JPEG otherwise surfaces hours into training, and a split that shares lesions between
train and test silently inflates every metric; `check_data` finds both up front. It opens every
image (collecting all problems rather than stopping at the first) and reports per split.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..config import DataConfig
from ..errors import DataError
from ..progress import tqdm
from .loaders import build_splits
from .splits import SPLIT_NAMES

_SHOWN = 20  # problems listed one by one in the markdown report


@dataclass
class DataReport:
    """What `check_data` found.

    `missing` lists images the metadata names but the disk lacks; loaders leave those rows out
    (a partial download still trains), so they are reported but do not make `ok` False.
    `corrupt` lists images in the splits that could not be read; `leaked_groups` lesions found
    in more than one split. Either makes `ok` False.
    """

    dataset: str
    root: str | None
    description: str
    class_names: list[str]
    counts: dict[str, dict[str, int]]  # split -> class -> images
    groups: dict[str, dict[str, int]] | None = None  # split -> class -> distinct groups (lesions)
    groups_total: dict[str, int] | None = None  # class -> distinct groups over all splits
    leaked_groups: list[str] = field(default_factory=list)  # groups found in more than one split
    missing: list[str] = field(default_factory=list)  # listed, not on disk, left out of the splits
    corrupt: list[dict[str, str]] = field(
        default_factory=list
    )  # unreadable: {split, image_id, problem}
    n_checked: int = 0  # images we tried to open
    image_sizes: dict[str, int] = field(default_factory=dict)  # "WxH" -> images, most common first
    max_per_split: int | None = None  # the cap data.max_per_split put on every split
    # lesion masks (data.masks): folder, found, missing, unreadable ({split, image_id, problem}),
    # and per class the lesion's share of the image (n, mean, median, q25, q75)
    masks: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not (self.corrupt or self.leaked_groups or (self.masks and self.masks["unreadable"]))

    @property
    def n_images(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ok": self.ok, "n_images": self.n_images}

    def to_markdown(self) -> str:
        lines = [f"# Data check: {self.dataset}", ""]
        if self.root:
            lines.append(f"- root: `{self.root}`")
        lines += [
            f"- {self.description}"
            + (f"; each split capped at {self.max_per_split} images (data.max_per_split)"
               if self.max_per_split else ""),
            f"- images in the splits: {self.n_images}; images opened to check them: {self.n_checked}",
            f"- missing images (left out): {len(self.missing)}; unreadable images: {len(self.corrupt)}; "
            f"groups in more than one split: {len(self.leaked_groups)}",
            f"- result: {'OK' if self.ok else 'PROBLEMS FOUND'}"
            + (
                f" ({len(self.missing)} listed images are not on disk and were left out)"
                if self.missing
                else ""
            ),
            "",
            "## Images per class and split",
            "",
        ]
        lines += _table(self.class_names, self.counts)
        if self.groups is not None and self.groups_total is not None:
            lines += ["", "## Lesions (groups) per class and split", ""]
            lines += _table(self.class_names, {**self.groups, "all": self.groups_total})
        if self.image_sizes:
            sizes = ", ".join(f"{k} ({v})" for k, v in list(self.image_sizes.items())[:5])
            more = (
                f", and {len(self.image_sizes) - 5} other sizes"
                if len(self.image_sizes) > 5
                else ""
            )
            lines += ["", f"Image sizes (WxH): {sizes}{more}"]
        if self.masks is not None:
            lines += _mask_lines(self.masks)
        for title, items in (
            ("Groups in more than one split", self.leaked_groups),
            ("Missing images (left out of the splits)", self.missing),
            (
                "Corrupt images",
                [f"{c['image_id']} ({c['split']}): {c['problem']}" for c in self.corrupt],
            ),
        ):
            if items:
                lines += ["", f"## {title} ({len(items)})", ""]
                lines += [f"- {item}" for item in items[:_SHOWN]]
                if len(items) > _SHOWN:
                    lines.append(f"- ... and {len(items) - _SHOWN} more (see the JSON report)")
        return "\n".join(lines) + "\n"


def _mask_lines(masks: dict[str, Any]) -> list[str]:
    lines = ["", "## Lesion masks", "",
             f"- folder: `{masks['folder']}`; found {masks['found']}, missing {len(masks['missing'])}, "
             f"unreadable {len(masks['unreadable'])}", "",
             "Lesion area as a share of the image (the chance level of an on-lesion share):", "",
             "| class | masks | mean | median | q25 | q75 |", "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, a in masks["area"].items():
        lines.append(f"| {name} | {a['n']} | {a['mean']:.3f} | {a['median']:.3f} | {a['q25']:.3f} | {a['q75']:.3f} |")
    return lines


def _area_stats(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, float)
    if not len(v):
        return {"n": 0, "mean": float("nan"), "median": float("nan"), "q25": float("nan"), "q75": float("nan")}
    return {"n": int(len(v)), "mean": float(v.mean()), "median": float(np.median(v)),
            "q25": float(np.quantile(v, 0.25)), "q75": float(np.quantile(v, 0.75))}  # fmt: skip


def check_masks(parts: dict[str, Any], names: list[str], progress: bool = True) -> dict[str, Any] | None:
    """Read every split image's lesion mask: what is found, missing, unreadable, and the lesion's
    share of the image per class (and over all images)."""
    folder = next(iter(parts.values())).mask_dir
    if folder is None:
        return None
    found, missing, unreadable = 0, [], []
    areas: dict[str, list[float]] = {n: [] for n in names}
    total = sum(len(ds) for ds in parts.values())
    with tqdm(total=total, desc="reading masks", unit="mask", disable=not progress) as bar:
        for split, ds in parts.items():
            for i in range(len(ds)):
                bar.update(1)
                try:
                    mask = ds.load_mask(i)
                except DataError as exc:
                    unreadable.append({"split": split, "image_id": ds.image_ids[i], "problem": exc.problem})
                    continue
                if mask is None:
                    missing.append(ds.image_ids[i])
                    continue
                found += 1
                areas[names[int(ds.targets[i])]].append(float(mask.mean()))
    every = [a for v in areas.values() for a in v]
    return {"folder": str(folder), "found": found, "missing": missing, "unreadable": unreadable,
            "area": {**{n: _area_stats(v) for n, v in areas.items()}, "all": _area_stats(every)}}  # fmt: skip


def _table(class_names: list[str], counts: dict[str, dict[str, int]]) -> list[str]:
    cols = list(counts)
    rows = ["| class | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name in class_names:
        rows.append(f"| {name} | " + " | ".join(str(counts[c].get(name, 0)) for c in cols) + " |")
    rows.append("| **total** | " + " | ".join(str(sum(counts[c].values())) for c in cols) + " |")
    return rows


def check_data(
    cfg: DataConfig, seed: int = 0, open_images: bool = True, progress: bool = True
) -> DataReport:
    """Build the configured data set's split as training does (max_per_split applied) and check it.

    Structural problems (unreadable metadata, unknown labels) still raise a DataError: without
    them there is nothing to count. Image problems are collected: rows the loader left out for
    lack of a file in `missing`, images of the splits that fail to open in `corrupt`.
    """
    splits = build_splits(cfg, seed)  # the counts train will see
    names = list(splits.class_names)
    parts = {s: getattr(splits, s) for s in SPLIT_NAMES}
    counts = {
        s: {names[k]: int(n) for k, n in enumerate(ds.class_counts())} for s, ds in parts.items()
    }
    report = DataReport(
        dataset=cfg.dataset,
        root=cfg.root,
        description=splits.description,
        class_names=names,
        counts=counts,
        missing=[str(m) for m in splits.extra.get("missing_images", [])],
        max_per_split=cfg.max_per_split,
    )
    if all(ds.groups is not None for ds in parts.values()):
        tables = {s: ds.table() for s, ds in parts.items()}
        report.groups = {
            s: {n: int(t.loc[t["dx"] == n, "group"].nunique()) for n in names}
            for s, t in tables.items()
        }
        allrows = pd.concat([t.assign(split=s) for s, t in tables.items()], ignore_index=True)
        report.groups_total = {
            n: int(allrows.loc[allrows["dx"] == n, "group"].nunique()) for n in names
        }
        spread = allrows.groupby("group")["split"].nunique()
        report.leaked_groups = sorted(str(g) for g in spread.index[spread > 1])
    if open_images:
        sizes: Counter[str] = Counter()
        total = sum(len(ds) for ds in parts.values())
        with tqdm(total=total, desc="opening images", unit="img", disable=not progress) as bar:
            for split, ds in parts.items():
                for i in range(len(ds)):
                    bar.update(1)
                    report.n_checked += 1
                    try:
                        image = ds.load_image(i)
                    except DataError as exc:  # absent (deleted since listing) or undecodable
                        report.corrupt.append(
                            {"split": split, "image_id": ds.image_ids[i], "problem": exc.problem}
                        )
                        continue
                    sizes[f"{image.width}x{image.height}"] += 1
        report.image_sizes = dict(sizes.most_common())
        report.masks = check_masks(parts, names, progress)
    return report
