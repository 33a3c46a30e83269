"""Prototype pruning (Chen et al. 2019, run_pruning.py) plus merging of duplicate prototypes.

1. For each prototype, its k nearest training patches (one per image at most, explain.nearest).
2. Prune a prototype when fewer than `threshold` of them come from its own class: it encodes
   something shared with other classes (often background), not its class.
3. Merge duplicates: prototypes of one class with identical vectors (two prototypes pushed onto
   the same image patch). Their similarities are equal for every input, so keeping one and adding
   the other's last-layer column to it leaves every logit unchanged.
4. Remove the pruned/merged prototypes physically (prototype tensor, last-layer columns, class
   identity), then fine-tune the last layer on cached similarity vectors (protopnet.training).

The pruned checkpoint stores the class of each remaining prototype in
`protopnet.prototype_classes`, so `model_from_checkpoint` rebuilds it.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from .. import distributed
from ..config import RunConfig
from ..errors import ConfigError
from ..explain.nearest import require_k_images
from ..io import atomic_write_json, atomic_write_text, check_run_dir
from ..metrics import HEADLINE
from .model import ProtoPNet

log = logging.getLogger(__name__)

@dataclass
class PruningPlan:
    """Which prototypes go and why; indices refer to the unpruned model."""

    prune: list[int]  # too few own-class neighbours
    merge: dict[int, int]  # removed duplicate -> the prototype that absorbs its weights
    num_prototypes: int

    @property
    def keep(self) -> list[int]:
        gone = set(self.prune) | set(self.merge)
        return [j for j in range(self.num_prototypes) if j not in gone]


def select_low_purity(own_class_neighbours: torch.Tensor, threshold: int) -> list[int]:
    """Prototypes with fewer than `threshold` own-class patches among their k nearest."""
    return torch.nonzero(own_class_neighbours < threshold).flatten().tolist()


def protect_classes(
    pruned: list[int], own_class_neighbours: torch.Tensor, classes: torch.Tensor, min_per_class: int
) -> list[int]:
    """Spare pruned prototypes so every class keeps at least `min_per_class` (if it had them).

    On class-imbalanced data (HAM10000: 67 % nevi) the nearest patches of a weak model's minority
    prototypes are mostly of the majority class, and the original criterion can remove every
    prototype of e.g. melanoma. Per class the spared ones are those with the most own-class
    neighbours (ties: lower index). min_per_class = 0 is the original behaviour.
    """
    if min_per_class <= 0:
        return list(pruned)
    gone = set(pruned)
    spared: set[int] = set()
    for c in classes.unique().tolist():
        members = (classes == c).nonzero().flatten().tolist()
        kept = sum(1 for j in members if j not in gone)
        candidates = sorted(
            (j for j in members if j in gone), key=lambda j: (-int(own_class_neighbours[j]), j)
        )
        spared.update(candidates[: max(0, min_per_class - kept)])
    return [j for j in pruned if j not in spared]


def find_duplicates(
    prototypes: torch.Tensor, classes: torch.Tensor, exclude: list[int]
) -> dict[int, int]:
    """Map each duplicate prototype to the first identical prototype of the same class.

    Identical vectors are what pushing two prototypes onto the same patch (same image, same latent
    position) produces; comparing vectors also catches it without the push's provenance files.
    """
    skip = set(exclude)
    kept = [j for j in range(len(prototypes)) if j not in skip]
    if not kept:
        return {}
    flat = prototypes[kept].flatten(1)
    key = torch.cat([flat, classes[kept, None].to(flat.dtype)], 1)
    _, inverse = torch.unique(key, dim=0, return_inverse=True)
    first: dict[int, int] = {}
    merge: dict[int, int] = {}
    for j, group in zip(kept, inverse.tolist()):
        if group in first:
            merge[j] = first[group]
        else:
            first[group] = j
    return merge


@torch.no_grad()
def apply_plan(model: ProtoPNet, plan: PruningPlan) -> ProtoPNet:
    """Shrink `model` in place to the kept prototypes; merged columns are added to their keepers."""
    keep = torch.tensor(plan.keep, dtype=torch.long, device=model.prototype_vectors.device)
    weight = model.last_layer.weight.detach().clone()  # (C, P)
    for removed, kept in plan.merge.items():
        weight[:, kept] += weight[:, removed]
    classes = model.prototype_classes[keep].clone()
    model.prototype_vectors = nn.Parameter(
        model.prototype_vectors.detach()[keep].clone(),
        requires_grad=model.prototype_vectors.requires_grad,
    )
    model.prototype_classes = classes
    model.prototype_class_identity = nn.functional.one_hot(classes, model.num_classes).to(
        model.prototype_class_identity.dtype
    )
    last = nn.Linear(len(keep), model.num_classes, bias=False).to(weight.device, weight.dtype)
    last.weight.copy_(weight[:, keep])
    model.last_layer = last
    model.num_prototypes = len(keep)
    return model


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics.get(k) for k in HEADLINE}


def prune_prototypes(
    checkpoint: str | Path | dict,
    cfg: RunConfig | None = None,
    out_dir: str | Path | None = None,
    *,
    k: int | None = None,
    threshold: int | None = None,
    finetune_iterations: int | None = None,
    min_per_class: int = 0,
    device: str = "auto",
    force: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Prune a trained, pushed ProtoPNet; writes the pruned checkpoint and a report.

    `cfg` (default: the checkpoint's) gives the data and `prune_prototypes` settings; k,
    threshold and finetune_iterations override them; `min_per_class` > 0 never lets a class drop
    below that many prototypes (see protect_classes). `out_dir` defaults to
    `<run folder>/prototype_pruning`. Returns the summary written to prototype_pruning.json.
    """
    from ..train.checkpoint import run_dir_of
    from ..train.evaluate import evaluate_model
    from ..train.run import open_checkpoint
    from .training import refit_last_layer, similarity_vectors

    source = open_checkpoint(checkpoint, cfg, protopnet=True)
    ckpt = source.ckpt
    source.cfg = cfg = _settings(source.cfg, k, threshold, finetune_iterations, min_per_class)
    q = cfg.prune_prototypes
    progress = cfg.train.progress if progress is None else progress
    dev = distributed.resolve_device(device)  # joins torchrun's process group if launched by it
    out = out_dir or run_dir_of(Path(ckpt["path"])) / "prototype_pruning"
    check_run_dir(out, force=force)
    loaders, _ = source.data("prune")
    class_names = loaders.class_names
    require_k_images(q.k, len(loaders.push.dataset))  # all checked: now the folder may change
    out = distributed.prepare_output_dir(out, force=force)
    model: ProtoPNet = source.model(dev)

    def evaluate() -> dict[str, Any]:
        return {s: evaluate_model(model, getattr(loaders, s), class_names, dev) for s in ("val", "test")}

    metrics = {"before": evaluate()}
    classes_before = model.prototype_classes.cpu().clone()
    plan, evidence = plan_pruning(model, loaders.push, q.k, q.threshold, min_per_class, dev, progress)
    with torch.no_grad():
        logits_before = model.last_layer(similarity_vectors(model, loaders.push, dev)[0])
    apply_plan(model, plan)
    metrics["after_pruning"] = evaluate()
    sims, targets = similarity_vectors(model, loaders.push, dev)
    with torch.no_grad():  # merging alone leaves every logit unchanged: measured
        merge_max_change = float((model.last_layer(sims) - logits_before).abs().max()) if not plan.prune else None
    iterations = refit_last_layer(model, sims, targets, loaders, cfg, q.finetune_iterations, progress)
    model.eval()
    metrics["after_finetuning"] = evaluate()
    summary = _summary(ckpt, cfg, min_per_class, plan, evidence, classes_before, class_names, metrics,
                       merge_max_logit_change=merge_max_change, finetune_history=iterations)  # fmt: skip
    _write(out, model, cfg, class_names, summary)
    log.info(
        "pruned %d and merged %d of %d prototypes; test balanced accuracy %.4f -> %.4f -> %.4f (fine-tuned) -> %s",
        len(plan.prune), len(plan.merge), plan.num_prototypes, metrics["before"]["test"]["balanced_accuracy"],
        metrics["after_pruning"]["test"]["balanced_accuracy"], metrics["after_finetuning"]["test"]["balanced_accuracy"], out,
    )  # fmt: skip
    return summary


