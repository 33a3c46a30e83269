"""`protoprune prune-prototypes RUN`: ProtoPNet prototype pruning with last-layer fine-tuning."""

from __future__ import annotations

import argparse
import json

from .common import check_device_option, require_at_least

NAME = "prune-prototypes"
HELP = (
    "prune prototypes whose k nearest training patches are mostly of other classes, merge "
    "duplicates, fine-tune the last layer; writes RUN/prototype_pruning/"
)
EXAMPLE = "protoprune prune-prototypes runs/<name>"  # shown in the fix when a required argument is missing


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="ProtoPNet run folder or checkpoint .pt")
    parser.add_argument("--k", type=int, help="nearest training patches per prototype (default 6)")
    parser.add_argument("--threshold", type=int,
                        help="prune when fewer than this many of them are of the prototype's class (default 3)")  # fmt: skip
    parser.add_argument("--finetune-iterations", type=int,
                        help="last-layer iterations after pruning (default 100)")  # fmt: skip
    parser.add_argument("--min-per-class", type=int, default=0,
                        help="never prune a class below this many prototypes (default 0: the original criterion)")  # fmt: skip
    parser.add_argument("--out", help="output folder (default: <run folder>/prototype_pruning)")
    parser.add_argument(
        "--force", action="store_true", help="replace an existing output folder (kept as .old-N)"
    )
    parser.add_argument(
        "--data-root", help="where the training data lives now (replaces data.root)"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override the stored config, e.g. --set data.batch_size=128")  # fmt: skip
    parser.add_argument("--device", default="auto")


def execute(args: argparse.Namespace) -> int:
    require_at_least(args, k=1, threshold=0, finetune_iterations=0, min_per_class=0)
    check_device_option(args)
    from ..io import check_run_dir
    from ..protopnet.prototype_pruning import prune_prototypes
    from ..train.checkpoint import checkpoint_config, load_checkpoint

    if args.out:
        check_run_dir(args.out, force=args.force)
    ckpt = load_checkpoint(args.run)
    root = [f"data.root={args.data_root}"] if args.data_root else []
    summary = prune_prototypes(
        ckpt, checkpoint_config(ckpt, root + args.overrides), args.out, k=args.k, threshold=args.threshold,
        finetune_iterations=args.finetune_iterations, min_per_class=args.min_per_class, device=args.device, force=args.force,
    )  # fmt: skip
    print(
        json.dumps(
            {k: summary[k] for k in ("prototypes_before", "prototypes_after", "pruned", "merged")}
        )
    )
    print(json.dumps(summary["headline"], indent=2))
    print(f"report: {summary['out_dir']}/prototype_pruning.md\ncheckpoint: {summary['checkpoint']}")
    return 0
