"""`protoprune explain CHECKPOINT [IMAGE...]`: "this looks like that" explanations of a ProtoPNet."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ProtopruneError
from ..io import prepare_run_dir
from .common import check_device_option, require_at_least

NAME = "explain"
HELP = (
    "explain predictions of a ProtoPNet: local explanations of IMAGE files, or (without images) "
    "of sample test images plus the prototype gallery, global analysis and prototype quality"
)
EXAMPLE = "protoprune explain runs/<name>/checkpoints/best.pt lesion.jpg"  # shown in the fix when a required argument is missing


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
    require_at_least(args, top=1, samples=0, k=1)
    check_device_option(args)
    from ..data.base import open_rgb
    from ..explain.analysis import analyse_checkpoint, explain_files
    from ..explain.lesion import mask_folder
    from ..train.checkpoint import load_checkpoint, require_protopnet, run_dir_of

    if args.ensemble and not args.images:
        raise ProtopruneError(
            "--ensemble explains image files only", "give IMAGE paths after CHECKPOINT"
        )
    for image in args.images:  # an unreadable image fails now, not after the rendering
        open_rgb(image)
    mask_folder(args.masks)  # a mask folder without masks too
    ckpt = require_protopnet(load_checkpoint(args.checkpoint))
    for member in args.ensemble:
        require_protopnet(load_checkpoint(member))
    out = Path(args.out) if args.out else run_dir_of(ckpt["path"]) / "explanations"
    out = prepare_run_dir(out, force=args.force)  # everything above is checked: now write
    if args.images:
        results = explain_files(
            [ckpt["path"], *args.ensemble], args.images, out, top=args.top, hires=args.hires,
            device=args.device, heatmap=args.heatmap,
        )  # fmt: skip
        for r in results:
            print(json.dumps({k: r[k] for k in ("image_id", "predicted_class", "figure")}))
        warning = results[0]["localisation"]["warning"] if results else None
    else:
        index = analyse_checkpoint(
            ckpt, out, k=args.k, samples=args.samples, top=args.top, hires=args.hires,
            device=args.device,
            heatmap=args.heatmap, masks=args.masks,
        )  # fmt: skip
        print(json.dumps({"local": len(index["local"]), "quality": index["quality"]}, indent=2))
        warning = index["localisation"]["warning"]
    if warning:
        print(f"warning: {warning}")
    print(f"explanations: {out}")
    return 0