def _settings(cfg: RunConfig, k, threshold, finetune_iterations, min_per_class: int) -> RunConfig:
    """A copy of the run's config with the call's overrides, validated."""
    cfg = copy.deepcopy(cfg)
    q = cfg.prune_prototypes
    q.k = q.k if k is None else k
    q.threshold = q.threshold if threshold is None else threshold
    q.finetune_iterations = q.finetune_iterations if finetune_iterations is None else finetune_iterations
    cfg.validate()
    if min_per_class < 0:
        raise ConfigError(
            f"min_per_class = {min_per_class} must be >= 0",
            "give the fewest prototypes a class keeps (0: the original criterion)",
        )
    return cfg


@dataclass
class PruningEvidence:
    """Why the plan is what it is: per prototype its own-class count among the k nearest patches,
    the class counts of those patches, and the prototypes below the threshold (before sparing)."""

    own_class_neighbours: torch.Tensor
    neighbour_class_counts: Any
    below_threshold: list[int]


def plan_pruning(model: ProtoPNet, push_loader, k: int, threshold: int, min_per_class: int = 0,
                 device: torch.device | str = "cpu", progress: bool = False) -> tuple[PruningPlan, PruningEvidence]:  # fmt: skip
    """The original's criterion on `model` (unchanged): prune a prototype with fewer than
    `threshold` own-class patches among its `k` nearest training patches, spare per
    `min_per_class`, merge duplicates among the rest."""
    from ..explain.nearest import k_nearest_patches

    classes = model.prototype_classes.cpu().clone()
    nearest = k_nearest_patches(model, push_loader, k, device, progress, "prune: nearest patches")
    own = nearest.own_class_count(classes)
    below = select_low_purity(own, threshold)
    pruned = protect_classes(below, own, classes, min_per_class)
    merge = find_duplicates(model.prototype_vectors.detach().cpu(), classes, pruned)
    counts = nearest.class_counts(model.num_classes)
    return PruningPlan(pruned, merge, model.num_prototypes), PruningEvidence(own, counts, below)


