"""`protoprune demo`: the main job end to end on the bundled real data (CPU, a few minutes)."""

from __future__ import annotations

import argparse

from .common import require_at_least

NAME = "demo"
HELP = "run the whole pipeline end to end on the bundled DermaMNIST subset and write a run folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    parser.add_argument("--force", action="store_true", help="start over if --out exists (the old one is kept as .old-N)")
    parser.add_argument("--epochs", type=int, default=None, help="override the demo's training epochs")


def execute(args: argparse.Namespace) -> int:
    require_at_least(args, epochs=1)
    from ..demo import run_demo
    from ..errors import Interrupted

    try:
        run_demo(args.out, force=args.force, epochs=args.epochs)
    except KeyboardInterrupt:  # the demo has no --resume: its stages' own advice does not apply
        raise Interrupted(
            f"the demo did not finish; rerun it with --force (the unfinished {args.out} is kept "
            "as .old-N)"
        ) from None
    return 0
