"""`protoprune study CONFIG`: the whole comparison end to end, resumable, with one HTML report."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "study"
HELP = (
    "run the comparison study (baseline, filter pruning per criterion, ProtoPNet + prototype "
    "pruning) over several seeds; resumes where it stopped and writes tables, plots and index.html"
)
EXAMPLE = "protoprune study configs/study_quick.yaml"  # shown in the fix when a required argument is missing


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="study YAML, e.g. configs/study_quick.yaml")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a study value, e.g. --set seeds=[0,1] or --set run.train.epochs=2",
    )  # fmt: skip
    parser.add_argument("--out", help="study folder (default: runs/<study name>)")
    parser.add_argument("--force", action="store_true",
                        help="start over (an existing folder is kept as <out>.old-N)")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="run N seeds side by side, in N processes sharing the CPU cores (or the GPU); "
                             "the same results as one process at the same thread count")  # fmt: skip
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="refuse to continue a folder that already holds results")  # fmt: skip


def execute(args: argparse.Namespace) -> int:
    from ..errors import Interrupted
    from ..study import load_study_config, run_study
    from ..study.aggregate import summarize, summary_markdown

    study = load_study_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / study.name
    try:
        per_seed = run_study(study, out, force=args.force, resume=args.resume, jobs=args.jobs)
    except KeyboardInterrupt:
        raise Interrupted(
            f"the finished units in {out} are kept; rerun the same command to resume the study "
            "from them (a training or pruning curve cut off continues from its last checkpoint)"
        ) from None
    print(summary_markdown(summarize(per_seed), f"Study {study.name}"))
    print(f"report: {out / 'index.html'}")
    return 0
