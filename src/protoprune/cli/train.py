"""`protoprune train CONFIG`: train a baseline classifier or a ProtoPNet from a YAML config."""

from __future__ import annotations

import argparse

from .common import add_config_arguments, add_output_arguments, config_from_args

NAME = "train"
HELP = "train a model (model.type: classifier or protopnet) from a YAML config"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    add_output_arguments(parser)


def execute(args: argparse.Namespace) -> int:
    from ..train.run import run_training

    cfg = config_from_args(args)
    run_training(cfg, args.out, force=args.force, resume=args.resume)
    return 0