def _per_class(plan: PruningPlan, classes_before: torch.Tensor, class_names: list[str]) -> list[dict[str, Any]]:
    rows = []
    for c, name in enumerate(class_names):
        n = int((classes_before == c).sum())
        n_pruned = sum(1 for j in plan.prune if classes_before[j] == c)
        n_merged = sum(1 for j in plan.merge if classes_before[j] == c)
        rows.append({"class": name, "before": n, "pruned": n_pruned, "merged": n_merged, "after": n - n_pruned - n_merged})
    return rows


def _prototype_records(plan: PruningPlan, evidence: PruningEvidence, classes_before: torch.Tensor,
                       class_names: list[str]) -> list[dict[str, Any]]:  # fmt: skip
    """One row per prototype of the unpruned model: its neighbours and what became of it."""
    pruned, below, keep = set(plan.prune), set(evidence.below_threshold), plan.keep
    counts = evidence.neighbour_class_counts
    return [
        {
            "prototype": j,
            "class": class_names[int(classes_before[j])],
            "own_class_neighbours": int(evidence.own_class_neighbours[j]),
            "neighbour_classes": {class_names[c]: int(n) for c, n in enumerate(counts[j]) if n > 0},
            "status": "pruned" if j in pruned else ("merged" if j in plan.merge else ("spared" if j in below else "kept")),
            "merged_into": plan.merge.get(j),
            "new_index": keep.index(j) if j in set(keep) else None,
        }
        for j in range(plan.num_prototypes)
    ]


