"""`protoprune prune-curve CHECKPOINT`: accuracy vs pruned ratio with no fine-tuning, per criterion.

Also `protoprune prune-curve --summarize RUN_DIR [RUN_DIR ...] --out DIR` pools several runs
(one per training seed) with paired differences and 95 % confidence intervals.
"""

from __future__ import annotations

import argparse

from ..errors import ConfigError

NAME = "prune-curve"
HELP = "one-shot pruning curves (no fine-tuning) of lrp | weight | grad | taylor | random"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", nargs="?", help="baseline checkpoint .pt (or its run folder)")
    parser.add_argument("--methods", default="lrp,weight,grad,taylor,random",
                        help="comma-separated criteria (default: all five)")  # fmt: skip
    parser.add_argument("--ratios", default="0.05:0.6:0.05",
                        help="fractions of filters removed: start:stop:step or a list (default 0.05:0.6:0.05)")  # fmt: skip
    parser.add_argument("--ref-seeds", type=int, default=3,
                        help="reference-set draws (and random seeds) per criterion (default 3)")  # fmt: skip
    parser.add_argument("--normalize", default="none",
                        help="comma-separated: none (default, the reference's default) and/or "
                        "reference (its --norm: layer sum for lrp/weight, L2 for grad/taylor)")  # fmt: skip
    parser.add_argument("--bn-recalibrate", action="store_true",
                        help="re-estimate BatchNorm statistics on training batches after pruning")  # fmt: skip
    parser.add_argument("--bn-batches", type=int, default=20, help="batches for --bn-recalibrate")
    parser.add_argument("--splits", default="val,test",
                        help="splits evaluated after each cut (default val,test)")  # fmt: skip
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override the checkpoint's config, e.g. --set data.root=PATH")  # fmt: skip
    parser.add_argument("--out", help="run folder (default <output_dir>/<name>-prune-curve)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted --out")
    parser.add_argument("--force", action="store_true",
                        help="start over in an existing --out (the old one is kept as .old-N)")  # fmt: skip
    parser.add_argument("--summarize", nargs="+", metavar="RUN_DIR",
                        help="instead of pruning: pool these curve folders into --out")  # fmt: skip


def execute(args: argparse.Namespace) -> int:
    from ..experiments.pruning_curve import pruning_curve
    from ..prune.curve import CurveSettings, parse_ratios
    from ..report.curves import summarize_curves

    if args.summarize:
        if not args.out:
            raise ConfigError("--summarize needs --out DIR", "e.g. --out runs/curves-pooled")
        summarize_curves(args.summarize, args.out)
        print(f"wrote {args.out}/curve.md, curve.png, curves.csv")
        return 0
    if not args.checkpoint:
        raise ConfigError("no checkpoint given",
                          "protoprune prune-curve runs/<name>/checkpoints/best.pt")  # fmt: skip
    settings = CurveSettings(
        methods=[m.strip() for m in args.methods.split(",") if m.strip()],
        ratios=parse_ratios(args.ratios),
        ref_seeds=args.ref_seeds,
        normalizations=[n.strip() for n in args.normalize.split(",") if n.strip()],
        bn_recalibrate=args.bn_recalibrate,
        bn_batches=args.bn_batches,
        splits=[s.strip() for s in args.splits.split(",") if s.strip()],
    )
    settings.check()  # before the checkpoint or any data is read
    from ..train.checkpoint import checkpoint_config, load_checkpoint

    ckpt = load_checkpoint(args.checkpoint)
    cfg = checkpoint_config(ckpt, args.overrides)
    df = pruning_curve(ckpt["path"], args.out, settings, cfg, force=args.force,
                       resume=args.resume, progress=cfg.train.progress)  # fmt: skip
    from ..report.curves import curve_table

    print(curve_table(df).to_string(index=False))
    return 0
