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

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from ..config import ProtoPNetConfig, RunConfig
from ..errors import CheckpointError
from ..io import atomic_write_json
from ..metrics import HEADLINE
from ..progress import tqdm
from ..train import precision
from ..train.checkpointer import Checkpointer
from ..train.evaluate import evaluate_model
from ..train.layout import apply_memory_format
from ..train.loop import build_optimizer, build_scheduler, train_one_epoch
from ..train.run import TRAINERS
from .last_layer import last_layer_stage
from .model import ProtoPNet, TrunkClassifier
from .push import push_prototypes

log = logging.getLogger(__name__)

# The original's weight decay on the trunk and add-on layers (fixed in its main.py, not a setting).
WEIGHT_DECAY = 1e-3


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


@TRAINERS.register("protopnet")
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
    device = torch.device(device)
    apply_memory_format(model.to(device), cfg.train)
    run = _ProtoPNetRun(model, loaders, cfg, device, run_dir)
    if resume:
        run.resume()
    steps, state = run.steps, run.state
    while state["step"] < len(steps):
        phase, epoch = steps[state["step"]]
        t0 = time.perf_counter()
        row: dict[str, Any] = {"step": state["step"] + 1, "phase": phase, "epoch": epoch + 1}
        val = PHASES[phase](run, epoch, row)
        row.update(_headline(val, "val_"))
        row["seconds"] = time.perf_counter() - t0
        _log_step(phase, epoch, row, val)
        state["history"].append(row)
        state["step"] += 1
        run.save_last()
    if cfg.train.sync_batchnorm:
        distributed.revert_sync_batchnorm(model)
    run.ckpt.load_best(model)
    return _results(state, run.ckpt.run_dir)


class _ProtoPNetRun:
    """Everything the schedule's steps share: optimisers, scaler, cached similarities, progress.

    `state` is what `last.pt` records of the run's progress (step index, history, push records,
    the best push); the phases (`PHASES`) read and extend it."""

    def __init__(self, model: ProtoPNet, loaders, cfg: RunConfig, device: torch.device,
                 run_dir: str | Path | None) -> None:  # fmt: skip
        p = cfg.protopnet
        self.model, self.loaders, self.cfg, self.p, self.device = model, loaders, cfg, p, device
        self.progress = cfg.train.progress and distributed.is_main()
        self.class_names = loaders.class_names
        self.steps = build_schedule(p)
        self.opt = build_optimizers(model, p)
        self.trunk: TrunkClassifier | None = None
        if p.trunk_epochs > 0:  # the trunk trained as the baseline CNN is: train section's recipe
            self.trunk = TrunkClassifier(model.features, model.num_classes).to(device)
            self.opt["trunk"] = build_optimizer(self.trunk.parameters(), cfg.train)
            trunk_scheduler = build_scheduler(self.opt["trunk"], cfg.train, p.trunk_epochs)
            if trunk_scheduler is not None:
                self.opt["trunk_scheduler"] = trunk_scheduler
        self.amp = precision.use_amp(cfg.train, device)
        self.scaler = precision.grad_scaler(cfg.train, device)
        weights = loaders.loss_weights
        self.class_weights = weights.to(device) if weights is not None else None
        self.ckpt = Checkpointer(run_dir, cfg, self.class_names, "protopnet", getattr(loaders, "generator", None))
        self.ddp: dict[str, nn.Module] = {}  # per phase: DDP reduces what requires grad when it is built
        self.state: dict[str, Any] = {"step": 0, "history": [], "pushes": [], "best_score": None, "best_push": None}
        self.cached: tuple[torch.Tensor, torch.Tensor] | None = None  # the push's similarities

    def resume(self) -> None:
        last = self.ckpt.resume("ProtoPNet training", "resume it with the command that wrote it, or start a new run folder")
        if last is None:
            return
        if [tuple(s) for s in last["schedule"]] != self.steps:
            raise CheckpointError("the ProtoPNet schedule differs from the checkpoint's", "resume with the run's saved config")
        self.model.load_state_dict(last["state_dict"])
        for key in self.opt:
            self.opt[key].load_state_dict(last["optimizers"][key])
        if self.trunk is not None:
            self.trunk.head.load_state_dict(last["trunk_head"])
        if self.scaler is not None and last.get("scaler"):
            self.scaler.load_state_dict(last["scaler"])
        self.state = copy.deepcopy(last["progress"])
        self.ckpt.restore_rng(last, self.state["step"])
        log.info("resuming at step %d of %d (%s, epoch %d)", self.state["step"] + 1, len(self.steps),
                 *self.steps[min(self.state["step"], len(self.steps) - 1)])  # fmt: skip

    def save_last(self) -> None:
        self.ckpt.save_last(
            self.model, self.state["history"], schedule=[list(s) for s in self.steps], progress=self.state,
            optimizers={k: v.state_dict() for k, v in self.opt.items()},
            trunk_head=self.trunk.head.state_dict() if self.trunk is not None else None,
            scaler=self.scaler.state_dict() if self.scaler is not None else None,
        )  # fmt: skip

    def evaluate(self, split: str) -> dict[str, Any]:
        return evaluate_model(self.model, getattr(self.loaders, split), self.class_names, self.device)

    def wrapped(self, phase: str, module: nn.Module) -> nn.Module:
        """`module` under DDP (torchrun), built once per phase."""
        if phase not in self.ddp:
            self.ddp[phase] = distributed.wrap_model(module, self.device, self.cfg.train.sync_batchnorm)
        return self.ddp[phase]


