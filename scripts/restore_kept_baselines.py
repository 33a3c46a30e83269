"""Put a kept study's finished baseline units back into a study folder, so its ProtoPNet units can
be (re)trained there without training the baselines again.

A ProtoPNet unit needs of its seed's baseline only the split (data.split_file) and the baseline's
run id (its fingerprint's dependency); both survive in the kept copy (`keep_study_outputs.py`):
the run id in done.json, the split rebuilt here from the kept config.yaml (seeded, the same file
the baseline wrote; it checks that the rebuilt split has the images the kept metrics counted).
Only baselines are restored: a kept ProtoPNet has no checkpoint, and the units after it need one.

Usage: PROTOPRUNE_DATA=... python scripts/restore_kept_baselines.py KEPT_DIR STUDY_DIR [--seeds 0,2]
  e.g. studies/ham10000 runs/study-ham10000 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from protoprune.config import load_config
from protoprune.data.loaders import build_splits
from protoprune.io import atomic_write_text


def restore(kept_unit: Path, target: Path) -> int:
    """Copy one kept baseline unit to `target` and write its split.csv; returns the test images."""
    cfg = load_config(kept_unit / "config.yaml")
    splits = build_splits(cfg.data, cfg.seed)
    counted = json.loads((kept_unit / "metrics.json").read_text())["test"]["n"]
    if len(splits.test) != counted:
        raise ValueError(f"error: the rebuilt split of {kept_unit} has {len(splits.test)} test images, "
                         f"its metrics counted {counted}\nfix: use the data the study ran on\n")  # fmt: skip
    target.mkdir(parents=True, exist_ok=True)
    for path in kept_unit.iterdir():
        if path.is_file():
            shutil.copy2(path, target / path.name)
    atomic_write_text(target / "split.csv", splits.split_table().to_csv(index=False))
    return counted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kept", type=Path)
    ap.add_argument("study", type=Path)
    ap.add_argument("--seeds", help="comma-separated seeds (default: every kept baseline)")
    args = ap.parse_args()
    seeds = None if args.seeds is None else {int(s) for s in args.seeds.split(",")}
    units = [p for p in sorted(args.kept.glob("runs/*/seed*/baseline")) if (p / "done.json").is_file()
             and (seeds is None or int(p.parent.name.removeprefix("seed")) in seeds)]  # fmt: skip
    if not units:
        ap.exit(2, f"error: no finished baseline under {args.kept}/runs for those seeds\nfix: give a kept study\n")
    for unit in units:
        target = args.study / unit.relative_to(args.kept)
        if (target / "done.json").is_file():
            print(f"{target}: already there, left as it is")
            continue
        try:
            n = restore(unit, target)
        except ValueError as exc:
            ap.exit(2, str(exc))
        print(f"{target}: restored ({n} test images in its rebuilt split)")


if __name__ == "__main__":
    main()
