"""The iterative filter-pruning experiment of Yeom et al. (2021) on a checkpoint: a run folder.

`prune.filters` holds the schedule itself; this opens the checkpoint and the folder, repairs each
step (a classifier's fine-tuning, or a ProtoPNet's joint epochs, push and last-layer stage) and
writes what each step leaves: the pruned model (weights-only `.pt` + ONNX) and results.csv / .md /
.json.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from .. import distributed
from ..config import RunConfig, save_config
from ..data.loaders import CappedLoader
from ..errors import ConfigError
from ..io import atomic_write_json, atomic_write_text
from ..prune.export import export_onnx
from ..prune.filters import (
    Batch,
    ScheduleSettings,
    criterion_settings,
    reference_set,
    retention_stop,
    run_schedule,
    schedule,
    schedule_units,
)
from ..prune.importance import build_importance
from ..prune.relevance import input_bounds, never_pruned
from ..report.tables import markdown_table

log = logging.getLogger(__name__)


def prune_filters(
    checkpoint_path: str | Path,
    cfg: RunConfig | None = None,
    run_dir: str | Path | None = None,
    *,
    force: bool = False,
    export: bool = True,
    latency: bool = True,
) -> pd.DataFrame:
    """Run the iterative pruning experiment on a baseline or ProtoPNet checkpoint; returns the
    per-step table.

    `cfg` defaults to the config stored in the checkpoint (its data section decides the data);
    `cfg.prune_filters` sets method, total_pr, pr_step, epochs, scope, ref_per_class. A ProtoPNet's
    trunk is pruned by the relevance of its own decision and repaired after each step by `epochs`
    joint epochs, a push and the last-layer stage (`protopnet.trunk_pruning`).
    """
    from ..protopnet.trunk_pruning import protopnet_ignored_layers
    from ..train.evaluate import evaluate_model
    from ..train.run import open_checkpoint

    source = open_checkpoint(checkpoint_path, cfg)
    ckpt, cfg = source.ckpt, source.cfg
    _check_prunable(ckpt, cfg)
    proto, pf = cfg.model.type == "protopnet", cfg.prune_filters
    device = distributed.resolve_device(cfg.train.device)  # joins torchrun's group if launched by it
    main = distributed.is_main()  # under torchrun rank 0 writes; all ranks fine-tune together
    model = source.model(device)
    ignored = never_pruned(model, protopnet_ignored_layers(model) if proto else None, pf.prune_linear)
    ratios = schedule(pf.total_pr, pf.pr_step, pf.schedule,  # refused here, before any folder is made
                      schedule_units(model, ignored, pf.ratio_unit, cfg.data.image_size))  # fmt: skip
    run_dir = distributed.prepare_output_dir(
        run_dir or Path(cfg.output_dir) / f"{cfg.name}-prune-{pf.method}-{pf.scope}", force=force
    )
    if main:
        save_config(cfg, run_dir / "config.yaml", {"checkpoint": str(ckpt["path"])})
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    loaders, splits = source.data(run_dir=run_dir if main else None)
    reference = reference_set(loaders.push.dataset, pf.ref_per_class, cfg.seed, cfg.data.batch_size)
    importance = build_importance(pf, ignored_layers=ignored, seed=cfg.seed,
                                  bounds=input_bounds(cfg.data.mean, cfg.data.std))  # fmt: skip
    meta = _run_meta(cfg, ckpt, reference, device)
    log.info("pruning %s by %s (%s): steps %s, %d reference images -> %s", cfg.model.arch, pf.method,
             pf.scope, ratios, meta["reference_images"], run_dir)  # fmt: skip
    finetune = _step_finetuner(model, loaders, cfg, device)
    on_step = _step_writer(run_dir, cfg, loaders.class_names, meta, export and main, main)
    settings = ScheduleSettings(
        ratios, cfg.data.image_size, pf.scope, ignored, pf.round_to, pf.ratio_unit,
        latency=latency and main,  # rank 0 times alone (the others wait), so the figures are clean
        progress=cfg.train.progress and main,
    )  # fmt: skip
    return run_schedule(
        model, importance, loaders, reference, settings, evaluate=evaluate_model, device=device,
        finetune=finetune if pf.epochs > 0 or proto else None, on_step=on_step,
        stop=retention_stop(pf.min_retention, pf.retention_measure) if proto else None,
    )  # fmt: skip


def _check_prunable(ckpt: dict, cfg: RunConfig) -> None:
    """Refuse, before any work, a checkpoint prune-filters cannot prune as configured."""
    if cfg.model.type not in ("classifier", "protopnet") or ckpt.get("model_type") != cfg.model.type:
        raise ConfigError(
            f"prune-filters needs a classifier or ProtoPNet checkpoint, got model type "
            f"{ckpt.get('model_type')!r} with config model type {cfg.model.type!r}",
            "give a checkpoint written by `protoprune train` and leave model.type as stored",
        )
    if cfg.prune_filters.min_retention is not None and cfg.model.type != "protopnet":
        raise ConfigError("prune_filters.min_retention needs a ProtoPNet checkpoint: a classifier "
                          "has no prototypes whose explanations could be retained",
                          "leave min_retention unset for a classifier")  # fmt: skip


def _step_finetuner(model: nn.Module, loaders: Any, cfg: RunConfig, device: torch.device) -> Callable:
    """What repairs each step: a classifier's fine-tuning (`fit` under patience, at
    prune_filters.finetune_lr) or a ProtoPNet's joint epochs, push and last-layer stage, then
    its explanation retention (measured against `model` as it is now, unpruned)."""
    from ..protopnet.trunk_pruning import RetentionTracker, protopnet_repair
    from ..train.convergence import plateau
    from ..train.loop import fit

    pf, proto = cfg.prune_filters, cfg.model.type == "protopnet"
    tune = loaders  # fine-tuning epochs of `finetune_batches` batches each, when set
    if pf.finetune_batches:
        tune = dataclasses.replace(loaders, train=CappedLoader(loaders.train, pf.finetune_batches))
    tune_cfg = cfg  # the classifier's fine-tuning: train.* with prune_filters.finetune_lr, if set
    if pf.finetune_lr is not None:
        tune_cfg = copy.deepcopy(cfg)
        tune_cfg.train.lr = pf.finetune_lr
    repair_epochs = pf.epochs if pf.repair_epochs is None else pf.repair_epochs
    tracker = None  # the unpruned ProtoPNet's explanations, to measure each step's retention
    if proto and pf.retention_images > 0:
        tracker = RetentionTracker(model, loaders, pf.retention_images, cfg.seed, device,
                                   input_bounds(cfg.data.mean, cfg.data.std))  # fmt: skip

    def finetune(m: nn.Module) -> dict[str, Any]:
        if proto:  # joint epochs, re-push (on the whole push set), last-layer stage
            pushed = protopnet_repair(m, tune, cfg, repair_epochs, device)
            kept = tracker.measure(m, pushed["prototypes"]) if tracker is not None else {}
            return {"finetune_epochs": repair_epochs, **kept}
        out = fit(m, tune, tune_cfg, run_dir=None, epochs=pf.epochs, device=device,
                  patience=pf.patience)  # fmt: skip
        end = plateau([h.get(f"val_{tune_cfg.train.select_metric}") for h in out["history"]])
        return {"finetune_epochs": len(out["history"]), "finetune_best_epoch": out["best_epoch"],
                "finetune_gain_last": end["gain_last"], "finetune_flat": end["flat"]}  # fmt: skip

    return finetune


def _step_writer(run_dir: Path, cfg: RunConfig, class_names: list[str], meta: dict, export: bool,
                 main: bool) -> Callable[[int, nn.Module, pd.DataFrame], None]:  # fmt: skip
    """After each step: its model files (with `export`) and the results so far, on rank 0."""
    from ..train.checkpoint import save_checkpoint

    def on_step(k: int, m: nn.Module, df: pd.DataFrame) -> None:
        if not main:
            distributed.barrier()
            return
        if export and k > 0:  # step 0 is the unpruned input: its checkpoint is meta["checkpoint"]
            stem = run_dir / "models" / f"step_{k:02d}"
            ratio = float(df.iloc[-1]["pruned_ratio"])
            # a regular checkpoint (model_from_checkpoint resizes the narrowed layers)
            save_checkpoint(stem.with_suffix(".pt"), m, cfg, class_names, stage="prune_filters",
                            pruned_filters=True, step=k, pruned_ratio=ratio)  # fmt: skip
            export_onnx(m, stem.with_suffix(".onnx"), cfg.data.image_size)
        write_results(run_dir, df, meta)
        distributed.barrier()

    return on_step


def write_results(run_dir: Path, df: pd.DataFrame, meta: dict) -> None:
    atomic_write_text(run_dir / "results.csv", df.to_csv(index=False))
    title = f"# Filter pruning: {meta['method']} ({meta['scope']}), {meta['arch']}\n\n"
    note = "macs: multiply-accumulates per image; flops = 2 x macs; latency: median CPU ms per batch.\n\n"
    atomic_write_text(run_dir / "results.md", title + note + markdown_table(df))
    atomic_write_json(run_dir / "results.json", {**meta, "steps": df.to_dict(orient="records")})


def _run_meta(cfg: RunConfig, ckpt: dict, reference: Sequence[Batch], device: torch.device) -> dict[str, Any]:
    """What a prune-filters run was asked to do, for its results' metadata."""
    pf, proto = cfg.prune_filters, cfg.model.type == "protopnet"
    return {
        "method": pf.method,
        "model_type": cfg.model.type,
        "scope": pf.scope,
        "arch": cfg.model.arch,
        "checkpoint": str(ckpt["path"]),
        "total_pr": pf.total_pr,
        "pr_step": pf.pr_step,
        "schedule": pf.schedule,
        "epochs": pf.epochs,
        "repair_epochs": (pf.epochs if pf.repair_epochs is None else pf.repair_epochs) if proto else None,
        "patience": pf.patience,
        "finetune_batches": pf.finetune_batches,
        # a ProtoPNet is repaired at its joint learning rates (protopnet.joint_lr_*)
        "finetune_lr": None if proto else (pf.finetune_lr if pf.finetune_lr is not None else cfg.train.lr),
        "ref_per_class": pf.ref_per_class,
        "round_to": pf.round_to,
        "reference_images": sum(len(y) for _, y in reference),
        **criterion_settings(pf),
        "image_size": cfg.data.image_size,
        "device": str(device),
    }
