"""`protoprune push CHECKPOINT`: re-push a saved ProtoPNet onto its training images, render prototypes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..io import atomic_write_json, prepare_run_dir
from ..seed import resolve_device

NAME = "push"
HELP = "re-push a saved ProtoPNet (prototypes -> nearest training patches); writes a new checkpoint and prototype images"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="ProtoPNet checkpoint .pt file or its run folder")
    parser.add_argument("--out", help="output folder (default: <run folder>/push)")
    parser.add_argument(
        "--force", action="store_true", help="replace an existing --out folder (kept as .old-N)"
    )
    parser.add_argument(
        "--data-root",
        help="where the training data lives now (replaces data.root of the checkpoint)",
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override the stored config, e.g. --set data.batch_size=128")  # fmt: skip
    parser.add_argument("--last-layer-iterations", type=int, default=0,
                        help="re-optimise the last layer on the pushed model for N iterations (default 0)")  # fmt: skip
    parser.add_argument("--device", default="auto")


def execute(args: argparse.Namespace) -> int:
    from ..train.checkpoint import (
        checkpoint_config,
        load_checkpoint,
        model_from_checkpoint,
        save_checkpoint,
    )
    from ..train.evaluate import evaluate_model
    from ..train.protopnet import build_optimizers, last_layer_stage
    from ..train.push import push_prototypes
    from ..train.run import prepare_data

    ckpt = load_checkpoint(args.checkpoint)
    if ckpt.get("model_type") != "protopnet":
        raise CheckpointError(
            f"{ckpt['path']} holds a {ckpt.get('model_type')!r} model, not a ProtoPNet",
            "give a checkpoint of a run trained with model.type: protopnet",
        )
    root = [f"data.root={args.data_root}"] if args.data_root else []
    cfg = checkpoint_config(ckpt, root + args.overrides)
    ckpt_path = Path(ckpt["path"])
    run_dir = (
        ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
    )
    out = prepare_run_dir(Path(args.out) if args.out else run_dir / "push", force=args.force)

    loaders, _ = prepare_data(cfg)
    if loaders.class_names != ckpt["class_names"]:
        raise CheckpointError(
            f"checkpoint classes {ckpt['class_names']} differ from the data's {loaders.class_names}",
            "push with the data set the model was trained on (--data-root / --set data.dataset=...)",
        )
    device = resolve_device(args.device)
    model = model_from_checkpoint(ckpt).to(device)
    class_names = loaders.class_names
    val_before = evaluate_model(model, loaders.val, class_names, device)
    result = push_prototypes(
        model, loaders.push, device, class_names, out / "prototypes", progress=cfg.train.progress
    )
    iterations = []
    if args.last_layer_iterations > 0:
        cfg.protopnet.last_layer_iterations = args.last_layer_iterations
        optimizer = build_optimizers(model, cfg.protopnet)["last"]
        weights = loaders.loss_weights.to(device) if loaders.loss_weights is not None else None
        iterations = last_layer_stage(
            model, result.similarities, result.targets, optimizer, cfg.protopnet, cfg.data.batch_size, weights,
            cfg.data.balance == "oversample", torch.Generator().manual_seed(cfg.seed), cfg.train.progress,
        )  # fmt: skip
    val_after = evaluate_model(model, loaders.val, class_names, device)
    summary = {
        "source_checkpoint": str(ckpt_path),
        "push": result.summary(),
        "last_layer_iterations": iterations,
        "val_before": {
            k: val_before[k]
            for k in ("accuracy", "balanced_accuracy", "auroc_macro", "melanoma_sensitivity")
        },
        "val_after": {
            k: val_after[k]
            for k in ("accuracy", "balanced_accuracy", "auroc_macro", "melanoma_sensitivity")
        },
    }
    save_checkpoint(
        out / "checkpoints" / "pushed.pt", model, cfg, class_names, stage="push", push=summary
    )
    atomic_write_json(out / "push.json", summary)
    print(
        json.dumps(
            {
                **summary["push"],
                "val_before": summary["val_before"],
                "val_after": summary["val_after"],
            },
            indent=2,
        )
    )
    print(
        f"prototype images: {out / 'prototypes'}\ncheckpoint: {out / 'checkpoints' / 'pushed.pt'}"
    )
    return 0
