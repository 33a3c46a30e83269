"""The iterative filter-pruning schedule of Yeom et al. (2021), on any model.

Score filters on a reference set (N images per class from the training split, explaining the true
class), remove `pr_step` of the ORIGINAL filters, repair, repeat until `total_pr` is removed.
Scores are recomputed on the pruned model before every step. Each step records accuracy and
balanced accuracy right after pruning and after the repair (val and test), parameters, MACs,
FLOPs (= 2 x MACs) and measured CPU latency (batch 1 and 32). `experiments.filter_pruning` runs
it on a checkpoint into a run folder.

Scope ``global`` (default) ranks all filters together, ``layer`` removes the same fraction from
every layer (see `structural`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..config import FilterPruningConfig
from ..data.base import ImageDataset
from ..errors import ConfigError
from ..metrics import HEADLINE
from ..progress import tqdm
from ..protopnet.model import ProtoPNet
from .importance import FilterImportance, build_importance
from .measure import measure_model
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
