"""The repair control of a study's ProtoPNet trunk pruning: each seed's unpruned ProtoPNet repaired
as often, and as each pruning step is, without removing a filter
(`protoprune.experiments.repair_control`). A pruned model's explanation retention reads beside it:
what the repairs alone change.

Writes <study>/runs/<arch>/seed<N>/protopnet-repair-control/ (control.csv after each repair, then
result.json with the curve and done.json); a seed already done is skipped. Needs the seed's
ProtoPNet checkpoint (runs/<arch>/seed<N>/protopnet/checkpoints/best.pt) and the data. Measured
on HAM10000 (224 px, 2 CPU cores, bfloat16): about 6 min a repair.

Usage: python scripts/repair_control.py STUDY_DIR --seeds 0,1,2 [--arch resnet18]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from protoprune.experiments.repair_control import repair_control
from protoprune.io import atomic_write_json
from protoprune.study.config import load_study_config
from protoprune.study.units import Unit, unit_config, unit_dir

NAME = "protopnet-repair-control"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("--seeds", required=True, help="comma-separated, e.g. 0,1,2")
    ap.add_argument("--arch", default="resnet18")
    args = ap.parse_args()
    if not (args.study / "study.yaml").is_file():
        ap.exit(2, f"error: {args.study} holds no study.yaml\nfix: give the folder a `protoprune study` run wrote\n")
    study = load_study_config(args.study / "study.yaml")
    seeds = [int(s) for s in args.seeds.split(",")]
    checkpoints = {s: unit_dir(args.study, Unit(args.arch, s, "protopnet")) / "checkpoints" / "best.pt" for s in seeds}
    for s, ckpt in checkpoints.items():  # every seed checked before the long work
        if not ckpt.is_file():
            ap.exit(2, f"error: no ProtoPNet checkpoint for seed {s}: {ckpt}\n"
                       "fix: run the study's protopnet arm for that seed first\n")
    for s, ckpt in checkpoints.items():
        out = args.study / "runs" / args.arch / f"seed{s}" / NAME
        if (out / "done.json").is_file():
            print(f"seed {s}: done already ({out})")
            continue
        out.mkdir(parents=True, exist_ok=True)
        cfg = unit_config(study, Unit(args.arch, s, "protopnet_filter", "lrp"), args.study)
        df = repair_control(ckpt, cfg, out_csv=out / "control.csv")
        curve = df.assign(arch=args.arch, seed=s, arm="repair_control", method="repair only")
        atomic_write_json(out / "result.json", {"unit": f"{args.arch}/seed{s}/{NAME}",
                                                "curves": curve.replace({np.nan: None}).to_dict(orient="records")})  # fmt: skip
        atomic_write_json(out / "done.json", {"repairs": int(df["step"].max())})
        print(f"seed {s}: {out}")


if __name__ == "__main__":
    main()