def _summary(ckpt, cfg: RunConfig, min_per_class: int, plan: PruningPlan, evidence: PruningEvidence,
             classes_before: torch.Tensor, class_names: list[str], metrics: dict, *,
             merge_max_logit_change: float | None, finetune_history: list) -> dict[str, Any]:  # fmt: skip
    """prototype_pruning.json's content."""
    q = cfg.prune_prototypes
    per_class = _per_class(plan, classes_before, class_names)
    empty = [r["class"] for r in per_class if r["after"] == 0 and r["before"] > 0]
    if empty:
        log.warning("prototype pruning removed every prototype of class(es) %s", ", ".join(empty))
    return {
        "source_checkpoint": str(ckpt["path"]),
        "k": q.k,
        "threshold": q.threshold,
        "finetune_iterations": q.finetune_iterations,
        "prototypes_before": plan.num_prototypes,
        "prototypes_after": len(plan.keep),
        "pruned": len(plan.prune),
        "merged": len(plan.merge),
        "min_per_class": min_per_class,
        "spared": sorted(set(evidence.below_threshold) - set(plan.prune)),
        "classes_without_prototypes": empty,
        "merge_max_logit_change": merge_max_logit_change,
        "per_class": per_class,
        "kept_indices": plan.keep,
        "prototypes": _prototype_records(plan, evidence, classes_before, class_names),
        "headline": {stage: {s: _headline(m) for s, m in by_split.items()} for stage, by_split in metrics.items()},
        "metrics": metrics,
        "finetune_history": finetune_history,
    }


def _write(out: Path, model: ProtoPNet, cfg: RunConfig, class_names: list[str], summary: dict[str, Any]) -> None:
    """The pruned checkpoint (its config lists each kept prototype's class) and the reports."""
    from ..train.checkpoint import save_checkpoint

    pruned_cfg = copy.deepcopy(cfg)
    pruned_cfg.protopnet.prototype_classes = [int(c) for c in model.prototype_classes.cpu()]
    if distributed.is_main():  # every rank computed the same; rank 0 writes
        save_checkpoint(
            out / "checkpoints" / "pruned.pt", model, pruned_cfg, class_names,
            stage="prune_prototypes", prototype_pruning={k: v for k, v in summary.items() if k != "metrics"},
        )  # fmt: skip
        table = pd.DataFrame(summary["prototypes"]).drop(columns=["neighbour_classes"])
        atomic_write_text(out / "prototypes.csv", table.to_csv(index=False))
        atomic_write_json(out / "prototype_pruning.json", summary)
        atomic_write_text(out / "prototype_pruning.md", pruning_markdown(summary))
    distributed.barrier()
    summary["out_dir"] = str(out)
    summary["checkpoint"] = str(out / "checkpoints" / "pruned.pt")


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def pruning_markdown(summary: dict[str, Any]) -> str:
    """The human-readable report: counts per class and the metrics at the three stages."""
    lines = [
        "# Prototype pruning",
        "",
        f"Source: `{summary['source_checkpoint']}`  ",
        f"k = {summary['k']} nearest training patches (one per image), threshold = "
        f"{summary['threshold']} own-class patches, last layer fine-tuned for "
        f"{summary['finetune_iterations']} iterations."
        + (
            f" At least {summary['min_per_class']} prototype(s) kept per class "
            f"({len(summary['spared'])} spared)."
            if summary.get("min_per_class")
            else ""
        ),
        "",
        f"Prototypes: {summary['prototypes_before']} -> {summary['prototypes_after']} "
        f"({summary['pruned']} pruned, {summary['merged']} merged duplicates).",
        "",
        "| class | before | pruned | merged | after |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['class']} | {r['before']} | {r['pruned']} | {r['merged']} | {r['after']} |"
        for r in summary["per_class"]
    ]
    if summary["classes_without_prototypes"]:
        lines += [
            "",
            f"**Warning:** no prototypes left for {', '.join(summary['classes_without_prototypes'])}.",
        ]
    lines += [
        "",
        "| stage | split | " + " | ".join(HEADLINE) + " |",
        "|---|---|" + "---:|" * len(HEADLINE),
    ]
    for stage, label in (("before", "before pruning"), ("after_pruning", "after pruning"),
                         ("after_finetuning", "after fine-tuning")):  # fmt: skip
        for split, m in summary["headline"][stage].items():
            lines.append(
                f"| {label} | {split} | " + " | ".join(_fmt(m[k]) for k in HEADLINE) + " |"
            )
    return "\n".join(lines) + "\n"
