"""Re-push a saved ProtoPNet (the `push` command): its prototypes onto their nearest training
patches again, optionally with the last-layer stage, into a folder of its own."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from .. import distributed
from ..config import RunConfig
from ..io import atomic_write_json, check_run_dir
from ..train.checkpoint import (
    checkpoint_config,
    load_checkpoint,
    model_from_checkpoint,
    require_protopnet,
    require_same_classes,
    run_dir_of,
    save_checkpoint,
)
from ..train.evaluate import evaluate_model
from ..train.run import prepare_data
from .push import push_prototypes
from .training import refit_last_layer


def push_checkpoint(
    checkpoint: str | Path | dict,
    cfg: RunConfig | None = None,
    out_dir: str | Path | None = None,
    last_layer_iterations: int = 0,
    device: str = "auto",
    force: bool = False,
) -> dict[str, Any]:
    """Re-push a saved ProtoPNet onto its training images (optionally re-running the last-layer
    stage); writes `out_dir` (default `<run folder>/push`): pushed.pt, push.json, prototype images.

    Under torchrun the ranks search their shards of the push set and rank 0 writes.
    """
    ckpt = require_protopnet(checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint))
    cfg = copy.deepcopy(cfg) if cfg is not None else checkpoint_config(ckpt)
    ckpt_path = Path(ckpt["path"])
    dev = distributed.resolve_device(device)
    out = check_run_dir(Path(out_dir) if out_dir else run_dir_of(ckpt_path) / "push", force=force)
    loaders, _ = prepare_data(cfg)
    class_names = loaders.class_names
    require_same_classes(ckpt, class_names, "push")
    out = distributed.prepare_output_dir(out, force=force)  # the input is sound: now write
    model = model_from_checkpoint(ckpt).to(dev)
    progress = cfg.train.progress and distributed.is_main()
    val_before = evaluate_model(model, loaders.val, class_names, dev)
    result = push_prototypes(model, loaders.push, dev, class_names, out / "prototypes", progress=progress)
    iterations = []
    if last_layer_iterations > 0:
        iterations = refit_last_layer(model, result.similarities, result.targets, loaders, cfg,
                                      last_layer_iterations, progress)  # fmt: skip
    val_after = evaluate_model(model, loaders.val, class_names, dev)
    keys = ("accuracy", "balanced_accuracy", "auroc_macro", "melanoma_sensitivity")
    summary = {
        "source_checkpoint": str(ckpt_path),
        "push": result.summary(),
        "last_layer_iterations": iterations,
        "val_before": {k: val_before[k] for k in keys},
        "val_after": {k: val_after[k] for k in keys},
    }
    if distributed.is_main():
        save_checkpoint(out / "checkpoints" / "pushed.pt", model, cfg, class_names, stage="push", push=summary)
        atomic_write_json(out / "push.json", summary)
    distributed.barrier()
    summary["out_dir"] = str(out)
    summary["checkpoint"] = str(out / "checkpoints" / "pushed.pt")
    return summary
