"""`protoprune prune-filters CHECKPOINT`: iterative explanation-guided filter pruning (Yeom et al. 2021).

Also `protoprune prune-filters --plot RUN_DIR [RUN_DIR ...] --out curves.png` to compare criteria.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import _CHOICES  # the one list of each setting's values
from ..errors import ConfigError
from .common import require_at_least

NAME = "prune-filters"
HELP = "prune filters of a trained classifier by lrp | weight | grad | taylor | random, fine-tuning between steps"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint",
        nargs="?",
        help="baseline checkpoint .pt (or its run folder) from `protoprune train`",
    )
    _add_schedule_arguments(parser)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override the checkpoint's config, e.g. --set data.root=PATH (repeatable)",
    )
    parser.add_argument(
        "--out", help="run folder (default: <output_dir>/<name>-prune-<method>-<scope>)"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="start over in an existing --out (the old one is kept as .old-N)",
    )
    parser.add_argument(
        "--no-export", action="store_true", help="do not save each step's model (.pt + .onnx)"
    )
    _add_comparison_arguments(parser)


def _add_schedule_arguments(parser: argparse.ArgumentParser) -> None:
    """The prune_filters settings the command line sets directly (the rest: --set)."""
    parser.add_argument(
        "--method",
        choices=_CHOICES["prune_filters.method"],
        help="pruning criterion (default: lrp; random: the control)",
    )
    parser.add_argument(
        "--normalize",
        choices=_CHOICES["prune_filters.normalize"],
        help="per-layer score normalisation (default none, as the reference; reference = its --norm)",
    )
    parser.add_argument(
        "--patience",
        type=int,
        help="fine-tune each step until val balanced accuracy has not improved for N epochs "
        "(--epochs is then the cap)",
    )
    parser.add_argument(
        "--total-pr",
        type=float,
        help="fraction of the original filters removed in total (default 0.6)",
    )
    parser.add_argument(
        "--pr-step",
        type=float,
        help="fraction of the original filters removed per step (default 0.15)",
    )
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs after each step (default 1)")
    parser.add_argument("--min-retention", type=float,
                        help="a ProtoPNet: stop before the first step whose explanation retention "
                             "(prune_filters.retention_measure, default topk_jaccard) is below this")  # fmt: skip
    parser.add_argument("--finetune-batches", type=int,
                        help="cap each fine-tuning epoch at this many batches (default: whole epochs)")  # fmt: skip
    parser.add_argument(
        "--scope",
        choices=_CHOICES["prune_filters.scope"],
        help="one ranking over all layers (default) or per layer",
    )
    parser.add_argument(
        "--round-to",
        type=int,
        help="pruned layers keep a multiple of this many filters (default 8; 1 = exact ratios)",
    )
    parser.add_argument(
        "--ref-per-class", type=int, help="reference images per class for the scores (default 10)"
    )


def _add_comparison_arguments(parser: argparse.ArgumentParser) -> None:
    """Instead of pruning: plot or compare finished runs."""
    parser.add_argument(
        "--plot",
        nargs="+",
        metavar="RUN_DIR",
        help="instead of pruning: plot accuracy vs pruned ratio of these runs into --out (a .png)",
    )
    parser.add_argument(
        "--summarize",
        nargs="+",
        metavar="RUN_DIR",
        help="instead of pruning: compare these runs (one per criterion and training seed) into the "
        "folder --out: schedules.md (mean ± std over seeds, equal-MACs accuracy, LRP − each "
        "criterion with 95%% CIs), schedules.csv, schedules.png",
    )
    parser.add_argument(
        "--metric",
        help="results column (default: test_accuracy for --plot, test_balanced_accuracy for --summarize)",
    )


def execute(args: argparse.Namespace) -> int:
    from ..experiments.filter_pruning import prune_filters
    from ..report.pruning import plot_pruning_curves

    if args.summarize:
        from ..report.pruning import summarize_schedules

        if not args.out:
            raise ConfigError("--summarize needs --out FOLDER", "e.g. --out runs/schedules")
        summarize_schedules(args.summarize, args.out, args.metric or "test_balanced_accuracy")
        print(f"wrote {Path(args.out) / 'schedules.md'}")
        return 0
    if args.plot:
        if not args.out:
            raise ConfigError("--plot needs --out FILE.png", "e.g. --out runs/pruning_curves.png")
        path = plot_pruning_curves(args.plot, args.out, args.metric or "test_accuracy")
        print(f"wrote {path}")
        return 0
    require_at_least(args, epochs=0, finetune_batches=1, round_to=1, ref_per_class=1)
    if not args.checkpoint:
        raise ConfigError(
            "no checkpoint given",
            "protoprune prune-filters runs/<name>/checkpoints/best.pt --method lrp",
        )
    from ..train.checkpoint import checkpoint_config, load_checkpoint

    if not args.no_export:  # each step writes an .onnx: missing packages fail now, not at step 1
        from ..prune.onnx_export import require_onnx_packages

        require_onnx_packages()
    ckpt = load_checkpoint(args.checkpoint)
    options = {
        "method": args.method,
        "total_pr": args.total_pr,
        "pr_step": args.pr_step,
        "epochs": args.epochs,
        "patience": args.patience,
        "normalize": args.normalize,
        "finetune_batches": args.finetune_batches,
        "scope": args.scope,
        "ref_per_class": args.ref_per_class,
        "round_to": args.round_to,
        "min_retention": args.min_retention,
    }
    chosen = [f"prune_filters.{key}={value}" for key, value in options.items() if value is not None]
    cfg = checkpoint_config(ckpt, chosen + args.overrides)
    df = prune_filters(
        ckpt["path"],
        cfg,
        Path(args.out) if args.out else None,
        force=args.force,
        export=not args.no_export,
    )
    cols = [
        "step",
        "pruned_ratio",
        "test_accuracy_pruned",
        "test_accuracy",
        "test_balanced_accuracy",
        "macs",
        "params",
        "latency_ms_b1",
        "retention_topk_jaccard",
        "retention_same_source_image",
        "retention_prp_spearman",
        "localisation_on_lesion",
        "localisation_on_lesion_chance",
    ]
    print(
        df[[c for c in cols if c in df.columns]].to_string(
            index=False, float_format=lambda v: f"{v:.4g}"
        )
    )
    if "stopped" in df.columns and df["stopped"].notna().any():
        print(f"stopped: {df['stopped'].dropna().iloc[-1]}")
    return 0
