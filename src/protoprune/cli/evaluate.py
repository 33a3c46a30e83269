"""`protoprune evaluate CHECKPOINT`: metrics of a saved model on a split of its data or another data set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import check_device_option

NAME = "evaluate"
HELP = "evaluate a checkpoint (or run folder) on the test split, or on another data set via --config/--set"
EXAMPLE = "protoprune evaluate runs/<name>/checkpoints/best.pt"  # shown in the fix when a required argument is missing


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint .pt file or run folder")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--config", help="YAML whose data section replaces the checkpoint's (e.g. an external test set)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override the data config, e.g. --set data.dataset=isic2018 --set data.root=PATH")
    parser.add_argument("--external-isic2018", metavar="DIR",
                        help="evaluate on every image of an ISIC 2018 Task 3 folder (external test set) instead")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", help="folder for metrics.json, metrics.md and the confusion matrix")
    parser.add_argument("--force", action="store_true", help="replace an existing --out folder (kept as .old-N)")
    parser.add_argument("--ensemble", nargs="+", default=[], metavar="CHECKPOINT",
                        help="further checkpoints: evaluate the ensemble (logits summed) and each member")


def execute(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..io import check_run_dir
    from ..train.checkpoint import checkpoint_config, load_checkpoint
    from ..train.run import evaluate_checkpoint, evaluate_external_isic2018

    check_device_option(args)
    if args.out:  # refuse an --out that holds results before evaluating, not after
        check_run_dir(args.out, force=args.force)
    ckpt = load_checkpoint(args.checkpoint)
    cfg = None
    if args.config:
        cfg = load_config(args.config, args.overrides)
    elif args.overrides:
        cfg = checkpoint_config(ckpt, args.overrides)
    if args.ensemble:
        return _evaluate_ensemble(args, ckpt, cfg)
    if args.external_isic2018:
        args.split = "isic2018"
        metrics = evaluate_external_isic2018(ckpt["path"], args.external_isic2018, args.device)
    else:
        metrics = evaluate_checkpoint(ckpt["path"], cfg, args.split, args.device)
    print(json.dumps({k: metrics[k] for k in HEADLINE_KEYS}, indent=2))
    if args.out:
        _write(args, {args.split: metrics}, f"evaluation of {ckpt['path']}", ckpt["class_names"])
    return 0


HEADLINE_KEYS = ("n", "accuracy", "balanced_accuracy", "auroc_macro", "melanoma_sensitivity")


def _write(args: argparse.Namespace, results: dict, title: str, class_names: list[str], **extra) -> None:
    from .. import distributed
    from ..io import atomic_write_json
    from ..train.run import write_metrics

    out = distributed.prepare_output_dir(Path(args.out), force=args.force)
    if distributed.is_main():
        write_metrics(out, results, title, class_names)
        for name, obj in extra.items():
            atomic_write_json(out / name, obj)


def _evaluate_ensemble(args: argparse.Namespace, ckpt: dict, cfg) -> int:
    """Each member's and the summed-logit ensemble's metrics (explain.ensemble)."""
    from ..explain.ensemble import evaluate_ensemble

    result = evaluate_ensemble([ckpt, *args.ensemble], cfg, args.split, args.device)
    members = [
        {"checkpoint": m["checkpoint"], **{k: m["metrics"][k] for k in HEADLINE_KEYS}}
        for m in result["members"]
    ]
    ensemble = {k: result["ensemble"][k] for k in HEADLINE_KEYS}
    print(json.dumps({"members": members, "ensemble": ensemble}, indent=2))
    if args.out:
        keep = {"split": args.split, "members": result["members"], "ensemble": result["ensemble"]}
        _write(args, {args.split: result["ensemble"]}, f"ensemble of {len(members)} models (logits summed)",
               ckpt["class_names"], **{"ensemble.json": keep})  # fmt: skip
    return 0
