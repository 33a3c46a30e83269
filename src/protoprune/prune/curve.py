"""The pruning curve of Yeom et al. (2021): accuracy vs pruned ratio with no fine-tuning.

For every criterion, score normalisation and reference-set draw, the filters of the trained model
are scored once and removed one-shot at each ratio (a fresh copy of the model each time, so the
ratios are nested cuts of one ranking), then the pruned model is evaluated as it is (optionally
after re-estimating its BatchNorm statistics on training batches). This is where criteria differ
most: fine-tuning repairs most of what any criterion removes, so a comparison after fine-tuning
ranks the fine-tuning budget as much as the criterion.

This module cuts and evaluates; `experiments.pruning_curve` runs it on a checkpoint into a run
folder, `prune.curve_stats` computes on the curves and `report.curves` shows them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..metrics import compute_metrics
from ..names import CRITERION_NAMES
from .importance import CRITERIA
from .measure import count_macs_params
from .relevance import never_pruned, prunable_modules
from .structural import FilterPruner

METRICS = ("accuracy", "balanced_accuracy", "auroc_macro")


def parse_ratios(text: str) -> list[float]:
    """`0.05:0.6:0.05` (start:stop:step, stop included) or `0.05,0.1,0.3`."""
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            if step <= 0:
                raise ValueError
            n = int(np.floor((stop - start) / step + 1e-9)) + 1
            ratios = [round(start + k * step, 10) for k in range(n)]
        else:
            ratios = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(
            f"cannot read pruning ratios {text!r}", "give start:stop:step (e.g. 0.05:0.6:0.05) "
            "or a comma-separated list (e.g. 0.05,0.1,0.3)"
        ) from None
    if not ratios or any(not 0 < r < 1 for r in ratios):
        raise ConfigError(f"pruning ratios {ratios} must lie in (0, 1)", "e.g. 0.05:0.6:0.05")
    return sorted(set(ratios))


@dataclass
class CurveSettings:
    methods: Sequence[str] = CRITERION_NAMES
    ratios: Sequence[float] = tuple(round(0.05 * k, 2) for k in range(1, 13))
    ref_seeds: int = 3
    normalizations: Sequence[str] = ("none",)
    bn_recalibrate: bool = False
    bn_batches: int = 20
    splits: Sequence[str] = ("val", "test")  # evaluated after each cut

    def check(self) -> None:
        if not self.splits or any(s not in ("val", "test") for s in self.splits) or "test" not in self.splits:
            raise ConfigError(f"splits {list(self.splits)} must be test, or val and test (the curve's "
                              "tables report the test split)", "e.g. --splits test")  # fmt: skip
        for m in self.methods:
            CRITERIA.get(m)  # a clear error for an unknown name
        for n in self.normalizations:
            if n not in ("none", "reference", "sum", "l2"):
                raise ConfigError(
                    f"unknown normalisation {n!r}", "use none (default) and/or reference (--norm)"
                )
        if self.ref_seeds < 1 or self.bn_batches < 1:
            raise ConfigError("--ref-seeds and --bn-batches must be >= 1", "e.g. --ref-seeds 3")


def preload(loader) -> tuple[torch.Tensor, torch.Tensor]:
    """A split's images and labels as two tensors: evaluated after every cut, read once."""
    xs, ys = zip(*[(x, y) for x, y in loader])
    return torch.cat(xs), torch.cat(ys)


@torch.inference_mode()
def evaluate_preloaded(model: nn.Module, data, class_names, device, batch: int = 512) -> dict:
    """The metrics of `model` on a `preload`ed split."""
    x, y = data
    model.eval()
    probs = [torch.softmax(model(x[i : i + batch].to(device)).float(), 1).cpu()
             for i in range(0, len(x), batch)]  # fmt: skip
    return compute_metrics(y.numpy(), torch.cat(probs).numpy(), class_names)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches, device) -> None:
    """Re-estimate every BatchNorm's running statistics on `batches` (cumulative average):
    a pruned model's channels no longer have the statistics their BN was fitted to."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for x, _ in batches:
        model(x.to(device))
    for m, mom in zip(norms, saved):
        m.momentum = mom
    model.eval()


def curve_block(model, importance, reference, ratios, evals, class_names, image_size, device,
                ratio_unit="filters", round_to=1, bn_batches=None, prune_linear=False) -> list[dict]:  # fmt: skip
    """One criterion x draw: score `model` once, prune a copy one-shot to each ratio, evaluate."""
    raw = importance.prepare(model, reference)
    example = torch.zeros(1, 3, image_size, image_size, device=device)
    rows = []
    for ratio in ratios:
        m = copy.deepcopy(model)
        importance.bind(m, raw)
        pruner = FilterPruner(m, importance, [ratio], example, round_to=round_to, ratio_unit=ratio_unit,
                              ignored_layers=never_pruned(m, prune_linear=prune_linear))  # fmt: skip
        pruner.step()
        if bn_batches is not None:
            recalibrate_batchnorm(m, bn_batches, device)
        macs, params = count_macs_params(m, image_size, device)
        widths = {n: x.weight.shape[0] for n, x in prunable_modules(m, pruner.ignored_layers).items()}
        row = {"ratio": ratio, "filters_removed_ratio": pruner.pruned_filter_fraction(),
               "channels_removed_ratio": pruner.pruned_channel_fraction(),
               "filters_removed": pruner.initial_filters - pruner.filters(),
               "macs": macs, "params": params, "_widths": widths}  # fmt: skip
        for split, data in evals.items():
            metrics = evaluate_preloaded(m, data, class_names, device)
            row.update({f"{split}_{k}": metrics[k] for k in METRICS})
        rows.append(row)
    return rows
