"""The `protoprune` command: one subcommand a module, each a thin shell over library functions.

Each subcommand module defines `NAME`, `HELP`, `add_arguments(parser)` and `execute(args) -> int`,
and imports torch and the library only inside `execute`, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import logging
import os
import sys

from .. import __version__
from ..errors import Interrupted, ProtopruneError

# a command without resume: what it wrote is whole (files are written atomically), the rest is lost
INTERRUPTED = (
    "the command did not finish; the files it wrote are complete, the unfinished step was not "
    "saved; rerun it (with --force if it had created its output folder)"
)

SUBCOMMANDS = [
    "train",
    "evaluate",
    "demo",
    "check_data",
    "push",
    "prune_filters",
    "prune_curve",
    "prune_prototypes",
    "export_onnx",
    "explain",
    "report",
    "study",
]


class Parser(argparse.ArgumentParser):
    """argparse with protoprune's error format: `error:` and a `fix:` naming an example call
    (the subcommand's EXAMPLE), exit 2, no traceback."""

    example: str | None = None

    def error(self, message: str):  # type: ignore[override]
        example = f"e.g. {self.example}; " if self.example else ""
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {message}\n  fix: {example}{self.prog} --help lists every argument\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="protoprune",
        description="Interpretable (ProtoPNet) and efficient (explanation-guided filter pruning) "
        "image classification for dermoscopy.",
    )
    parser.add_argument("--version", action="version", version=f"protoprune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue  # subcommand not part of this build
            raise
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        p.example = getattr(module, "EXAMPLE", None)
        module.add_arguments(p)
        p.add_argument("--no-progress", action="store_true",
                       help="no progress bars (they are shown only on a terminal anyway)")  # fmt: skip
        p.set_defaults(execute=module.execute)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "execute", None):
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.no_progress:
        from .. import progress

        progress.switch_off()
    from .. import distributed  # imports torch: only once a command runs

    quiet = distributed.launched_by_torchrun() and int(os.environ.get("RANK", 0)) != 0
    try:
        # under torchrun only rank 0 prints results (errors still reach every rank's stderr)
        with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
            return int(args.execute(args) or 0)
    except ProtopruneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:  # the command knows what was saved
        print(f"interrupted: {exc.advice}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"interrupted: {INTERRUPTED}", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()  # leave torchrun's process group cleanly (no-op otherwise)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
