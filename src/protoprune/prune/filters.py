"""The iterative filter-pruning experiment of Yeom et al. (2021) on a trained classifier.

From a baseline checkpoint: score filters on a reference set (N images per class from the
training split, explaining the true class), remove `pr_step` of the ORIGINAL filters, fine-tune,
repeat until `total_pr` is removed. Scores are recomputed on the pruned model before every step.
Each step records accuracy and balanced accuracy right after pruning and after fine-tuning (val
and test), parameters, MACs, FLOPs (= 2 x MACs) and measured CPU latency (batch 1 and 32), and
saves the pruned model (weights-only `.pt` + ONNX). Results: results.csv / .md / .json.

Scope ``global`` (default) ranks all filters together, ``layer`` removes the same fraction from
every layer (see `structural`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import distributed
from ..config import FilterPruningConfig, RunConfig, save_config
from ..data.base import ImageDataset
from ..data.loaders import CappedLoader
from ..errors import ConfigError
from ..io import atomic_write_json, atomic_write_text
from ..metrics import HEADLINE
from ..progress import tqdm
from ..protopnet.model import ProtoPNet
from .export import export_onnx
from .importance import FilterImportance, build_importance
from .measure import measure_model
from .relevance import input_bounds, never_pruned
from .structural import FilterPruner, count_filters

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


SCHEDULES = ("reference", "cumulative")


def schedule(
    total_pr: float, pr_step: float, kind: str = "cumulative", n_filters: int | None = None
) -> list[float]:
    """Fractions of the original filters removed after each step.

    ``cumulative`` (default): pr_step, 2 pr_step, ... up to total_pr (0.6 / 0.15: 0.15, 0.3, 0.45,
    0.6); a last step shorter than 1 % of pr_step is float noise in total_pr and dropped (the
    reference's default 0.9001 / 0.05 gives 18 steps to 0.9, not a 19th of 0.0001).
    ``reference``: what the reference's `prune_resnet.py: prune` removes from `n_filters`:
    `int(N * pr_step)` filters a step, for `int(int(N / that) * total_pr)` steps (0.6 / 0.15 on
    4,800 filters: 3 steps of 720, 0.45; 0.9001 / 0.05: 18 steps, 0.9; 0.15 / 0.15: none).
    """
    if kind not in SCHEDULES:
        raise ConfigError(
            f"unknown pruning schedule {kind!r}",
            f"set prune_filters.schedule to one of: {', '.join(SCHEDULES)}",
        )
    if total_pr <= 0:
        return []
    if kind == "cumulative":
        n = max(1, math.ceil(total_pr / pr_step - 0.01))
        return [round(min((k + 1) * pr_step, total_pr), 10) for k in range(n)]
    if not n_filters:
        raise ConfigError("the reference schedule needs the model's filter count", "pass n_filters")
    per_step = int(n_filters * pr_step)
    if per_step < 1:
        raise ConfigError(
            f"pr_step {pr_step} removes no filter of {n_filters} a step",
            "take a larger prune_filters.pr_step",
        )
    steps = int(int(n_filters / per_step) * total_pr)
    if steps == 0:
        raise ConfigError(
            f"the reference schedule runs no step for total_pr {total_pr} and pr_step {pr_step} "
            f"(int(int({n_filters} / {per_step}) * {total_pr}) = 0)",
            "raise prune_filters.total_pr, or set prune_filters.schedule=cumulative",
        )
    return [(k + 1) * per_step / n_filters for k in range(steps)]


def reference_set(
    dataset: ImageDataset, per_class: int, seed: int, batch_size: int = 32
) -> list[Batch]:
    """`per_class` images of each class drawn (seeded) from `dataset`, as preloaded batches."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(len(dataset.class_names)):
        idx = np.flatnonzero(dataset.targets == c)
        if len(idx):
            chosen.extend(rng.choice(idx, size=min(per_class, len(idx)), replace=False).tolist())
    chosen.sort()
    batches = []
    for start in range(0, len(chosen), batch_size):
        items = [dataset[i] for i in chosen[start : start + batch_size]]
        batches.append((torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])))
    return batches


