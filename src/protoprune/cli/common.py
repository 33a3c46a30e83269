"""Arguments shared by several subcommands."""

from __future__ import annotations

import argparse

from ..config import RunConfig, load_config


def add_config_arguments(parser: argparse.ArgumentParser, config_required: bool = False) -> None:
    parser.add_argument("config", nargs=None if config_required else "?", help="YAML run config")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=3 (repeatable)",
    )


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="run folder (default: <output_dir>/<name>)")
    parser.add_argument("--force", action="store_true", help="start over in an existing run folder (the old one is kept as .old-N)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    return load_config(getattr(args, "config", None), getattr(args, "overrides", []))
