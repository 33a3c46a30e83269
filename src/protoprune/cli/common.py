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


def require_at_least(args: argparse.Namespace, **minimums: int) -> None:
    """Refuse a count option below its minimum before any work (e.g. --top -1 or --k 0).

    Python slicing would read --top -1 as "all but one", a negative iteration count as none:
    neither is what was asked, so both are errors naming the option.
    """
    from ..errors import ConfigError

    for name, minimum in minimums.items():
        value = getattr(args, name, None)
        if value is not None and value < minimum:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(
                f"{flag} = {value} must be {minimum} or more",
                f"give {flag} a whole number >= {minimum}, or leave it out for the default",
            )


def check_device_option(args: argparse.Namespace) -> None:
    """An unknown or absent --device fails now, not after data and model are loaded."""
    from ..devices import check_device

    check_device(args.device, "--device")