def _metrics(
    evaluate: Callable, model: nn.Module, loaders: Any, device: torch.device, prefix: str
) -> dict:
    out = {}
    for split in ("val", "test"):
        m = evaluate(model, getattr(loaders, split), loaders.class_names, device)
        for key in HEADLINE:
            out[f"{split}_{key}{prefix}"] = m[key]
    return out


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub markdown table (pandas' to_markdown needs the optional tabulate package)."""

    def fmt(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else format(v, floatfmt)
        return str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_results(run_dir: Path, df: pd.DataFrame, meta: dict) -> None:
    atomic_write_text(run_dir / "results.csv", df.to_csv(index=False))
    title = f"# Filter pruning: {meta['method']} ({meta['scope']}), {meta['arch']}\n\n"
    note = "macs: multiply-accumulates per image; flops = 2 x macs; latency: median CPU ms per batch.\n\n"
    atomic_write_text(run_dir / "results.md", title + note + markdown_table(df))
    atomic_write_json(run_dir / "results.json", {**meta, "steps": df.to_dict(orient="records")})


def unwrapped_parameters(model: nn.Module) -> list[tuple[nn.Parameter, int]] | None:
    """A ProtoPNet's prototypes are a bare Parameter used by F.conv2d: torch-pruning is told their
    channel dimension (1, the depth D, which follows the never-pruned add-on)."""
    return [(model.prototype_vectors, 1)] if isinstance(model, ProtoPNet) else None


def _removed(pruner: FilterPruner) -> dict[str, Any]:
    """How much of the network `pruner` has removed so far."""
    return {
        "pruned_ratio": pruner.pruned_fraction(),
        "filters_removed_ratio": pruner.pruned_filter_fraction(),
        "channels_removed_ratio": pruner.pruned_channel_fraction(),
        "filters": pruner.filters(),
        "channels": pruner.channels(),
    }


def _finetuned(finetune: Callable | None, model: nn.Module, row: dict[str, Any],
               evaluate: Callable[[], dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """A step's columns after its repair: what `finetune` reports (an epoch count, or columns such
    as how its validation curve ended) and the metrics after it; without `finetune`, the metrics
    right after the cut are the step's."""
    if finetune is None:
        return {key.replace("_pruned", ""): v for key, v in row.items() if key.endswith("_pruned")}
    ran = finetune(model)
    out = dict(ran) if isinstance(ran, dict) else {"finetune_epochs": ran} if isinstance(ran, int) else {}
    return {**out, **evaluate()}


@dataclasses.dataclass
class ScheduleSettings:
    """What `run_schedule` cuts and how: the cumulative `ratios` of the steps, where
    (`scope`: global | layer; `ignored_layers`, default the classifier head, keep their outputs),
    in what unit and rounding, and whether to time latency and show progress."""

    ratios: Sequence[float]
    image_size: int
    scope: str = "global"
    ignored_layers: Sequence[nn.Module] | None = None
    round_to: int = 1
    ratio_unit: str = "filters"
    latency: bool = True
    progress: bool = True


def run_schedule(
    model: nn.Module,
    importance: FilterImportance,
    loaders: Any,
    reference: Sequence[Batch],
    settings: ScheduleSettings,
    *,
    evaluate: Callable,
    device: torch.device,
    finetune: Callable[[nn.Module], Any] | None = None,
    on_step: Callable[[int, nn.Module, pd.DataFrame], None] | None = None,
    stop: Callable[[dict[str, Any]], str | None] | None = None,
) -> pd.DataFrame:
    """Prune `model` in place through `settings.ratios`, fine-tuning between steps; one table row
    a step.

    `finetune` may return the number of epochs it ran (recorded as `finetune_epochs`) or a mapping
    of such columns. `on_step` sees each step's model and the table so far. `stop` sees each
    finished step's row; a reason it returns ends the schedule after that step (the row records it
    as `stopped`: the step before is the model to keep)."""
    ratios, image_size, scope = settings.ratios, settings.image_size, settings.scope
    ignored_layers, round_to, ratio_unit = settings.ignored_layers, settings.round_to, settings.ratio_unit
    latency, progress = settings.latency, settings.progress
    model.to(device).eval()
    example = torch.zeros(1, 3, image_size, image_size, device=device)
    unwrapped = unwrapped_parameters(model)
    pruner = FilterPruner(model, importance, ratios, example, scope=scope,
                          ignored_layers=ignored_layers, unwrapped_parameters=unwrapped,
                          round_to=round_to, ratio_unit=ratio_unit)  # fmt: skip

    base = {"step": 0, "target_ratio": 0.0, **_removed(pruner)}
    base.update(_metrics(evaluate, model, loaders, device, "_pruned"))
    base.update({k.replace("_pruned", ""): v for k, v in base.items() if k.endswith("_pruned")})
    base.update(measure_model(model, image_size, latency=latency))
    base.update({"score_seconds": 0.0, "finetune_seconds": 0.0})
    rows = [base]
    df = pd.DataFrame(rows)
    if on_step:
        on_step(0, model, df)
    for k, ratio in enumerate(
        tqdm(ratios, desc=f"{importance.name} pruning", disable=not progress), 1
    ):
        t0 = time.perf_counter()
        importance.prepare(model, reference, progress=progress)  # on the CURRENT model
        score_seconds = time.perf_counter() - t0
        pruner.step()
        row: dict[str, Any] = {"step": k, "target_ratio": ratio, **_removed(pruner)}
        row.update(_metrics(evaluate, model, loaders, device, "_pruned"))
        t0 = time.perf_counter()
        row.update(_finetuned(finetune, model, row, lambda: _metrics(evaluate, model, loaders, device, "")))
        row.update(measure_model(model, image_size, latency=latency))
        row.update({"score_seconds": score_seconds, "finetune_seconds": time.perf_counter() - t0})
        reason = stop(row) if stop is not None else None
        if reason:
            row["stopped"] = reason
        rows.append(row)
        df = pd.DataFrame(rows)
        log.info("step %d: %.0f%% of filters removed, test acc %.4f -> %.4f after fine-tuning, MACs %.3g",
                 k, 100 * row["pruned_ratio"], row["test_accuracy_pruned"], row["test_accuracy"],
                 row["macs"])  # fmt: skip
        if on_step:
            on_step(k, model, df)
        if reason:
            log.info("stopped after step %d: %s", k, reason)
            break
    return df


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


def retention_stop(minimum: float | None, measure: str) -> Callable[[dict[str, Any]], str | None] | None:
    """The stopping rule of `prune_filters.min_retention`: a reason once a step's retention
    falls below `minimum` (None: never)."""
    if minimum is None:
        return None

    def stop(row: dict[str, Any]) -> str | None:
        value = row.get(f"retention_{measure}")
        if value is not None and value < minimum:
            return (f"retention {measure} {value:.3f} < {minimum}: keep step {row['step'] - 1} "
                    f"(models/step_{row['step'] - 1:02d}.pt; step 0 is the input checkpoint)")  # fmt: skip
        return None

    return stop


def schedule_units(model: nn.Module, ignored: Sequence[nn.Module], unit: str, image_size: int) -> int:
    """What the reference schedule counts: the model's filters (or group channels, `ratio_unit`)."""
    if unit == "filters":
        return count_filters(model, ignored)
    example = torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device)
    return FilterPruner(model, build_importance(FilterPruningConfig(), "random"), [0.0], example,
                        ignored_layers=ignored, unwrapped_parameters=unwrapped_parameters(model),
                        ).channels()  # fmt: skip


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


def criterion_settings(pf) -> dict[str, Any]:
    """The settings that decide which filters a criterion removes (for results' metadata)."""
    return {
        "ratio_unit": pf.ratio_unit,
        "normalize": pf.normalize,
        "group_reduction": pf.group_reduction,
        "lrp_composite": pf.lrp_composite,
        "lrp_output": pf.lrp_output,
        "weight_fuse_batchnorm": pf.weight_fuse_batchnorm,
        "score_batchnorm": pf.score_batchnorm,
        "lrp_batchnorm": pf.lrp_batchnorm,
        "prune_linear": pf.prune_linear,
    }


def plot_pruning_curves(
    run_dirs: Sequence[str | Path],
    out_path: str | Path,
    metric: str = "test_accuracy",
    title: str | None = None,
) -> Path:
    """Accuracy (or another results column) vs removed-filter ratio, one line per run (criterion)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    for rd in run_dirs:
        rd = Path(rd)
        if not (rd / "results.csv").is_file():
            raise ConfigError(
                f"{rd} holds no results.csv", "give folders written by `protoprune prune-filters`"
            )
        df = pd.read_csv(rd / "results.csv")
        if metric not in df.columns:
            raise ConfigError(
                f"{rd / 'results.csv'} has no column {metric!r}",
                f"choose one of: {', '.join(df.columns)}",
            )
        import json

        meta = (
            json.loads((rd / "results.json").read_text()) if (rd / "results.json").is_file() else {}
        )
        label = f"{meta.get('method', rd.name)} ({meta.get('scope', '?')})"
        ax.plot(df["pruned_ratio"], df[metric], marker="o", label=label)
        if f"{metric}_pruned" in df.columns:  # before fine-tuning, dashed, same colour
            ax.plot(
                df["pruned_ratio"],
                df[f"{metric}_pruned"],
                ls="--",
                color=ax.lines[-1].get_color(),
                alpha=0.6,
            )
    ax.set_xlabel("fraction of filters removed")
    ax.set_ylabel(metric.replace("_", " ") + " (dashed: before fine-tuning)")
    ax.set_title(title or "Filter pruning")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = atomic_save_figure(fig, out_path, dpi=150)
    plt.close(fig)
    return path
