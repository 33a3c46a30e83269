"""Supervised training of a classifier: per-epoch validation, selection on validation, resume.

The test split is never looked at here; `run_training` evaluates it once, at the end.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from torch import nn

from .. import distributed
from ..config import RunConfig, TrainConfig
from ..metrics import HEADLINE
from ..progress import tqdm
from . import precision
from .checkpointer import Checkpointer
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
    improvement and history.csv (a `Checkpointer`); without it (e.g. fine-tuning between pruning
    steps) keeps the best state in memory only.
    """
    tc = cfg.train
    epochs = tc.epochs if epochs is None else epochs
    device = torch.device(device) if device is not None else distributed.resolve_device(tc.device)
    class_names = class_names or loaders.class_names
    apply_memory_format(model.to(device), tc)
    run = _ClassifierRun(model, loaders, cfg, device, class_names, epochs)
    ckpt = Checkpointer(run_dir, cfg, class_names, "fit", getattr(loaders, "generator", None))
    history: list[dict] = []
    best_score, best_epoch, start = -float("inf"), -1, 0
    last = ckpt.resume("classifier-training", "resume it with the command that wrote it") if resume else None
    if last is not None:
        run.load(last)
        history = list(last["history"])
        start = int(last["epoch"]) + 1
        best_score, best_epoch = float(last["best_score"]), int(last["best_epoch"])
        ckpt.restore_rng(last, start)
        log.info("resuming at epoch %d of %d", start + 1, epochs)
    run.wrap()
    for epoch in range(start, epochs):
        row, val = run.epoch(epoch)
        history.append(row)
        score = val[tc.select_metric] if val.get(tc.select_metric) is not None else val["accuracy"]
        improved = score > best_score
        if improved:
            best_score, best_epoch = score, epoch + 1
            ckpt.keep_best(model, epoch, val)
        _log_epoch(epoch, epochs, row, val, improved)
        ckpt.save_last(model, history, epoch=epoch, history=history, best_score=best_score,
                       best_epoch=best_epoch, **run.resume_state())  # fmt: skip
        if patience is not None and epoch + 1 - best_epoch >= patience:
            log.info("no improvement for %d epochs: stopping at epoch %d", patience, epoch + 1)
            break
    if tc.sync_batchnorm:
        distributed.revert_sync_batchnorm(model)
    ckpt.load_best(model)
    val = evaluate_model(model, loaders.val, class_names, device)
    return {"history": history, "best_epoch": best_epoch, "val": val}


class _ClassifierRun:
    """What one classifier epoch needs: the optimiser, scheduler, scaler and loss; resumable."""

    def __init__(self, model: nn.Module, loaders, cfg: RunConfig, device: torch.device,
                 class_names: list[str], epochs: int) -> None:  # fmt: skip
        tc = cfg.train
        self.model, self.loaders, self.tc, self.device, self.class_names = model, loaders, tc, device, class_names
        self.epochs = epochs
        self.optimizer = build_optimizer(model.parameters(), tc)
        self.scheduler = build_scheduler(self.optimizer, tc, epochs)
        self.amp = precision.use_amp(tc, device)
        self.scaler = precision.grad_scaler(tc, device)
        weights = loaders.loss_weights.to(device) if loaders.loss_weights is not None else None
        self.loss_fn = nn.CrossEntropyLoss(weight=weights)
        self.train_model = model

    def load(self, last: dict) -> None:
        self.model.load_state_dict(last["state_dict"])
        self.optimizer.load_state_dict(last["optimizer"])
        if self.scheduler is not None and last.get("scheduler"):
            self.scheduler.load_state_dict(last["scheduler"])
        if self.scaler is not None and last.get("scaler"):
            self.scaler.load_state_dict(last["scaler"])

    def wrap(self) -> None:
        """DDP after the resumed weights are loaded (it broadcasts rank 0's) and the optimiser built
        on the same parameter objects; evaluation uses the unwrapped model."""
        self.train_model = distributed.wrap_model(self.model, self.device, self.tc.sync_batchnorm)

    def resume_state(self) -> dict:
        """The `last.pt` entries beyond the weights that `load` reads back."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def epoch(self, epoch: int) -> tuple[dict, dict]:
        """Train one epoch and validate: the history row and the validation metrics."""
        loaders, t0 = self.loaders, time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        distributed.set_epoch(loaders.train, epoch)
        train_loss = train_one_epoch(
            self.train_model, loaders.train, self.optimizer, self.loss_fn, self.device, self.scaler,
            self.tc.progress and distributed.is_main(), desc=f"epoch {epoch + 1}/{self.epochs}", amp=self.amp,
        )  # fmt: skip
        train_seconds = time.perf_counter() - t0
        if self.scheduler is not None:
            self.scheduler.step()
        val = evaluate_model(self.model, loaders.val, self.class_names, self.device)
        n_train = len(loaders.train.dataset) if loaders.train.sampler is None else len(loaders.train.sampler)
        n_train = min(n_train, len(loaders.train) * (loaders.train.batch_size or 1))  # partial epochs
        n_train *= distributed.world_size()
        row = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": train_loss,
            **{f"val_{k}": val[k] for k in HEADLINE},
            "train_seconds": train_seconds,
            "train_images_per_s": n_train / train_seconds,
        }
        return row, val


def _log_epoch(epoch: int, epochs: int, row: dict, val: dict, improved: bool) -> None:
    log.info(
        "epoch %d/%d  loss %.4f  val acc %.4f  bal %.4f  auroc %s  (%.1f s, %.0f img/s)%s",
        epoch + 1, epochs, row["train_loss"], val["accuracy"], val["balanced_accuracy"],
        "n/a" if val["auroc_macro"] is None else f"{val['auroc_macro']:.4f}",
        row["train_seconds"], row["train_images_per_s"], "  *best*" if improved else "",
    )  # fmt: skip
