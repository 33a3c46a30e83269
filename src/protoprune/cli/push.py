"""`protoprune push CHECKPOINT`: re-push a saved ProtoPNet onto its training images, render prototypes."""

from __future__ import annotations

import argparse
import json

from .common import check_device_option, require_at_least

NAME = "push"
HELP = "re-push a saved ProtoPNet (prototypes -> nearest training patches); writes a new checkpoint and prototype images"
EXAMPLE = "protoprune push runs/<name>/checkpoints/best.pt"  # shown in the fix when a required argument is missing


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="ProtoPNet checkpoint .pt file or its run folder")
    parser.add_argument("--out", help="output folder (default: <run folder>/push)")
    parser.add_argument(
        "--force", action="store_true", help="replace an existing --out folder (kept as .old-N)"
    )
    parser.add_argument(
        "--data-root",
        help="where the training data lives now (replaces data.root of the checkpoint)",
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override the stored config, e.g. --set data.batch_size=128")  # fmt: skip
    parser.add_argument("--last-layer-iterations", type=int, default=0,
                        help="re-optimise the last layer on the pushed model for N iterations (default 0)")  # fmt: skip
    parser.add_argument("--device", default="auto")


def execute(args: argparse.Namespace) -> int:
    require_at_least(args, last_layer_iterations=0)
    check_device_option(args)
    from ..protopnet.repush import push_checkpoint
    from ..train.checkpoint import checkpoint_config, load_checkpoint

    ckpt = load_checkpoint(args.checkpoint)
    root = [f"data.root={args.data_root}"] if args.data_root else []
    summary = push_checkpoint(
        ckpt, checkpoint_config(ckpt, root + args.overrides), args.out,
        args.last_layer_iterations, args.device, args.force,
    )  # fmt: skip
    print(
        json.dumps(
            {
                **summary["push"],
                "val_before": summary["val_before"],
                "val_after": summary["val_after"],
            },
            indent=2,
        )
    )
    print(f"prototype images: {summary['out_dir']}/prototypes\ncheckpoint: {summary['checkpoint']}")
    return 0
