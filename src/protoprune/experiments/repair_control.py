"""The control of explanation retention under a ProtoPNet's trunk pruning: the same repairs,
without pruning.

Each pruning step is repaired by joint epochs, a push and the last-layer stage
(`protopnet.trunk_pruning.protopnet_repair`). That training alone moves prototypes: a push may
pick another training patch once the latent space has shifted, and the evidence ranking follows
the refitted last layer. So a retention figure after k pruning steps reads only beside the
retention of the unpruned model after the same k repairs. `repair_control` measures it: after
each repair of the unpruned ProtoPNet, the test metrics and every retention measure against the
model as it was (`explain.retention`, the same fixed test images as a pruning run of that seed).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ..config import RunConfig
from ..errors import ConfigError
from ..io import atomic_write_text
from ..metrics import HEADLINE

log = logging.getLogger(__name__)


def repair_control(checkpoint: str | Path, cfg: RunConfig | None = None, repairs: int | None = None,
                   out_csv: str | Path | None = None) -> pd.DataFrame:  # fmt: skip
    """`repairs` repairs (default: as many as the pruning schedule of `cfg.prune_filters` has
    steps) of the unpruned ProtoPNet `checkpoint`, each with `prune_filters.repair_epochs` joint
    epochs (default `prune_filters.epochs`); one row a repair (`step`: repairs so far; 0: the model as it is). Written
    to `out_csv` after each repair when given."""
    from ..protopnet.trunk_pruning import (
        RetentionTracker,
        protopnet_ignored_layers,
        protopnet_repair,
    )
    from ..prune.filters import schedule, schedule_units
    from ..prune.relevance import input_bounds, never_pruned
    from ..seed import resolve_device
    from ..train.evaluate import evaluate_model
    from ..train.run import open_checkpoint

    source = open_checkpoint(checkpoint, cfg, protopnet=True)
    cfg, pf = source.cfg, source.cfg.prune_filters
    if pf.retention_images < 1:
        raise ConfigError("the repair control measures retention: prune_filters.retention_images is 0",
                          "set prune_filters.retention_images, e.g. 32 as the pruning runs")  # fmt: skip
    device = resolve_device(cfg.train.device)
    model = source.model(device)
    if repairs is None:  # as many as the pruning run has steps
        ignored = never_pruned(model, protopnet_ignored_layers(model), pf.prune_linear)
        units = schedule_units(model, ignored, pf.ratio_unit, cfg.data.image_size)
        repairs = len(schedule(pf.total_pr, pf.pr_step, pf.schedule, units))
    epochs = pf.epochs if pf.repair_epochs is None else pf.repair_epochs
    loaders, _ = source.data("measure the repair control of")
    tracker = RetentionTracker(model, loaders, pf.retention_images, cfg.seed, device,
                               input_bounds(cfg.data.mean, cfg.data.std))  # fmt: skip

    def test_row(step: int) -> dict:
        m = evaluate_model(model, loaders.test, loaders.class_names, device)
        return {"step": step, "repair_epochs": epochs, **{f"test_{k}": m[k] for k in HEADLINE}}

    rows = [test_row(0)]
    for k in range(1, repairs + 1):
        pushed = protopnet_repair(model, loaders, cfg, epochs, device)
        rows.append({**test_row(k), **tracker.measure(model, pushed["prototypes"])})
        log.info("repair %d of %d (no pruning): test balanced accuracy %.4f, top-3 retention %.3f",
                 k, repairs, rows[-1]["test_balanced_accuracy"], rows[-1]["retention_topk_jaccard"])  # fmt: skip
        if out_csv is not None:
            atomic_write_text(Path(out_csv), pd.DataFrame(rows).to_csv(index=False))
    return pd.DataFrame(rows)


__all__ = ["repair_control"]
