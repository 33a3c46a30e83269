"""Supervised training of a classifier: per-epoch validation, selection on validation, resume.

The test split is never looked at here; `run_training` evaluates it once, at the end.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import distributed
from ..config import RunConfig, TrainConfig
from ..errors import CheckpointError
from ..io import atomic_write_text
from ..progress import tqdm
from . import precision
from .checkpoint import load_checkpoint, save_checkpoint
from .evaluate import evaluate_model
from .layout import apply_memory_format

log = logging.getLogger(__name__)


def build_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, epochs: int):
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    return None


def rng_state(generator: torch.Generator | None) -> dict[str, Any]:
    """Every random state an epoch consumes, so a resumed run continues the same random stream."""
    return {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.frombuffer(np.random.get_state()[1].tobytes(), dtype=np.uint8).copy()),
        "numpy_pos": int(np.random.get_state()[2]),
        "python": repr(random.getstate()),
        "loader": generator.get_state() if generator is not None else None,
    }


def rank_rng_states(generator: torch.Generator | None) -> dict[str, Any]:
    """Checkpoint entries for the random states: rank 0's (`rng`) and, under DDP, every rank's.

    A collective: every rank must call it, also those that do not write the checkpoint.
    """
    own = rng_state(generator)
    if not distributed.is_distributed():
        return {"rng": own}
    return {"rng": own, "rng_per_rank": distributed.all_gather_object(own)}


def restore_rank_rng(ckpt: dict[str, Any], generator: torch.Generator | None, seed: int, step: int) -> None:
    """Restore this rank's random state; with another world size, re-derive it from the seed.

    Resume is exact only at the world size that wrote the checkpoint: the random stream of a rank
    that did not exist (or a different sharding) cannot be continued, so it restarts from
    (seed, rank, step), which is reproducible but not the uninterrupted run's stream.
    """
    per_rank = ckpt.get("rng_per_rank")
    size = len(per_rank) if per_rank is not None else 1
    if size == distributed.world_size():
        restore_rng_state(per_rank[distributed.rank()] if per_rank is not None else ckpt["rng"], generator)
        return
    log.warning("resuming a %d-process checkpoint with %d processes: random states re-derived from the seed "
                "(the run continues reproducibly, but not bit-identical to an uninterrupted run)",
                size, distributed.world_size())  # fmt: skip
    distributed.seed_ranks(seed, step, generator, all_ranks=True)


def restore_rng_state(state: dict[str, Any], generator: torch.Generator | None) -> None:
    torch.set_rng_state(state["torch"])
    keys = np.frombuffer(state["numpy"].numpy().tobytes(), dtype=np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    import ast

    py = ast.literal_eval(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    if generator is not None and state.get("loader") is not None:
        generator.set_state(state["loader"])


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    device: torch.device,
    scaler: torch.amp.GradScaler | None = None,
    progress: bool = True,
    desc: str = "train",
    amp: bool | None = None,
) -> float:
    """One pass over `loader`; returns the mean loss. Under autocast when `amp` (default: when a
    scaler is given); see `train.precision`."""
    model.train()
    total, count = 0.0, 0
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress)
    for x, y in bar:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast(device, scaler is not None if amp is None else amp):
            loss = loss_fn(model(x), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        total += loss.item() * len(y)
        count += len(y)
        bar.set_postfix(loss=f"{total / count:.4f}")
    total, count = distributed.all_reduce_sum(total, count)  # the global mean under DDP
    return total / max(count, 1)


def fit(
    model: nn.Module,
    loaders,
    cfg: RunConfig,
    run_dir: Path | None = None,
    epochs: int | None = None,
    resume: bool = False,
    device: torch.device | str | None = None,
    class_names: list[str] | None = None,
    patience: int | None = None,
) -> dict:
    """Train, validate each epoch and load the best validation state into `model`.

    With `patience`, stops once `train.select_metric` on val has not improved for that many epochs
    (`epochs` is then the cap; e.g. fine-tuning a pruned model until it has converged).

    With `run_dir`, writes checkpoints/last.pt every epoch (for --resume), checkpoints/best.pt on
    improvement and history.csv; without it (e.g. fine-tuning between pruning steps) keeps the best
    state in memory only.
    """
    tc = cfg.train
    epochs = tc.epochs if epochs is None else epochs
    device = torch.device(device) if device is not None else distributed.resolve_device(tc.device)
    class_names = class_names or loaders.class_names
    apply_memory_format(model.to(device), tc)
    write = run_dir is not None and distributed.is_main()  # rank 0 writes, the others wait
    optimizer = build_optimizer(model.parameters(), tc)
    scheduler = build_scheduler(optimizer, tc, epochs)
    amp = precision.use_amp(tc, device)
    scaler = precision.grad_scaler(tc, device)
    weights = loaders.loss_weights.to(device) if loaders.loss_weights is not None else None
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    generator = getattr(loaders, "generator", None)

    history: list[dict] = []
    best_score, best_epoch, best_state = -float("inf"), -1, None
    start = 0
    ckpt_dir = run_dir / "checkpoints" if run_dir is not None else None
    if resume and ckpt_dir is not None and (ckpt_dir / "last.pt").is_file():
        last = load_checkpoint(ckpt_dir / "last.pt")
        if last.get("stage") != "fit":
            raise CheckpointError(f"{ckpt_dir / 'last.pt'} is not a classifier-training checkpoint", "resume it with the command that wrote it")
        model.load_state_dict(last["state_dict"])
        optimizer.load_state_dict(last["optimizer"])
        if scheduler is not None and last.get("scheduler"):
            scheduler.load_state_dict(last["scheduler"])
        if scaler is not None and last.get("scaler"):
            scaler.load_state_dict(last["scaler"])
        history = list(last["history"])
        start = int(last["epoch"]) + 1
        best_score, best_epoch = float(last["best_score"]), int(last["best_epoch"])
        best_state = load_checkpoint(ckpt_dir / "best.pt")["state_dict"] if (ckpt_dir / "best.pt").is_file() else None
        restore_rank_rng(last, generator, cfg.seed, start)
        log.info("resuming at epoch %d of %d", start + 1, epochs)
    # DDP after the resumed weights are loaded (it broadcasts rank 0's) and the optimiser built on
    # the same parameter objects; evaluation uses the unwrapped model
    train_model = distributed.wrap_model(model, device, tc.sync_batchnorm)

    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        distributed.set_epoch(loaders.train, epoch)
        train_loss = train_one_epoch(
            train_model, loaders.train, optimizer, loss_fn, device, scaler, tc.progress and distributed.is_main(), desc=f"epoch {epoch + 1}/{epochs}",
            amp=amp,
        )
        train_seconds = time.perf_counter() - t0
        if scheduler is not None:
            scheduler.step()
        val = evaluate_model(model, loaders.val, class_names, device)
        n_train = len(loaders.train.dataset) if loaders.train.sampler is None else len(loaders.train.sampler)
        n_train = min(n_train, len(loaders.train) * (loaders.train.batch_size or 1))  # partial epochs
        n_train *= distributed.world_size()
        row = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": train_loss,
            **{f"val_{k}": val[k] for k in ("accuracy", "balanced_accuracy", "auroc_macro", "melanoma_sensitivity")},
            "train_seconds": train_seconds,
            "train_images_per_s": n_train / train_seconds,
        }
        history.append(row)
        score = val[tc.select_metric] if val.get(tc.select_metric) is not None else val["accuracy"]
        improved = score > best_score
        if improved:
            best_score, best_epoch = score, epoch + 1
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        log.info(
            "epoch %d/%d  loss %.4f  val acc %.4f  bal %.4f  auroc %s  (%.1f s, %.0f img/s)%s",
            epoch + 1, epochs, train_loss, val["accuracy"], val["balanced_accuracy"],
            "n/a" if val["auroc_macro"] is None else f"{val['auroc_macro']:.4f}",
            train_seconds, row["train_images_per_s"], "  *best*" if improved else "",
        )
        rng = rank_rng_states(generator) if run_dir is not None else {}  # collective: all ranks
        if write:
            atomic_write_text(run_dir / "history.csv", pd.DataFrame(history).to_csv(index=False))
            if improved:
                save_checkpoint(ckpt_dir / "best.pt", model, cfg, class_names, stage="best", epoch=epoch, val=val)
            save_checkpoint(
                ckpt_dir / "last.pt", model, cfg, class_names,
                stage="fit", epoch=epoch, history=history, best_score=best_score, best_epoch=best_epoch,
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict() if scheduler is not None else None,
                scaler=scaler.state_dict() if scaler is not None else None,
                **rng,
            )
        distributed.barrier()
        if patience is not None and epoch + 1 - best_epoch >= patience:
            log.info("no improvement for %d epochs: stopping at epoch %d", patience, epoch + 1)
            break
    if tc.sync_batchnorm:
        distributed.revert_sync_batchnorm(model)
    if best_state is not None:
        model.load_state_dict(best_state)
    val = evaluate_model(model, loaders.val, class_names, device)
    return {"history": history, "best_epoch": best_epoch, "val": val}
