"""ProtoPNet's training schedule: warm-up, joint, push, last-layer stage; resumable at every step.

The schedule is a fixed list of steps: one per trunk/warm-up/joint epoch, and after the epochs
`push_start, push_start + push_every, ...` a push followed by the last-layer stage. The run always
ends with a push + last-layer stage, so the returned model's prototypes are real training patches.
`checkpoints/last.pt` is written after every step (model, the three optimizers, the scheduler,
random states, history and the step index), so `resume=True` continues in the right phase.

Only pushed models are selected from (`checkpoints/best.pt`), on validation only; the test split is
evaluated at fixed points (before push, after push, after the last-layer stage) and never selects.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from ..config import ProtoPNetConfig, RunConfig
from ..errors import CheckpointError
from ..io import atomic_write_json, atomic_write_text
from ..models.protopnet import ProtoPNet, TrunkClassifier
from ..progress import tqdm
from . import precision
from .checkpoint import load_checkpoint, save_checkpoint
from .evaluate import evaluate_model
from .last_layer import last_layer_stage
from .layout import apply_memory_format
from .loop import (
    build_optimizer,
    build_scheduler,
    rank_rng_states,
    restore_rank_rng,
    train_one_epoch,
)
from .push import push_prototypes

log = logging.getLogger(__name__)

# The original's weight decay on the trunk and add-on layers (fixed in its main.py, not a setting).
WEIGHT_DECAY = 1e-3
HEADLINE = ("accuracy", "balanced_accuracy", "auroc_macro", "melanoma_sensitivity")


def build_schedule(p: ProtoPNetConfig) -> list[tuple[str, int]]:
    """The steps of a run as (phase, epoch index): trunk | warm | joint | push | last_layer.

    No push during the trunk epochs: the prototype layer is not trained yet."""
    total = p.trunk_epochs + p.warm_epochs + p.joint_epochs
    steps: list[tuple[str, int]] = []
    for epoch in range(total):
        if epoch < p.trunk_epochs:
            steps.append(("trunk", epoch))
            continue
        steps.append(("warm" if epoch < p.trunk_epochs + p.warm_epochs else "joint", epoch))
        if (
            epoch >= p.push_start
            and (epoch - p.push_start) % p.push_every == 0
            and epoch != total - 1
        ):
            steps += [("push", epoch), ("last_layer", epoch)]
    last = max(total - 1, 0)
    return steps + [("push", last), ("last_layer", last)]


# --- losses -------------------------------------------------------------------------------------


def prototype_costs(
    min_distances: torch.Tensor, targets: torch.Tensor, model: ProtoPNet
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster cost (distance to the nearest own-class prototype) and separation cost (to the
    nearest other-class prototype), each averaged over the batch.

    A sample whose class has no prototypes (after prototype pruning) contributes the original's
    max_dist = D x k x k to the cluster cost, a constant without gradient, instead of infinity:
    the original's max_dist - max((max_dist - d) * own) equals it when `own` is all zero (and is
    the nearest own distance otherwise, for distances below max_dist). Likewise for the separation
    cost when every prototype is of the sample's class.
    """
    own = model.prototype_classes[None, :] == targets[:, None]  # (B, P)
    max_dist = float(math.prod(model.prototype_shape[1:]))
    return _nearest_of(min_distances, own, max_dist), _nearest_of(min_distances, ~own, max_dist)


def _nearest_of(min_distances: torch.Tensor, mask: torch.Tensor, empty: float) -> torch.Tensor:
    """Mean over the batch of the smallest distance among `mask`ed prototypes; `empty` for a row
    without any (the original's value there)."""
    inf = torch.tensor(float("inf"), device=min_distances.device, dtype=min_distances.dtype)
    nearest = torch.where(mask, min_distances, inf).amin(1)
    return torch.where(mask.any(1), nearest, torch.full_like(nearest, empty)).mean()


def wrong_class_l1(model: ProtoPNet) -> torch.Tensor:
    """L1 norm of the last-layer weights from prototypes to classes other than their own."""
    return (model.last_layer.weight * (1 - model.prototype_class_identity.t())).abs().sum()


