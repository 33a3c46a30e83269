"""`protoprune check-data CONFIG`: counts, lesions and unreadable images of a data set, before training."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..io import atomic_write_json, atomic_write_text
from .common import add_config_arguments, config_from_args

NAME = "check-data"
HELP = "check a data set: per-class counts per split, lesions per class, missing and corrupt images"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", help="folder for data_report.md and data_report.json")
    parser.add_argument("--no-open", action="store_true", help="do not open every image (faster, finds no corrupt files)")


def execute(args: argparse.Namespace) -> int:
    from ..data.checks import check_data

    cfg = config_from_args(args)
    report = check_data(cfg.data, cfg.seed, open_images=not args.no_open)
    text = report.to_markdown()
    print(text)
    if args.out:
        out = Path(args.out)
        atomic_write_text(out / "data_report.md", text)
        atomic_write_json(out / "data_report.json", report.to_dict())
    return 0 if report.ok else 1