def _trunk_step(run: _ProtoPNetRun, epoch: int, row: dict[str, Any]) -> dict[str, Any]:
    """One epoch of the trunk alone with a linear head, as the baseline CNN trains."""
    assert run.trunk is not None
    run.model.set_trainable(features=True, add_on=False, prototypes=False, last_layer=False)
    row["lr"] = run.opt["trunk"].param_groups[0]["lr"]
    trunk = run.wrapped("trunk", run.trunk)
    distributed.set_epoch(run.loaders.train, epoch)
    row["train_loss"] = train_one_epoch(
        trunk, run.loaders.train, run.opt["trunk"], nn.CrossEntropyLoss(weight=run.class_weights),
        run.device, run.scaler, run.progress, f"trunk {epoch + 1}", run.amp,
    )  # fmt: skip
    if "trunk_scheduler" in run.opt:
        run.opt["trunk_scheduler"].step()
    return evaluate_model(run.trunk, run.loaders.val, run.class_names, run.device)  # the trunk's own head


def _epoch_step(run: _ProtoPNetRun, epoch: int, row: dict[str, Any], phase: str) -> dict[str, Any]:
    """One warm-up epoch (add-on and prototypes) or joint epoch (the trunk too)."""
    warm, p = phase == "warm", run.p
    run.model.set_trainable(features=not warm, add_on=True, prototypes=True, last_layer=False)
    optimizer = run.opt["warm"] if warm else run.opt["joint"]
    if not warm and p.joint_lr_step_at == "start":
        step_before_epoch(run.opt["joint_scheduler"])
    row["lr"] = optimizer.param_groups[0]["lr"]
    forward = run.wrapped(phase, _DetailsForward(run.model))
    distributed.set_epoch(run.loaders.train, epoch)
    terms = train_epoch(
        run.model, run.loaders.train, optimizer, p, run.device, run.class_weights, run.scaler, run.progress,
        f"{phase} {epoch + 1}", forward if distributed.is_distributed() else None, run.amp,
    )  # fmt: skip
    if not warm and p.joint_lr_step_at == "end":
        run.opt["joint_scheduler"].step()
    row.update({"train_loss": terms.pop("loss"), **terms})
    return run.evaluate("val")


