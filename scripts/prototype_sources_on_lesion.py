"""Where each ProtoPNet's prototypes come from relative to the real lesion masks, for every
finished seed of a study (its push records only: no checkpoint needed, so kept study folders work).

For the ProtoPNet (its selected push) and the prototypes prototype pruning kept: the share of
prototypes whose source box lies mostly on the lesion and the box's mean on-lesion share, each
beside its chance on the same images (the same-sized box at every position,
`explain.source_boxes`), per seed, then the mean over seeds with a 95 % t interval and the paired
difference from chance; and per class, pooled over seeds.

Usage: python scripts/prototype_sources_on_lesion.py STUDY_DIR --masks MASK_DIR [--out DIR]
  e.g. studies/ham10000 --masks $PROTOPRUNE_DATA/ham10000/HAM10000_segmentations_lesion_tschandl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from protoprune.explain.source_boxes import (
    selected_push_records,
    source_boxes_on_lesion,
    summarize_source_boxes,
)
from protoprune.io import atomic_write_text
from protoprune.metrics import paired_t_interval

MODELS = {"protopnet": "ProtoPNet", "protopnet-pruned": "+ prototype pruning"}


def seed_tables(study: Path, masks: Path) -> pd.DataFrame:
    """Per-prototype rows of every finished ProtoPNet unit, with its seed and model."""
    tables = []
    for run in sorted(study.glob("runs/*/seed*/protopnet")):
        if not (run / "done.json").is_file():
            continue
        seed = int(run.parent.name.removeprefix("seed"))
        records, hw = selected_push_records(run)
        table = source_boxes_on_lesion(records, masks, hw).assign(seed=seed, model="protopnet")
        tables.append(table)
        pruned = run.parent / "protopnet-pruned" / "prototype_pruning.json"
        if (run.parent / "protopnet-pruned" / "done.json").is_file():
            kept = set(json.loads(pruned.read_text())["kept_indices"])
            tables.append(table[table["prototype"].isin(kept)].assign(model="protopnet-pruned"))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def _ci(values: pd.Series, sign: str = "") -> str:
    t = paired_t_interval(values.to_numpy())
    text = format(t["mean"], f"{sign}.3f")
    return text if t["n"] < 2 else f"{text} [{t['ci_low']:{sign}.3f}, {t['ci_high']:{sign}.3f}]"


def markdown(rows: pd.DataFrame) -> str:
    per_seed = pd.DataFrame([{"model": m, "seed": s, **summarize_source_boxes(g)}
                             for (m, s), g in rows.groupby(["model", "seed"])])  # fmt: skip
    lines = ["| model | seed | prototypes | source box mostly on the lesion | chance | box's on-lesion share "
             "| chance | lesion area | distinct source images |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for _, r in per_seed.iterrows():
        lines.append(f"| {MODELS[r['model']]} | {r['seed']} | {r['prototypes']} | {r['on_lesion']:.3f} | "
                     f"{r['chance_on_lesion']:.3f} | {r['box_on_lesion']:.3f} | {r['chance_box_on_lesion']:.3f} | "
                     f"{r['lesion_area']:.3f} | {r['distinct_images']} |")  # fmt: skip
    lines += ["", "| model | seeds | mostly on the lesion [95 % CI] | minus chance | box share [95 % CI] | minus chance |",
              "|---|---:|---|---|---|---|"]  # fmt: skip
    for model, g in per_seed.groupby("model"):
        lines.append(f"| {MODELS[model]} | {len(g)} | {_ci(g['on_lesion'])} | "
                     f"{_ci(g['on_lesion'] - g['chance_on_lesion'], '+')} | {_ci(g['box_on_lesion'])} | "
                     f"{_ci(g['box_on_lesion'] - g['chance_box_on_lesion'], '+')} |")  # fmt: skip
    by_class = rows[rows["model"] == "protopnet"].groupby("class")
    lines += ["", "| class (ProtoPNet, all seeds) | prototypes | mostly on the lesion | chance | lesion area |",
              "|---|---:|---:|---:|---:|"]  # fmt: skip
    lines += [f"| {c} | {len(g)} | {g['on_lesion'].mean():.3f} | {g['chance_on_lesion'].mean():.3f} | "
              f"{g['lesion_area'].mean():.3f} |" for c, g in by_class]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("--masks", type=Path, required=True, help="the lesion masks (<image_id>_segmentation.png)")
    ap.add_argument("--out", type=Path, help="also write prototype_sources.{csv,md} there")
    args = ap.parse_args()
    if not args.masks.is_dir():
        ap.exit(2, f"error: no mask folder {args.masks}\nfix: give the HAM10000 segmentation folder\n")
    rows = seed_tables(args.study, args.masks)
    if rows.empty:
        ap.exit(2, f"error: no finished ProtoPNet unit under {args.study}/runs\nfix: give a study folder\n")
    text = markdown(rows)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "prototype_sources.csv", rows.to_csv(index=False))
        atomic_write_text(args.out / "prototype_sources.md", text)


if __name__ == "__main__":
    main()