def protopnet_loss(
    out, targets: torch.Tensor, model: ProtoPNet, p: ProtoPNetConfig, class_weights=None
) -> dict[str, torch.Tensor]:
    """CE + clst * cluster + sep * separation + l1 * L1 (sep is negative: separation is rewarded)."""
    ce = F.cross_entropy(out.logits.float(), targets, weight=class_weights)
    cluster, separation = prototype_costs(out.min_distances, targets, model)
    l1 = wrong_class_l1(model)
    total = p.crs_ent * ce + p.clst * cluster + p.sep * separation + p.l1 * l1
    return {
        "loss": total,
        "cross_entropy": ce,
        "cluster": cluster,
        "separation": separation,
        "l1": l1,
    }


# --- optimisers ---------------------------------------------------------------------------------


def build_optimizers(model: ProtoPNet, p: ProtoPNetConfig) -> dict[str, Any]:
    """The original's three Adam optimisers and the joint StepLR."""
    warm = torch.optim.Adam(
        [
            {
                "params": model.add_on_layers.parameters(),
                "lr": p.warm_lr_add_on,
                "weight_decay": WEIGHT_DECAY,
            },
            {"params": [model.prototype_vectors], "lr": p.warm_lr_prototypes},
        ],
        fused=True,
    )
    joint = torch.optim.Adam(
        [
            {
                "params": model.features.parameters(),
                "lr": p.joint_lr_features,
                "weight_decay": WEIGHT_DECAY,
            },
            {
                "params": model.add_on_layers.parameters(),
                "lr": p.joint_lr_add_on,
                "weight_decay": WEIGHT_DECAY,
            },
            {"params": [model.prototype_vectors], "lr": p.joint_lr_prototypes},
        ],
        fused=True,
    )
    # fused (all three): one kernel a step instead of a Python loop over the trunk's ~60 tensors.
    # On 2 CPU cores the joint epoch is bound by the trunk's convolutions, so this changed it by
    # less than the run-to-run noise (benchmarks/bench_protopnet.py); on GPUs it saves launches.
    last = torch.optim.Adam(
        [{"params": model.last_layer.parameters(), "lr": p.last_layer_lr}], fused=True
    )
    scheduler = torch.optim.lr_scheduler.StepLR(
        joint, step_size=p.joint_lr_step, gamma=p.joint_lr_gamma
    )
    return {"warm": warm, "joint": joint, "last": last, "joint_scheduler": scheduler}


