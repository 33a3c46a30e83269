"""`protoprune explain CHECKPOINT [IMAGE...]`: "this looks like that" explanations of a ProtoPNet."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..io import prepare_run_dir

NAME = "explain"
HELP = (
    "explain predictions of a ProtoPNet: local explanations of IMAGE files, or (without images) "
    "of sample test images plus the prototype gallery, global analysis and prototype quality"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="ProtoPNet checkpoint .pt or run folder")
    parser.add_argument(
        "images", nargs="*", help="image files to explain (default: sample test images)"
    )
    parser.add_argument("--ensemble", nargs="+", default=[], metavar="CHECKPOINT",
                        help="further members: explain the ensemble (logits summed) of all checkpoints")  # fmt: skip
    parser.add_argument("--hires", action="store_true",
                        help="draw heatmaps and boxes on the image at its own resolution")  # fmt: skip
    parser.add_argument(
        "--top", type=int, default=10, help="prototypes listed per image (default 10)"
    )
    parser.add_argument(
        "--samples", type=int, default=8, help="test images to explain without IMAGE (default 8)"
    )
    parser.add_argument(
        "--k", type=int,
        help="nearest training patches per prototype, its source included (default "
        "prune_prototypes.k = 6); the test set's are one fewer, as in the original",
    )
    parser.add_argument("--heatmap", choices=("upsample", "prp", "both"), default="both",
                        help="local heatmaps: the upsampled similarity map (as the original), "
                             "PRP pixel relevance, or both side by side (default both)")  # fmt: skip
    parser.add_argument("--masks", metavar="DIR",
                        help="lesion masks <image_id>_segmentation.png (ISIC 2018 Task 1 layout) "
                             "for the on-lesion share (default: the Otsu lightness proxy)")  # fmt: skip
    parser.add_argument("--out", help="output folder (default: <run folder>/explanations)")
    parser.add_argument(
        "--force", action="store_true", help="replace an existing output folder (kept as .old-N)"
    )
    parser.add_argument("--device", default="auto")


def execute(args: argparse.Namespace) -> int:
    from ..explain.analysis import analyse_checkpoint, explain_files
    from ..train.checkpoint import load_checkpoint, run_dir_of

    ckpt = load_checkpoint(args.checkpoint)
    run_dir = run_dir_of(ckpt["path"])
    out = prepare_run_dir(
        Path(args.out) if args.out else run_dir / "explanations", force=args.force
    )
    if args.images or args.ensemble:
        if not args.images:
            from ..errors import ProtopruneError

            raise ProtopruneError(
                "--ensemble explains image files only", "give IMAGE paths after CHECKPOINT"
            )
        results = explain_files(
            [ckpt["path"], *args.ensemble],
            args.images,
            out,
            top=args.top,
            hires=args.hires,
            device=args.device,
            heatmap=args.heatmap,
        )
        for r in results:
            print(json.dumps({k: r[k] for k in ("image_id", "predicted_class", "figure")}))
        warning = results[0]["localisation"]["warning"] if results else None
    else:
        index = analyse_checkpoint(
            ckpt,
            out,
            k=args.k,
            samples=args.samples,
            top=args.top,
            hires=args.hires,
            device=args.device,
            heatmap=args.heatmap,
            masks=args.masks,
        )
        print(json.dumps({"local": len(index["local"]), "quality": index["quality"]}, indent=2))
        warning = index["localisation"]["warning"]
    if warning:
        print(f"warning: {warning}")
    print(f"explanations: {out}")
    return 0