def _push_step(run: _ProtoPNetRun, epoch: int, row: dict[str, Any]) -> dict[str, Any]:
    """The push: every prototype onto its nearest training patch of its class; test metrics before
    and after it recorded."""
    before = {"val": run.evaluate("val"), "test": run.evaluate("test")}
    out_dir = None  # rendered by rank 0
    if run.ckpt.run_dir is not None and run.p.save_push_images:
        out_dir = run.ckpt.run_dir / "prototypes" / f"epoch-{epoch + 1:03d}"
    result = push_prototypes(
        run.model, run.loaders.push, run.device, run.class_names, out_dir, progress=run.progress,
        render_async=True, amp=run.p.push_amp,
    )  # fmt: skip
    run.cached = (result.similarities, result.targets)
    val = run.evaluate("val")  # while the prototype images are written
    after = {"val": val, "test": run.evaluate("test")}
    result.wait_rendered()  # the checkpoint written after this step records a finished push
    run.state["pushes"].append({"epoch": epoch + 1, "push": result.summary(), "before_push": before, "after_push": after})
    row.update({"push_accuracy_before": result.accuracy_before, "push_accuracy_after": result.accuracy_after})
    log.info("push after epoch %d: push-set accuracy %.4f -> %.4f, val balanced accuracy %.4f -> %.4f (%.1f s)",
             epoch + 1, result.accuracy_before, result.accuracy_after,
             before["val"]["balanced_accuracy"], val["balanced_accuracy"], result.seconds)  # fmt: skip
    return val


def _last_layer_step(run: _ProtoPNetRun, epoch: int, row: dict[str, Any]) -> dict[str, Any]:
    """The last-layer stage on the push's similarities; a pushed model, so the one selected from."""
    if run.cached is None:  # resumed between the push and this stage
        run.cached = similarity_vectors(run.model, run.loaders.push, run.device, run.p.push_amp)
    g = torch.Generator().manual_seed(run.cfg.seed * 7919 + len(run.state["pushes"]))
    iters = last_layer_stage(
        run.model, run.cached[0], run.cached[1], run.opt["last"], run.p, _last_layer_batch(run.cfg),
        run.class_weights, run.cfg.data.balance == "oversample", g, run.progress, run.amp,
    )  # fmt: skip
    distributed.broadcast_module(run.model.last_layer)  # identical on all ranks; guard drift
    run.cached = None
    val = run.evaluate("val")
    record = run.state["pushes"][-1]
    record["after_last_layer"] = {"val": val, "test": run.evaluate("test")}
    record["last_layer_iterations"] = iters
    if iters:
        row.update({"train_loss": iters[-1]["loss"], "train_accuracy": iters[-1]["train_accuracy"]})
    score = _score(val, run.cfg.train.select_metric)
    if run.state["best_score"] is None or score > run.state["best_score"]:
        run.state["best_score"], run.state["best_push"] = score, len(run.state["pushes"]) - 1
        run.ckpt.keep_best(run.model, epoch, val)
    return val


# The schedule's phases (`build_schedule`'s names), each one step of the loop.
PHASES = {
    "trunk": _trunk_step,
    "warm": lambda run, epoch, row: _epoch_step(run, epoch, row, "warm"),
    "joint": lambda run, epoch, row: _epoch_step(run, epoch, row, "joint"),
    "push": _push_step,
    "last_layer": _last_layer_step,
}


def _log_step(phase: str, epoch: int, row: dict[str, Any], val: dict[str, Any]) -> None:
    if phase == "trunk":
        log.info("trunk epoch %d: loss %.4f  val acc %.4f  bal %.4f (linear head)  (%.1f s)",
                 epoch + 1, row["train_loss"], val["accuracy"], val["balanced_accuracy"],
                 row["seconds"])  # fmt: skip
    if phase in ("warm", "joint"):
        log.info("%s epoch %d: loss %.4f (ce %.4f, clst %.4f, sep %.4f)  val acc %.4f  bal %.4f  (%.1f s)",
                 phase, epoch + 1, row["train_loss"], row["cross_entropy"], row["cluster"], row["separation"],
                 val["accuracy"], val["balanced_accuracy"], row["seconds"])  # fmt: skip


def _results(state: dict[str, Any], run_dir: Path | None) -> dict[str, Any]:
    """The selected push's metrics; `protopnet_stages.json` with every push's."""
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
        atomic_write_json(run_dir / "protopnet_stages.json", {"selected_push_epoch": best["epoch"], "pushes": state["pushes"]})
    return results