def step_before_epoch(scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """Step an lr scheduler before the epoch, as the original's main.py steps the joint StepLR;
    torch's warning about a step before any `optimizer.step()` is expected here, so silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
        scheduler.step()


# --- the phases -----------------------------------------------------------------------------------


def train_epoch(
    model: ProtoPNet,
    loader,
    optimizer: torch.optim.Optimizer,
    p: ProtoPNetConfig,
    device: torch.device,
    class_weights: torch.Tensor | None = None,
    scaler: torch.amp.GradScaler | None = None,
    progress: bool = True,
    desc: str = "",
    forward: nn.Module | None = None,
    amp: bool | None = None,
) -> dict[str, float]:
    """One epoch of warm-up or joint training; returns the mean of each loss term and the accuracy.

    `forward` (default `model.forward_details`) is the DDP-wrapped forward under torchrun; the
    returned means are over all ranks. Under autocast when `amp` (default: when a scaler is given).
    """
    model.train()
    amp = scaler is not None if amp is None else amp
    forward = forward if forward is not None else model.forward_details
    sums: dict[str, torch.Tensor] = {}
    correct = torch.zeros((), device=device)
    n = 0
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not progress):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with precision.autocast(device, amp):
            out = forward(x)
        terms = protopnet_loss(out, y, model, p, class_weights)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(terms["loss"]).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            terms["loss"].backward()
            optimizer.step()
        for key, value in terms.items():  # summed on the device: no sync per batch
            sums[key] = sums.get(key, 0) + value.detach() * len(y)
        correct += (out.logits.argmax(1) == y).sum()
        n += len(y)
    keys = list(sums)
    *totals, correct_, n = distributed.all_reduce_sum(*(sums[k] for k in keys), correct, n)
    row = {key: total / max(n, 1) for key, total in zip(keys, totals, strict=True)}
    row["train_accuracy"] = correct_ / max(n, 1)
    return row


class _DetailsForward(nn.Module):
    """forward = ProtoPNet.forward_details, so DDP (which hooks forward) syncs its gradients."""

    def __init__(self, net: ProtoPNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        return self.net.forward_details(x)


def _last_layer_batch(cfg: RunConfig) -> int:
    """The last-layer stage's batch: the global one. Every rank runs the stage on the similarity
    vectors gathered from all ranks, so under torchrun `data.batch_size` (per rank) x the world
    size gives the batches one process with the same global batch takes."""
    return cfg.data.batch_size * distributed.world_size()


def refit_last_layer(
    model: ProtoPNet,
    similarities: torch.Tensor,
    targets: torch.Tensor,
    loaders: Any,
    cfg: RunConfig,
    iterations: int,
    progress: bool = False,
) -> list[dict[str, float]]:
    """A last-layer stage with a fresh optimiser, after a push or a pruning outside the training
    schedule: the data's class weights and sampling, seeded by `cfg.seed`, the same on all ranks."""
    p = copy.deepcopy(cfg.protopnet)
    p.last_layer_iterations = iterations
    weights = loaders.loss_weights
    rows = last_layer_stage(
        model, similarities, targets, build_optimizers(model, p)["last"], p, _last_layer_batch(cfg),
        None if weights is None else weights.to(similarities.device), cfg.data.balance == "oversample",
        torch.Generator().manual_seed(cfg.seed), progress,
        precision.use_amp(cfg.train, similarities.device),
    )  # fmt: skip
    distributed.broadcast_module(model.last_layer)  # identical on all ranks; guard drift
    return rows


@torch.no_grad()
def similarity_vectors(
    model: ProtoPNet, loader, device: torch.device, amp: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, P) last-layer inputs and targets of a whole loader (used when resuming mid-stage);
    under torchrun gathered from all ranks' shards, in dataset order, on every rank. In float32,
    as evaluation computes them (also inside an autocast region); `amp`: under autocast."""
    model.eval()
    sims, ys = [], []
    for x, y in loader:
        with precision.autocast(device, amp):
            sims.append(model.similarity_vectors(x.to(device)).float())
        ys.append(y.to(device))
    return (
        distributed.gather_in_order(torch.cat(sims), loader.sampler),
        distributed.gather_in_order(torch.cat(ys), loader.sampler),
    )


# --- the whole schedule ---------------------------------------------------------------------------


def _headline(metrics: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {f"{prefix}{k}": metrics.get(k) for k in HEADLINE}


def _score(metrics: dict[str, Any], name: str) -> float:
    value = metrics.get(name)
    return float(metrics["accuracy"] if value is None else value)


def train_protopnet(
    model: ProtoPNet,
    loaders,
    cfg: RunConfig,
    run_dir: str | Path | None,
    device: torch.device | str,
    resume: bool = False,
) -> dict[str, Any]:
    """Run the whole ProtoPNet schedule; returns per-push stage metrics (val and test) and the
    selected model's `val`/`test` metrics. The selected (best validation, pushed) state is loaded
    into `model` at the end."""
    p, progress = cfg.protopnet, cfg.train.progress and distributed.is_main()
    device = torch.device(device)
    apply_memory_format(model.to(device), cfg.train)
    class_names = loaders.class_names
    steps = build_schedule(p)
    opt = build_optimizers(model, p)
    trunk: TrunkClassifier | None = None
    if p.trunk_epochs > 0:  # the trunk trained as the baseline CNN is: train section's recipe
        trunk = TrunkClassifier(model.features, model.num_classes).to(device)
        opt["trunk"] = build_optimizer(trunk.parameters(), cfg.train)
        trunk_scheduler = build_scheduler(opt["trunk"], cfg.train, p.trunk_epochs)
        if trunk_scheduler is not None:
            opt["trunk_scheduler"] = trunk_scheduler
    amp = precision.use_amp(cfg.train, device)
    scaler = precision.grad_scaler(cfg.train, device)
    class_weights = loaders.loss_weights.to(device) if loaders.loss_weights is not None else None
    oversample = cfg.data.balance == "oversample"
    generator = getattr(loaders, "generator", None)
    run_dir = Path(run_dir) if run_dir is not None else None
    ckpt_dir = run_dir / "checkpoints" if run_dir is not None else None
    write = ckpt_dir is not None and distributed.is_main()  # rank 0 writes, the others wait
    ddp: dict[str, nn.Module] = {}  # per phase: DDP reduces what requires grad when it is built

    state: dict[str, Any] = {
        "step": 0,
        "history": [],
        "pushes": [],
        "best_score": None,
        "best_push": None,
    }
    best_state: dict[str, torch.Tensor] | None = None
    cached: tuple[torch.Tensor, torch.Tensor] | None = None
    if resume and ckpt_dir is not None and (ckpt_dir / "last.pt").is_file():
        last = load_checkpoint(ckpt_dir / "last.pt")
        if last.get("stage") != "protopnet":
            raise CheckpointError(
                f"{ckpt_dir / 'last.pt'} is not a ProtoPNet training checkpoint",
                "resume it with the command that wrote it, or start a new run folder",
            )
        if [tuple(s) for s in last["schedule"]] != steps:
            raise CheckpointError(
                "the ProtoPNet schedule differs from the checkpoint's",
                "resume with the run's saved config",
            )
        model.load_state_dict(last["state_dict"])
        for key in opt:
            opt[key].load_state_dict(last["optimizers"][key])
        if trunk is not None:
            trunk.head.load_state_dict(last["trunk_head"])
        if scaler is not None and last.get("scaler"):
            scaler.load_state_dict(last["scaler"])
        state = copy.deepcopy(last["progress"])
        restore_rank_rng(last, generator, cfg.seed, state["step"])
        if (ckpt_dir / "best.pt").is_file():
            best_state = load_checkpoint(ckpt_dir / "best.pt")["state_dict"]
        log.info(
            "resuming at step %d of %d (%s, epoch %d)",
            state["step"] + 1,
            len(steps),
            *steps[min(state["step"], len(steps) - 1)],
        )

    def evaluate(split: str) -> dict[str, Any]:
        return evaluate_model(model, getattr(loaders, split), class_names, device)

    def save_last() -> None:
        if ckpt_dir is None:
            return
        rng = rank_rng_states(generator)  # a collective: every rank takes part
        if not write:
            distributed.barrier()
            return
        atomic_write_text(
            run_dir / "history.csv", pd.DataFrame(state["history"]).to_csv(index=False)
        )
        save_checkpoint(
            ckpt_dir / "last.pt", model, cfg, class_names,
            stage="protopnet", schedule=[list(s) for s in steps], progress=state,
            optimizers={k: v.state_dict() for k, v in opt.items()},
            trunk_head=trunk.head.state_dict() if trunk is not None else None,
            scaler=scaler.state_dict() if scaler is not None else None,
            **rng,
        )  # fmt: skip
        distributed.barrier()

    while state["step"] < len(steps):
        phase, epoch = steps[state["step"]]
        t0 = time.perf_counter()
        row: dict[str, Any] = {"step": state["step"] + 1, "phase": phase, "epoch": epoch + 1}
        if phase == "trunk":
            assert trunk is not None
            model.set_trainable(features=True, add_on=False, prototypes=False, last_layer=False)
            row["lr"] = opt["trunk"].param_groups[0]["lr"]
            if phase not in ddp:
                ddp[phase] = distributed.wrap_model(trunk, device, cfg.train.sync_batchnorm)
            distributed.set_epoch(loaders.train, epoch)
            row["train_loss"] = train_one_epoch(
                ddp[phase], loaders.train, opt["trunk"], nn.CrossEntropyLoss(weight=class_weights),
                device, scaler, progress, f"trunk {epoch + 1}", amp,
            )  # fmt: skip
            if "trunk_scheduler" in opt:
                opt["trunk_scheduler"].step()
            val = evaluate_model(trunk, loaders.val, class_names, device)  # the trunk's own head
        elif phase in ("warm", "joint"):
            warm = phase == "warm"
            model.set_trainable(features=not warm, add_on=True, prototypes=True, last_layer=False)
            optimizer = opt["warm"] if warm else opt["joint"]
            if not warm and p.joint_lr_step_at == "start":
                step_before_epoch(opt["joint_scheduler"])
            row["lr"] = optimizer.param_groups[0]["lr"]
            if phase not in ddp:
                ddp[phase] = distributed.wrap_model(_DetailsForward(model), device, cfg.train.sync_batchnorm)
            distributed.set_epoch(loaders.train, epoch)
            terms = train_epoch(
                model,
                loaders.train,
                optimizer,
                p,
                device,
                class_weights,
                scaler,
                progress,
                f"{phase} {epoch + 1}",
                ddp[phase] if distributed.is_distributed() else None,
                amp,
            )
            if not warm and p.joint_lr_step_at == "end":
                opt["joint_scheduler"].step()
            row.update({"train_loss": terms.pop("loss"), **terms})
            val = evaluate("val")
        elif phase == "push":
            before = {"val": evaluate("val"), "test": evaluate("test")}
            out_dir = None  # rendered by rank 0
            if run_dir is not None and p.save_push_images:
                out_dir = run_dir / "prototypes" / f"epoch-{epoch + 1:03d}"
            result = push_prototypes(
                model, loaders.push, device, class_names, out_dir, progress=progress,
                render_async=True, amp=p.push_amp,
            )  # fmt: skip
            cached = (result.similarities, result.targets)
            val = evaluate("val")  # while the prototype images are written
            after = {"val": val, "test": evaluate("test")}
            result.wait_rendered()  # the checkpoint below records a finished push
            state["pushes"].append(
                {
                    "epoch": epoch + 1,
                    "push": result.summary(),
                    "before_push": before,
                    "after_push": after,
                }
            )
            row.update(
                {
                    "push_accuracy_before": result.accuracy_before,
                    "push_accuracy_after": result.accuracy_after,
                }
            )
            log.info("push after epoch %d: push-set accuracy %.4f -> %.4f, val balanced accuracy %.4f -> %.4f (%.1f s)",
                     epoch + 1, result.accuracy_before, result.accuracy_after,
                     before["val"]["balanced_accuracy"], val["balanced_accuracy"], result.seconds)  # fmt: skip
        else:  # last_layer
            if cached is None:  # resumed between the push and this stage
                cached = similarity_vectors(model, loaders.push, device, p.push_amp)
            g = torch.Generator().manual_seed(cfg.seed * 7919 + len(state["pushes"]))
            iters = last_layer_stage(
                model,
                cached[0],
                cached[1],
                opt["last"],
                p,
                _last_layer_batch(cfg),
                class_weights,
                oversample,
                g,
                progress,
                amp,
            )
            distributed.broadcast_module(model.last_layer)  # identical on all ranks; guard drift
            cached = None
            val = evaluate("val")
            record = state["pushes"][-1]
            record["after_last_layer"] = {"val": val, "test": evaluate("test")}
            record["last_layer_iterations"] = iters
            if iters:
                row.update(
                    {
                        "train_loss": iters[-1]["loss"],
                        "train_accuracy": iters[-1]["train_accuracy"],
                    }
                )
            score = _score(val, cfg.train.select_metric)
            if state["best_score"] is None or score > state["best_score"]:
                state["best_score"], state["best_push"] = score, len(state["pushes"]) - 1
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                if write:
                    save_checkpoint(
                        ckpt_dir / "best.pt",
                        model,
                        cfg,
                        class_names,
                        stage="best",
                        epoch=epoch,
                        val=val,
                    )
        row.update(_headline(val, "val_"))
        row["seconds"] = time.perf_counter() - t0
        if phase == "trunk":
            log.info("trunk epoch %d: loss %.4f  val acc %.4f  bal %.4f (linear head)  (%.1f s)",
                     epoch + 1, row["train_loss"], val["accuracy"], val["balanced_accuracy"],
                     row["seconds"])  # fmt: skip
        if phase in ("warm", "joint"):
            log.info("%s epoch %d: loss %.4f (ce %.4f, clst %.4f, sep %.4f)  val acc %.4f  bal %.4f  (%.1f s)",
                     phase, epoch + 1, row["train_loss"], row["cross_entropy"], row["cluster"], row["separation"],
                     val["accuracy"], val["balanced_accuracy"], row["seconds"])  # fmt: skip
        state["history"].append(row)
        state["step"] += 1
        save_last()

    if cfg.train.sync_batchnorm:
        distributed.revert_sync_batchnorm(model)
    if best_state is not None:
        model.load_state_dict(best_state)
    best = state["pushes"][state["best_push"]]
    stages = {
        "push_epoch": best["epoch"],
        "before_push": best["before_push"],
        "after_push": best["after_push"],
        "after_last_layer": best["after_last_layer"],
    }
    results = {
        "val": best["after_last_layer"]["val"],
        "test": best["after_last_layer"]["test"],
        "stages": stages,
        "pushes": state["pushes"],
    }
    if run_dir is not None and distributed.is_main():
        atomic_write_json(
            run_dir / "protopnet_stages.json",
            {"selected_push_epoch": best["epoch"], "pushes": state["pushes"]},
        )
    return results
