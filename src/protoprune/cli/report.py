"""`protoprune report RUN`: a self-contained HTML report (index.html + images) of a run folder."""

from __future__ import annotations

import argparse

from .common import check_device_option, require_at_least

NAME = "report"
HELP = "write an HTML report of a run: config, metrics, curves; for a ProtoPNet prototypes and explanations"
EXAMPLE = "protoprune report runs/<name>"  # shown in the fix when a required argument is missing


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run folder (written by protoprune train)")
    parser.add_argument("--out", help="report folder (default: RUN/report)")
    parser.add_argument(
        "--force", action="store_true", help="replace an existing report folder (kept as .old-N)"
    )
    parser.add_argument("--samples", type=int, default=8, help="test images explained (default 8)")
    parser.add_argument(
        "--k", type=int, help="nearest patches per prototype (default prune_prototypes.k)"
    )
    parser.add_argument("--no-hires", action="store_true",
                        help="draw explanations at the network's input size instead of the image's own")  # fmt: skip
    parser.add_argument("--device", default="auto")


def execute(args: argparse.Namespace) -> int:
    require_at_least(args, samples=0, k=1)
    check_device_option(args)
    from ..report.html import build_report

    page = build_report(
        args.run, args.out, force=args.force, samples=args.samples, k=args.k,
        hires=not args.no_hires, device=args.device,
    )  # fmt: skip
    print(f"report: {page}")
    return 0
